"""Serving under gevent: a WSGI server wired for WebSocket upgrades.

Usage::

    server = make_server(app, "127.0.0.1:0")
    server.start()
    print(server.server_port)
    ...
    server.stop()

or, in the foreground until SIGINT/SIGTERM, closing every WebSocket with
1001 Going Away and waiting up to ``grace`` seconds for the replies::

    serve(app, "0.0.0.0:8000")

The process must be monkey-patched (``gevent.monkey.patch_all()``) before the
application is imported when the application does blocking I/O of its own;
the ``turbo-gevent`` command does that for you.
"""

from __future__ import annotations

import logging
import signal
from contextlib import closing
from typing import Any, Callable

import gevent
from gevent.event import Event
from gevent.pool import Pool
from gevent.pywsgi import WSGIServer

from .connection import close_all, open_connections
from .errors import ConfigurationError
from .handler import WebSocketHandler

__all__ = ["Server", "make_server", "serve", "parse_bind"]

log = logging.getLogger("turbo_gevent.server")


def parse_bind(bind: str) -> tuple[str, int]:
    """``"HOST:PORT"`` (IPv6 as ``"[::1]:8000"``) to a ``(host, port)`` pair."""
    host, sep, port = bind.rpartition(":")
    if not sep or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ValueError(f"bind must look like HOST:PORT, not {bind!r}")
    host = host.strip("[]") or "0.0.0.0"
    return host, int(port)


class Server(WSGIServer):
    """gevent's ``WSGIServer``, quiet and bounded in its TLS handshakes.

    A TLS handshake counts as part of reading the request's head: it gets
    the handler's ``header_timeout``, and a failed one (a silent peer, plain
    HTTP on the TLS port, a client that rejects the certificate) is one log
    line, not a traceback.
    """

    def wrap_socket_and_handle(self, client_socket, address):
        client_socket.settimeout(getattr(self.handler_class, "header_timeout", None))
        try:
            tls_socket = self.wrap_socket(client_socket, **self.ssl_args)
        except OSError as exc:  # ssl.SSLError and timeouts are OSErrors
            log.info("TLS handshake with %s failed: %s", address[0] if address else "-", exc)
            client_socket.close()
            return None
        with closing(tls_socket):
            return self.handle(tls_socket, address)


def make_server(
    app: Callable, bind: str = "127.0.0.1:8000", *, header_timeout: float | None = None, **options: Any
) -> WSGIServer:
    """A gevent ``WSGIServer`` for ``app`` that can upgrade to WebSocket.

    ``options`` go to ``WSGIServer`` (``log``, ``error_log``, ``spawn``,
    ``backlog`` [2048], ``certfile``/``keyfile``...); ``handler_class``
    defaults to :class:`~turbo_gevent.handler.WebSocketHandler`.
    ``header_timeout`` overrides the handler's limit on reading a request's
    head [20 s].
    """
    handler_class = options.setdefault("handler_class", WebSocketHandler)
    if header_timeout is not None:
        if header_timeout <= 0:
            raise ConfigurationError("header_timeout must be a positive number of seconds")
        options["handler_class"] = type(handler_class.__name__, (handler_class,), {"header_timeout": header_timeout})
    # Pages reconnect all at once after a deploy: gevent's default backlog of
    # 50 would refuse most of them. 2048 is gunicorn's default too.
    options.setdefault("backlog", 2048)
    # A pool (unbounded) lets stop(timeout) wait for requests in progress.
    options.setdefault("spawn", Pool())
    return Server(parse_bind(bind), app, **options)


def serve(
    app: Callable,
    bind: str = "127.0.0.1:8000",
    *,
    grace: float = 5.0,
    ready: Callable[[WSGIServer], None] | None = None,
    **options: Any,
) -> None:
    """Serve ``app`` until SIGINT or SIGTERM, then shut down gracefully.

    On the signal the server stops accepting, every WebSocket is sent close
    1001 and given ``grace`` seconds to reply, and the function returns.
    ``ready(server)`` is called once the server listens.
    """
    server = make_server(app, bind, **options)
    server.start()
    stopping = Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        gevent.signal_handler(signum, stopping.set)
    if ready is not None:
        ready(server)
    stopping.wait()
    log.info("shutting down: closing %d connections", len(open_connections()))
    server.close()  # stop accepting; requests in progress go on
    left = close_all(grace=grace)
    if left:
        log.info("%d connections did not answer the close in %gs", left, grace)
    server.stop(timeout=grace)
