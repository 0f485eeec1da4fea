"""The gevent-websocket handler, with the upgrade left to the application.

gevent-websocket's own ``WebSocketHandler`` answers the handshake itself,
before the application runs, so the application cannot refuse a connection
(and its refusals crash mid-response). This subclass keeps its name and place
(``handler_class`` of a gevent server, the gunicorn worker's handler) but
passes every request to the application untouched, with itself in the
environ under :data:`HANDLER_KEY`. :class:`~turbo_gevent.TurboStreams` checks
the request and only then calls :meth:`WebSocketHandler.switch_protocols`.
"""

from __future__ import annotations

import http.client
import logging
import re
import socket
import ssl

import gevent.socket
from gevent.pywsgi import WSGIHandler
from geventwebsocket.handler import WebSocketHandler as _GeventWebSocketHandler
from werkzeug.http import parse_list_header

from .connection import is_tls

__all__ = ["WebSocketHandler", "HANDLER_KEY"]

log = logging.getLogger("turbo_gevent.handler")

#: environ key under which the handler offers :meth:`switch_protocols`.
HANDLER_KEY = "turbo_gevent.handler"

_TOKEN_VALUE = re.compile(r"(?<=\bstream=)[^&\s\"]+")


def _address(address) -> str:
    return f"{address[0]}:{address[1]}" if isinstance(address, tuple) else str(address or "-")


_CONTROL_CHARACTERS = re.compile(r"[\x00-\x1f\x7f-\x9f]")
_BAD_REQUEST = b"HTTP/1.1 400 Bad Request\r\nConnection: close\r\nContent-Type: text/plain\r\nContent-Length: 12\r\n\r\nbad request\n"


def printable(text: str) -> str:
    """Escape control characters (terminal escapes, newlines) from a peer before logging."""
    return _CONTROL_CHARACTERS.sub(lambda match: f"\\x{ord(match.group()):02x}", text)


def redact_tokens(text: str) -> str:
    """Hide stream tokens (bearer credentials) from a logged URL or request line."""
    return _TOKEN_VALUE.sub("[redacted]", text)


class WebSocketHandler(_GeventWebSocketHandler):
    """A pywsgi handler that lets the application decide on an upgrade.

    ``header_timeout`` (seconds, ``None`` for none) bounds how long a client
    may take to send a request's line and headers, and how long a kept-alive
    connection may sit idle before its next request: a peer that connects
    and says nothing would otherwise hold its greenlet and socket forever.
    """

    header_timeout: float | None = 20.0

    def handle_one_request(self):
        if self.socket is not None:
            self.socket.settimeout(self.header_timeout)
        return super().handle_one_request()

    def _handle_client_error(self, ex):
        # One log line, not the traceback pywsgi prints for these: a peer
        # that went silent or away while sending its request head, or one
        # whose head the email parser refuses (more than 100 headers...).
        if isinstance(ex, (TimeoutError, ConnectionError)):
            log.info("request from %s not read: %s", _address(self.client_address), ex)
            return None
        if isinstance(ex, http.client.HTTPException):
            log.info("bad request from %s: %s", _address(self.client_address), type(ex).__name__)
            return ("400", _BAD_REQUEST)
        return super()._handle_client_error(ex)

    def log_error(self, msg, *args) -> None:
        try:
            message = msg % args if args else msg
        except (TypeError, ValueError):
            message = msg
        super().log_error("%s", printable(redact_tokens(str(message))))

    # gevent-websocket logs through its own logger and hides upgrades; log
    # every request, 101s included, to the server's access log as pywsgi does.
    log_request = WSGIHandler.log_request

    def format_request(self) -> str:
        return printable(redact_tokens(super().format_request()))

    def start_response(self, status, headers, exc_info=None):
        # pywsgi ends the connection only for "Connection: close" exactly; a
        # refusal that also names an upgrade says "Connection: Upgrade, close".
        for name, value in headers:
            if name.lower() == "connection" and "close" in parse_list_header(value.lower()):
                self.close_connection = True
        return super().start_response(status, headers, exc_info)

    def run_application(self) -> None:
        self.socket.settimeout(None)  # the head is read; the application sets its own pace
        self.environ[HANDLER_KEY] = self
        self.switched = False
        # Skip gevent-websocket's eager handshake: plain WSGI for every request.
        WSGIHandler.run_application(self)
        if not self.switched:
            # What follows (reading a body the application left unread, the
            # next request) is bounded again: a body announced and never
            # sent must not hold the connection forever.
            self.socket.settimeout(self.header_timeout)

    def switch_protocols(self, headers: list[tuple[str, str]]) -> bytes:
        """Write the 101 response; returns the bytes already read past the request.

        After this the connection belongs to the caller: no HTTP response
        follows and the connection is not reused for another request.
        """
        self.start_response("101 Switching Protocols", headers)
        self.write(b"")
        self.close_connection = True
        self.switched = True
        # No request body to read past the handshake (the handshake refuses
        # one): the bytes that follow are WebSocket frames.
        self.wsgi_input.content_length = 0
        self.wsgi_input.chunked_input = False
        # Bytes the client sent right behind its request sit in our read
        # buffer; take them without blocking.
        self.socket.settimeout(0.0)
        try:
            buffered = self.rfile.peek(0)
            leftover = self.rfile.read(len(buffered)) if buffered else b""
        except ssl.SSLWantReadError:  # TLS: nothing decrypted is waiting
            leftover = b""
        finally:
            self.socket.settimeout(None)
        # The read buffer (8 KiB) is not needed any more: the connection reads
        # the socket directly. Closing it leaves the socket open.
        self.rfile.close()
        return leftover

    def detach_socket(self) -> socket.socket | None:
        """Hand the upgraded socket over to the caller, or ``None`` if it cannot leave.

        A WebSocket then needs neither this handler nor its greenlet, whose
        saved stack, environ and headers would otherwise be kept for the
        whole life of the connection: handing the socket over (the same file
        descriptor, no dup) lets the request finish, be logged, and free
        them. A TLS socket cannot be handed over this way: its connection is
        served in this greenlet instead.
        """
        sock = self.socket
        if is_tls(sock):
            return None
        family, kind, proto = sock.family, sock.type, sock.proto
        return gevent.socket.socket(family, kind, proto, fileno=sock.detach())
