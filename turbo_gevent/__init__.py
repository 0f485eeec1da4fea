"""Hotwire Turbo Streams for any WSGI application running under gevent.

Wrap the app, serve it under gevent, put one template call in the layout, and
push ``<turbo-stream>`` fragments to every open page::

    from turbo_gevent import TurboStreams, serve, streams

    app = TurboStreams(legacy_app, secret=SECRET)
    app.hub.broadcast("messages", streams.append("messages", "<p>hi</p>"))
    serve(app, "127.0.0.1:8000")
"""

from . import streams
from .errors import BrokerError, ConfigurationError, TurboGeventError
from .hub import Hub
from .middleware import TurboStreams
from .publisher import Publisher
from .redis_broker import RedisBroker
from .server import make_server, serve
from .templating import (
    erb_preprocessor,
    rwf_turbo_stream,
    template_lookup,
    turbo_stream_source,
)

__version__ = "0.1.0"

__all__ = [
    "BrokerError",
    "ConfigurationError",
    "Hub",
    "Publisher",
    "RedisBroker",
    "TurboGeventError",
    "TurboStreams",
    "erb_preprocessor",
    "make_server",
    "rwf_turbo_stream",
    "serve",
    "streams",
    "template_lookup",
    "turbo_stream_source",
]
