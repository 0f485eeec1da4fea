"""Hotwire Turbo Streams for any WSGI application running under gevent.

Wrap the app, serve it under gevent, put one template call in the layout, and
push ``<turbo-stream>`` fragments to every open page::

    from turbo_gevent import TurboStreams, serve, streams

    app = TurboStreams(legacy_app, secret=SECRET)
    app.hub.broadcast("messages", streams.append("messages", "<p>hi</p>"))
    serve(app, "127.0.0.1:8000")
"""

from .errors import BrokerError, ConfigurationError, TurboGeventError
from .hub import Hub
from .middleware import TurboStreams
from .server import make_server, serve

__version__ = "0.1.0"

__all__ = [
    "BrokerError",
    "ConfigurationError",
    "Hub",
    "TurboGeventError",
    "TurboStreams",
    "make_server",
    "serve",
]
