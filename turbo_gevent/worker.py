"""A gunicorn worker: gevent, WebSocket upgrades, access log, graceful close.

    gunicorn -k turbo_gevent.worker.Worker -w 4 --bind 0.0.0.0:8000 myapp:app

It is gevent-websocket's gunicorn worker with turbo_gevent's handler, which
keeps gunicorn's access log (gevent-websocket's worker loses it), and on a
graceful shutdown (SIGTERM, or a reload) sends close 1001 Going Away to every
client, within ``--graceful-timeout``, so pages know the server went away
instead of seeing the socket cut.
"""

from __future__ import annotations

import logging

import gevent
from geventwebsocket.gunicorn.workers import GeventWebSocketWorker
from gunicorn.workers.ggevent import PyWSGIHandler

from .connection import close_all
from .handler import WebSocketHandler, printable, redact_tokens

__all__ = ["Worker", "GunicornWebSocketHandler"]


class GunicornWebSocketHandler(WebSocketHandler, PyWSGIHandler):
    """turbo_gevent's handler, logging to gunicorn's access log."""

    def log_request(self) -> None:
        environ = self.environ
        self.environ = {
            **environ,
            "RAW_URI": printable(redact_tokens(environ.get("RAW_URI", ""))),
            "QUERY_STRING": printable(redact_tokens(environ.get("QUERY_STRING", ""))),
        }
        try:
            PyWSGIHandler.log_request(self)
        finally:
            self.environ = environ


class Worker(GeventWebSocketWorker):
    """``gunicorn -k turbo_gevent.worker.Worker``."""

    wsgi_handler = GunicornWebSocketHandler

    _closing: gevent.Greenlet | None = None

    def init_process(self) -> None:
        # Unless the application set up logging itself, turbo_gevent's lines
        # go where gunicorn's error log goes, at its --log-level, formatted alike.
        ours = logging.getLogger("turbo_gevent")
        if not ours.handlers and not logging.getLogger().handlers:
            error_log = self.log.error_log
            for handler in error_log.handlers:
                ours.addHandler(handler)
            ours.setLevel(error_log.level)
            ours.propagate = False
        super().init_process()

    def handle_exit(self, sig, frame) -> None:
        super().handle_exit(sig, frame)
        grace = max(0.5, self.cfg.graceful_timeout - 1.0)
        self._closing = gevent.spawn(close_all, grace=grace)

    def run(self) -> None:
        super().run()
        # WebSockets are not requests in gunicorn's pool (their request ended
        # with the 101): wait here for their close replies, within the grace.
        if self._closing is not None:
            self._closing.join(timeout=self.cfg.graceful_timeout)
