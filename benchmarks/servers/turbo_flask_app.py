"""turbo-flask on flask-sock, as its documentation sets it up, for gunicorn's gevent worker.

Every WebSocket client connects to ``/turbo-stream`` (turbo-flask's route)
and broadcasts are ``turbo.push(fragment)`` to every client. Served with::

    cd benchmarks/servers && gunicorn -k gevent -w 1 --worker-connections 20000 \\
        -b 127.0.0.1:8000 turbo_flask_app:app

(``--worker-connections`` because the default of 1000 would refuse the rest.)
"""

import gevent
from flask import Flask
from turbo_flask import Turbo

from control import Control, raise_nofile, wsgi_control

raise_nofile()

app = Flask(__name__)
turbo = Turbo(app)


def _connections() -> int:
    return sum(len(clients) for clients in turbo.clients.values())


control = Control(turbo.push, _connections)
_flask_app = app.wsgi_app
_control_app = wsgi_control(control, gevent.spawn)


def _dispatch(environ, start_response):
    """The control endpoint beside the Flask app, in the same worker."""
    if environ.get("PATH_INFO", "").startswith("/_bench/"):
        return _control_app(environ, start_response)
    return _flask_app(environ, start_response)


app.wsgi_app = _dispatch
