"""WSGI middleware that serves Turbo Streams beside an existing application.

Requests for the stream path (default ``/turbo-stream``, under the request's
``SCRIPT_NAME``) become WebSocket connections subscribed to the streams the
page was allowed to name; every other request goes to the wrapped
application untouched, with the request bound so that templates can render
:func:`~turbo_gevent.templating.turbo_stream_source` without passing it.

Usage::

    from turbo_gevent import TurboStreams, serve, streams

    app = TurboStreams(legacy_app, secret=os.environ["TURBO_SECRET"])
    # anywhere in the process:
    app.hub.broadcast("messages", streams.append("messages", "<p>hi</p>"))
    serve(app, "0.0.0.0:8000")

A connection is refused, with a complete plain-text HTTP response and before
any 101, when: the handshake is invalid (400/426), the Host is not trusted
(400), the Origin is another site's (403), a stream token is forged, altered,
expired or was issued to another viewer (403), ``authorize`` says no (403),
or a connection limit is reached (503 for the process, 429 for the user).
"""

from __future__ import annotations

import logging
import secrets as _secrets
from typing import Any, Callable, Iterable, Sequence
from urllib.parse import parse_qs

import gevent
from werkzeug.exceptions import SecurityError
from werkzeug.wrappers import Response
from werkzeug.wsgi import ClosingIterator, get_host

from . import context
from .connection import Connection, ConnectionSettings
from .errors import BrokerError, ConfigurationError
from .handler import HANDLER_KEY, printable
from .handshake import Refusal, accept_headers, check_handshake
from .hub import Hub
from .tokens import InvalidToken, StreamSigner

__all__ = ["TurboStreams"]

log = logging.getLogger("turbo_gevent.middleware")

#: The query parameter that carries one signed stream token.
STREAM_PARAM = "stream"
#: More tokens than this in one src is refused: no page needs that many.
MAX_STREAMS = 64
_VIEWER_KEY = "turbo_gevent.viewer"


class TurboStreams:
    """Route the stream path to WebSocket connections; pass the rest to ``app``.

    Arguments:
        app: the WSGI application to wrap.
        hub: the :class:`~turbo_gevent.Hub` to register connections with; a new
            in-process one by default. Available as :attr:`hub`.
        path: the stream path, relative to the request's ``SCRIPT_NAME``.
        secret: key (or list of keys, newest first) that signs stream tokens.
            Without one a random key is made, which only this process knows.

    Who may listen:
        identify: ``identify(environ) -> user id or None``; an identified
            connection also listens to that user's own stream, and tokens are
            bound to the viewer who rendered the page.
        authorize: ``authorize(environ, stream) -> bool``, asked for every
            named stream at connect.
        allowed_origins: origins (``"https://app.example.com"``) allowed
            besides the request's own.
        require_origin: refuse requests with no ``Origin`` header.
        trusted_hosts: Host values accepted (as in Werkzeug); ``None`` for any.
        token_max_age: seconds a stream token stays valid; ``None`` for ever.

    Limits and timeouts (``None`` turns one off, except ``close_timeout``):
        max_connections: open connections for this middleware in this process.
        max_connections_per_user: open connections of one user in this process.
        max_message_size: largest message a client may send, in bytes [64 KiB].
        max_queue: messages waiting for a client before it is dropped [256].
        send_timeout: seconds a client may take nothing before it is dropped [10].
        ping_interval: seconds between keepalive pings [20].
        ping_timeout: seconds a client has to answer a ping [20].
        close_timeout: seconds to wait for a close reply [5].

    Settings that cannot work raise :class:`~turbo_gevent.ConfigurationError`
    (a ``ValueError``); a callable that is not one, ``TypeError``.
    """

    def __init__(
        self,
        app: Callable,
        *,
        hub: Hub | None = None,
        path: str = "/turbo-stream",
        secret: str | bytes | Sequence[str | bytes] | None = None,
        # who may listen
        identify: Callable[[dict], Any] | None = None,
        authorize: Callable[[dict, str], bool] | None = None,
        allowed_origins: Iterable[str] = (),
        require_origin: bool = False,
        trusted_hosts: Iterable[str] | None = None,
        token_max_age: float | None = None,
        # limits
        max_connections: int | None = None,
        max_connections_per_user: int | None = None,
        max_message_size: int | None = 64 * 1024,
        max_queue: int | None = 256,
        # timeouts
        send_timeout: float | None = 10.0,
        ping_interval: float | None = 20.0,
        ping_timeout: float | None = 20.0,
        close_timeout: float = 5.0,
    ) -> None:
        if not callable(app):
            raise TypeError("app must be a WSGI callable")
        if not isinstance(path, str) or not path.startswith("/"):
            raise ConfigurationError(f"path must start with '/', not {path!r}")
        for name, value in (("identify", identify), ("authorize", authorize)):
            if value is not None and not callable(value):
                raise TypeError(f"{name} must be callable or None")
        for name, value in (("max_connections", max_connections), ("max_connections_per_user", max_connections_per_user)):
            if value is not None and (not isinstance(value, int) or value < 1):
                raise ConfigurationError(f"{name} must be a positive int or None, not {value!r}")
        self.app = app
        self.hub = hub if hub is not None else Hub()
        self.path = path
        if secret is None:
            secret = _secrets.token_urlsafe(32)
            log.warning(
                "TurboStreams has no secret: using a random one. Pages rendered by one "
                "process will be refused by every other process (several workers, "
                "hosts or a restart). Pass secret= the same value everywhere."
            )
        self.signer = StreamSigner(secret, max_age=token_max_age)
        self.identify = identify
        self.authorize = authorize
        if isinstance(allowed_origins, str):
            allowed_origins = [allowed_origins]
        self.allowed_origins = frozenset(origin.rstrip("/").lower() for origin in allowed_origins)
        self.require_origin = require_origin
        self.trusted_hosts = list(trusted_hosts) if trusted_hosts is not None else None
        self.max_connections = max_connections
        self.max_connections_per_user = max_connections_per_user
        self.settings = ConnectionSettings(
            max_message_size=max_message_size,
            max_queue=max_queue,
            send_timeout=send_timeout,
            ping_interval=ping_interval,
            ping_timeout=ping_timeout,
            close_timeout=close_timeout,
        )
        self._open = 0

    # -- WSGI ------------------------------------------------------------

    def __call__(self, environ: dict, start_response: Callable) -> Iterable[bytes]:
        environ[context.MIDDLEWARE_KEY] = self
        if environ.get("PATH_INFO") == self.path:
            return self._stream_endpoint(environ, start_response)
        token = context.bind(environ)
        try:
            result = self.app(environ, start_response)
        except SecurityError as exc:
            # A template asked to put an untrusted Host into a src.
            context.unbind(token)
            log.info("refused %s: %s", _peer(environ), printable(str(exc.description)))
            return _plain(400, "untrusted host")(environ, start_response)
        except BaseException:
            context.unbind(token)
            raise
        if isinstance(result, (list, tuple)):  # rendered already: nothing lazy left
            context.unbind(token)
            return result
        return ClosingIterator(result, lambda: context.unbind(token))

    def viewer(self, environ: dict) -> str | None:
        """The user id ``identify`` gives for this request, as a str, or ``None``."""
        if self.identify is None:
            return None
        if _VIEWER_KEY not in environ:
            user = self.identify(environ)
            environ[_VIEWER_KEY] = None if user is None else str(user)
        return environ[_VIEWER_KEY]

    # -- the stream endpoint ---------------------------------------------

    def _stream_endpoint(self, environ: dict, start_response: Callable) -> Iterable[bytes]:
        handler = environ.get(HANDLER_KEY)
        if handler is None and environ.get("wsgi.websocket") is not None:
            return self._no_handler(environ, start_response)  # upgraded by someone else
        try:
            outcome = self._admit(environ)
        except Exception:
            log.exception("checking a stream connection from %s failed", _peer(environ))
            outcome = Refusal(500, "internal error")
        if not isinstance(outcome, Refusal):
            if handler is None:
                return self._no_handler(environ, start_response)
            outcome = self._serve(environ, handler, *outcome)
            if outcome is None:
                return []
        log.info("refused %s from %s: %s", outcome.status, _peer(environ), outcome.reason)
        return _plain(outcome.status, outcome.reason, outcome.headers)(environ, start_response)

    def _admit(self, environ: dict) -> Refusal | tuple[tuple[str, ...], str | None]:
        """Every check, in order; the refusal, or (streams, user id)."""
        refusal = check_handshake(environ)
        if refusal is not None:
            return refusal
        try:
            host = get_host(environ, trusted_hosts=self.trusted_hosts)
        except SecurityError:
            return Refusal(400, "untrusted host")
        refusal = self._check_origin(environ, host)
        if refusal is not None:
            return refusal
        user_id = self.viewer(environ)
        streams = self._verify_tokens(environ, user_id)
        if isinstance(streams, Refusal):
            return streams
        if self.authorize is not None:
            for stream in streams:
                if not self.authorize(environ, stream):
                    return Refusal(403, "not authorized for a requested stream")
        if self.max_connections is not None and self._open >= self.max_connections:
            return Refusal(503, "too many connections, try again later", (("Retry-After", "5"),))
        if (
            self.max_connections_per_user is not None
            and user_id is not None
            and self.hub.user_connection_count(user_id) >= self.max_connections_per_user
        ):
            return Refusal(429, "too many connections for this user")
        return streams, user_id

    def _check_origin(self, environ: dict, host: str) -> Refusal | None:
        origin = environ.get("HTTP_ORIGIN")
        if origin is None:
            return Refusal(403, "Origin header required") if self.require_origin else None
        origin = origin.strip().rstrip("/").lower()
        own = f"{environ.get('wsgi.url_scheme', 'http')}://{host}".lower()
        if origin == own or origin in self.allowed_origins:
            return None
        return Refusal(403, "cross-origin WebSocket refused")

    def _verify_tokens(self, environ: dict, user_id: str | None) -> tuple[str, ...] | Refusal:
        query = parse_qs(environ.get("QUERY_STRING", ""), keep_blank_values=True)
        tokens = query.get(STREAM_PARAM, [])
        if len(tokens) > MAX_STREAMS:
            return Refusal(400, f"at most {MAX_STREAMS} streams per connection")
        streams = []
        for token in tokens:
            try:
                streams.append(self.signer.unsign(token, user_id))
            except InvalidToken as exc:
                return Refusal(403, exc.reason)
        return tuple(dict.fromkeys(streams))

    def _serve(self, environ: dict, handler: Any, streams: tuple[str, ...], user_id: str | None) -> Refusal | None:
        """Register, switch protocols and start reading; a refusal if registering failed."""
        peer = _peer(environ)
        hub = self.hub

        def on_close(connection: Connection, slow: bool) -> None:
            self._open -= 1
            hub.discard(connection, slow=slow)
            log.debug("%s disconnected", peer)

        connection = Connection(
            streams=streams, user_id=user_id, settings=self.settings, on_close=on_close, peer=peer
        )
        # Subscribed before the 101 goes out: a broadcast made as soon as the
        # client sees the handshake complete is delivered.
        try:
            hub.add(connection)
        except BrokerError as exc:  # the broker is down at this process's first connection
            log.warning("cannot register a stream connection: %s", exc)
            return Refusal(503, "message broker unavailable, try again later", (("Retry-After", "5"),))
        self._open += 1
        environ["wsgi.websocket"] = connection
        try:
            leftover = handler.switch_protocols(accept_headers(environ))
        except OSError as exc:
            connection._abort(f"lost during the handshake: {exc}")
            return None
        log.debug("%s connected, streams=%r user=%r", peer, streams, user_id)
        sock = handler.detach_socket()
        if sock is None:  # TLS: read in this request's greenlet
            connection.run(handler.socket, leftover)
        else:  # this request ends now; the connection reads in a greenlet of its own
            gevent.spawn(connection.run, sock, leftover, close=True)
        return None

    def _no_handler(self, environ: dict, start_response: Callable) -> Iterable[bytes]:
        websocket = environ.get("wsgi.websocket")
        log.error(
            "a stream connection reached TurboStreams without turbo_gevent's handler: serve "
            "the app with turbo_gevent.make_server/serve, the turbo-gevent command, or "
            "gunicorn -k turbo_gevent.worker.Worker"
        )
        if websocket is not None:  # another handler already switched protocols
            try:
                websocket.close(1011, b"server misconfigured")
            except Exception:  # noqa: BLE001 - a foreign object; nothing more to do
                pass
            return []
        return _plain(500, "WebSocket upgrades are not available on this server")(environ, start_response)


def _plain(status: int, reason: str, headers: Iterable[tuple[str, str]] = ()) -> Response:
    """A complete plain-text answer that also ends the connection."""
    response = Response(reason + "\n", status=status, mimetype="text/plain")
    for name, value in headers:
        response.headers[name] = value
    # The connection ends after a refusal; a 426 still names the upgrade it
    # needs (RFC 9110 7.8): "Connection: Upgrade, close".
    response.headers["Connection"] = "Upgrade, close" if "Upgrade" in response.headers else "close"
    return response


def _peer(environ: dict) -> str:
    address = environ.get("REMOTE_ADDR") or "-"
    port = environ.get("REMOTE_PORT")
    return f"{address}:{port}" if port else address
