"""One accepted WebSocket: a reader, a bounded queue and a single writer.

The framing itself (masking, fragmentation, close codes, size limits decided
from the frame header) is delegated to the sans-I/O protocol of the
``websockets`` package, which leaves decoding text to its caller: this module
checks that text messages are UTF-8 (across fragments too) and otherwise only
moves bytes, under gevent:

* **Reading** happens in the greenlet that accepted the connection. Incoming
  bytes go to the protocol; what it wants to send back (pongs, close frames)
  goes out through the writer like everything else.
* **Writing** has one owner per socket. While nothing is pending, a frame is
  written at once, without blocking, by whoever sends it; the rest of a frame
  the kernel would not take, and every frame after it, waits in a bounded
  queue drained by a writer greenlet, spawned only while there is a backlog.
  Frames therefore never interleave, and a broadcast never waits on a client.
* **Dropping** a peer that does not read (queue full, or no progress within
  ``send_timeout``) or does not answer pings: a 1008 close frame if it can be
  written whole at once, then the socket is reset without waiting.

Every connection of the process is listed in one registry, so that one
keepalive greenlet pings them all and a shutdown can close them all with 1001.
"""

from __future__ import annotations

import codecs
import logging
import os
import socket
import ssl
import struct
import time
from collections import deque
from dataclasses import dataclass
from typing import Callable

import gevent
from gevent.event import Event
from gevent.ssl import SSLSocket as _GeventSSLSocket
from websockets.frames import Close, CloseCode, Frame, Opcode
from websockets.protocol import Protocol, Side

from .errors import ConfigurationError
from .hub import encode_text_frame

__all__ = ["Connection", "ConnectionSettings", "close_all", "open_connections"]

log = logging.getLogger("turbo_gevent.connection")


class _ProtocolLog(logging.LoggerAdapter):
    """websockets' protocol logger, with its INFO lines demoted to DEBUG.

    The protocol says "connection closed" at INFO without naming the peer;
    this module's own line about the same event names it.
    """

    def info(self, msg, *args, **kwargs) -> None:
        self.debug(msg, *args, **kwargs)


_protocol_log = _ProtocolLog(logging.getLogger("turbo_gevent.protocol"), {})

_CONTROL_OPCODES = frozenset((0x8, 0x9, 0xA))
_CLOSE, _PONG = 0x8, 0xA
_MAX_PINGS_PER_SECOND = 100
_TLS_SOCKETS = (ssl.SSLSocket, _GeventSSLSocket)


def is_tls(sock: socket.socket) -> bool:
    """Whether ``sock`` speaks TLS: its send() may wait, and it cannot be handed over."""
    return isinstance(sock, _TLS_SOCKETS)
_PING_FRAME = Frame(Opcode.PING, b"turbo_gevent").serialize(mask=False)
_RECV_SIZE = 65536
_SO_LINGER_RESET = struct.pack("ii", 1, 0)
_Utf8Decoder = codecs.getincrementaldecoder("utf-8")


class _SendTimeout(Exception):
    """Raised in the writer when the peer took nothing for ``send_timeout``."""


@dataclass(frozen=True)
class ConnectionSettings:
    """Limits and timeouts shared by every connection of one middleware.

    ``None`` turns a limit or a timeout off.
    """

    # limits
    max_message_size: int | None = 64 * 1024
    max_queue: int | None = 256
    # timeouts, in seconds
    send_timeout: float | None = 10.0
    ping_interval: float | None = 20.0
    ping_timeout: float | None = 20.0
    close_timeout: float = 5.0

    def __post_init__(self) -> None:
        for name in ("max_message_size", "max_queue"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, int) or value < 1):
                raise ConfigurationError(f"{name} must be a positive int or None, not {value!r}")
        for name in ("send_timeout", "ping_interval", "ping_timeout", "close_timeout"):
            value = getattr(self, name)
            if value is None and name != "close_timeout":
                continue
            if not isinstance(value, (int, float)) or value <= 0:
                raise ConfigurationError(f"{name} must be a positive number of seconds, not {value!r}")


class Connection:
    """A WebSocket connection after the handshake, subscribed to streams.

    Arguments:
        sock: the connected gevent socket (after the 101 was written).
        streams: stream names this connection listens to.
        user_id: the identified user, or ``None``.
        settings: shared :class:`ConnectionSettings`.
        on_close: called once as ``on_close(connection, slow)`` when the
            connection ends; ``slow`` is true when it was dropped for not
            reading fast enough.
        peer: the peer's address, for log lines.

    It also answers the ``wsgi.websocket`` environ contract as far as a
    broadcast-only endpoint needs: :meth:`send` a text message, :meth:`close`,
    :attr:`closed`.
    """

    __slots__ = (
        "sock", "streams", "user_id", "settings", "peer", "_on_close", "_protocol_",
        "_queue", "_queued_data", "_pending", "_writer", "_closing", "_closed", "_ending",
        "_ping_sent_at", "_ping_due", "_utf8", "_ended", "_ended_event", "_direct",
        "_pings", "_pings_since", "__weakref__",
    )

    def __init__(
        self,
        sock: socket.socket | None = None,
        *,
        streams: tuple[str, ...] = (),
        user_id: str | None = None,
        settings: ConnectionSettings,
        on_close: Callable[["Connection", bool], None] | None = None,
        peer: str = "-",
    ) -> None:
        self.sock = sock
        self.streams = tuple(streams)
        self.user_id = user_id
        self.settings = settings
        self.peer = peer
        self._on_close = on_close
        # Most connections only ever receive: the protocol, the queue and the
        # event below are made when first needed, to keep idle ones small.
        self._protocol_: Protocol | None = None
        self._queue: deque[bytes] | None = None  # whole frames waiting behind _pending
        self._queued_data = 0
        self._pending: memoryview | None = None  # the unsent rest of one frame
        self._writer: gevent.Greenlet | None = None
        self._closing = False  # a close frame is out or queued: no more data frames
        self._closed = False  # the socket is shut: nothing more is written
        self._ending = False  # all that is queued is written, then the socket is shut
        self._ping_sent_at: float | None = None  # while a pong is awaited
        self._ping_due = time.monotonic() + (settings.ping_interval or 0.0)
        self._utf8: codecs.IncrementalDecoder | None = None  # while a text message is incomplete
        self._ended = False
        self._ended_event: Event | None = None
        # Whether a frame may be written at once by whoever sends it: not
        # before the socket is known, and never on TLS, whose send() would
        # wait for the peer (there the writer greenlet writes everything).
        self._direct = False
        self._pings = 0  # pings received since _pings_since, to bound a flood
        self._pings_since = 0.0

    @property
    def _protocol(self) -> Protocol:
        if self._protocol_ is None:
            self._protocol_ = Protocol(Side.SERVER, max_size=self.settings.max_message_size, logger=_protocol_log)
        return self._protocol_

    def __repr__(self) -> str:
        return f"<Connection {self.peer} streams={len(self.streams)} user={self.user_id!r}>"

    # -- the wsgi.websocket contract -------------------------------------

    @property
    def closed(self) -> bool:
        """True once the closing handshake has started: nothing more is sent."""
        return self._closing

    def send(self, message: str) -> None:
        """Send one text message to this connection only."""
        self.send_frame(encode_text_frame(message))

    def close(self, code: int = CloseCode.NORMAL_CLOSURE, reason: str = "") -> None:
        """Start the closing handshake; the peer's reply ends the connection.

        A peer that does not reply within ``close_timeout`` is cut off.
        """
        self._start_closing(code, reason, logging.INFO)

    def _start_closing(self, code: int, reason: str, abort_level: int) -> None:
        if self._closing:
            return
        self._protocol.send_close(code, reason)
        self._flush_protocol()
        gevent.spawn_later(self.settings.close_timeout, self._abort, "no close reply", abort_level)

    def wait_closed(self, timeout: float | None = None) -> bool:
        """Block until the connection has ended; returns whether it has."""
        if self._ended:
            return True
        if self._ended_event is None:
            self._ended_event = Event()
        return self._ended_event.wait(timeout)

    # -- sending ---------------------------------------------------------

    def send_frame(self, frame: bytes) -> None:
        """Write or queue one encoded data frame; never blocks.

        This is the fan-out's hot path. Data frames count toward
        ``max_queue``; a connection whose queue is full is dropped as too
        slow. Data frames after a close frame are dropped (RFC 6455 5.5.1).
        """
        if self._closing:
            return
        if self._direct and self._pending is None and not self._queue:
            self._write_now(frame)
            return
        limit = self.settings.max_queue
        if limit is not None and self._queued_data >= limit:
            self.drop(f"queue of {limit} messages full")
            return
        self._queued_data += 1
        self._enqueue(frame)

    def _send_control(self, frame: bytes) -> None:
        """Write or queue a ping, a pong or a close; these do not count toward ``max_queue``.

        A pong still waiting is replaced by a newer one (RFC 6455 5.5.3).
        """
        if self._closed or self._ending:
            return
        opcode = frame[0] & 0x0F
        if opcode == _CLOSE:
            self._closing = True
        if self._direct and self._pending is None and not self._queue:
            self._write_now(frame)
        elif opcode == _CLOSE:
            self._enqueue(frame)  # after the data already queued
        elif self._queue and (self._queue[0][0] & 0x0F) == opcode:
            self._queue[0] = frame  # a newer pong (or ping) replaces one not yet sent
        else:
            # Pings and pongs go ahead of queued data (between whole frames):
            # a peer that reads slowly is not taken for one that does not answer.
            if self._queue is None:
                self._queue = deque()
            self._queue.appendleft(frame)
            self._start_writer()

    def _write_now(self, frame: bytes) -> None:
        """Write without blocking; what the kernel does not take becomes the backlog."""
        try:
            # gevent's socket wraps a non-blocking OS socket: a send on that
            # one is exactly the attempt wanted here, without gevent's
            # timeout handling on the fan-out's hot path.
            sent = self.sock._sock.send(frame)
        except BlockingIOError:
            sent = 0
        except OSError as exc:
            self._abort(f"send failed: {exc}")
            return
        if sent < len(frame):
            self._pending = memoryview(frame)[sent:]
            self._start_writer()

    def _enqueue(self, frame: bytes) -> None:
        if self._queue is None:
            self._queue = deque()
        self._queue.append(frame)
        self._start_writer()

    def _start_writer(self) -> None:
        if self._writer is None and self.sock is not None:
            self._writer = gevent.spawn(self._write_backlog)

    def _write_backlog(self) -> None:
        """Drain the backlog; the only code that writes while one exists."""
        timeout = self.settings.send_timeout
        try:
            while not self._closed:
                if self._pending is None:
                    if not self._queue:
                        break
                    frame = self._queue.popleft()
                    if (frame[0] & 0x0F) not in _CONTROL_OPCODES:
                        self._queued_data -= 1
                    self._pending = memoryview(frame)
                with gevent.Timeout(timeout, _SendTimeout):
                    sent = self.sock.send(self._pending)
                self._pending = self._pending[sent:] if sent < len(self._pending) else None
        except _SendTimeout:
            self._writer = None
            self.drop(f"peer took nothing for {timeout:g}s")
            return
        except OSError as exc:
            self._writer = None
            self._abort(f"send failed: {exc}")
            return
        self._writer = None
        if self._ending and not self._closed:
            self._shut()

    def drop(self, why: str, code: int = CloseCode.POLICY_VIOLATION) -> None:
        """Drop a peer that is too slow: a close frame if it fits at once, then reset."""
        if self._closed:
            return
        self._closing = True
        if self._direct and self._pending is None:
            try:
                self.sock._sock.send(Frame(Opcode.CLOSE, Close(code, "too slow").serialize()).serialize(mask=False))
            except OSError:
                pass
        log.info("dropping %s: %s", self.peer, why)
        self._reset(slow=True)

    # -- keepalive -------------------------------------------------------

    def keepalive(self, now: float) -> None:
        """Ping when due; drop a peer whose pong is overdue."""
        settings = self.settings
        if self.closed or settings.ping_interval is None:
            return
        if self._ping_sent_at is not None:
            if settings.ping_timeout is not None and now - self._ping_sent_at >= settings.ping_timeout:
                self._close_now(CloseCode.POLICY_VIOLATION, "no pong", f"no pong within {settings.ping_timeout:g}s")
            return
        if now < self._ping_due:
            return
        self._ping_sent_at = now
        self._ping_due = now + settings.ping_interval
        self._send_control(_PING_FRAME)

    # -- reading ---------------------------------------------------------

    def run(self, sock: socket.socket | None = None, initial: bytes = b"", *, close: bool = False) -> None:
        """Read until the connection ends.

        ``sock`` is the socket once the 101 is out (until then, frames wait
        in the queue); ``initial`` the bytes already read past the
        handshake; ``close=True`` when this connection owns the socket.
        """
        if sock is not None:
            self.sock = sock
            self._direct = hasattr(sock, "_sock") and not is_tls(sock)
            if self._queue:
                self._start_writer()
        _registry.add(self)
        try:
            if initial:
                self._receive(initial)
            while not self._closed:
                data = self.sock.recv(_RECV_SIZE)
                if not data:
                    if self._closed:
                        pass  # we ended it
                    elif not self._closing:  # no closing handshake
                        log.info("connection with %s lost: closed without a close frame", self.peer)
                    else:
                        log.debug("%s closed the TCP connection", self.peer)
                    break
                self._receive(data)
                # recv() returns at once while data is waiting: give the
                # others their turn, or a flooding peer would starve them.
                gevent.sleep(0)
        except OSError as exc:
            if not self._closed:
                log.info("connection with %s lost: %s", self.peer, exc)
        finally:
            self._reset(slow=False)
            if close:
                self.sock.close()

    def _receive(self, data: bytes) -> None:
        protocol = self._protocol
        protocol.receive_data(data)
        for event in protocol.events_received():
            if event.opcode is Opcode.TEXT or event.opcode is Opcode.CONT:
                if not self._valid_text(event):
                    break
            elif event.opcode is Opcode.PONG:
                self._ping_sent_at = None
            elif event.opcode is Opcode.PING and self._too_many_pings():
                break
            elif event.opcode is Opcode.CLOSE:
                log.debug("%s sent close %s", self.peer, protocol.close_rcvd)
        if protocol.parser_exc is not None and not self._ending:
            log.info("closing %s: %s", self.peer, protocol.parser_exc)
        self._flush_protocol()

    def _too_many_pings(self) -> bool:
        """Close with 1008 a peer pinging more than ``_MAX_PINGS_PER_SECOND``."""
        now = time.monotonic()
        if now - self._pings_since >= 1.0:
            self._pings_since, self._pings = now, 0
        self._pings += 1
        if self._pings <= _MAX_PINGS_PER_SECOND or self._closing:
            return False
        log.info("closing %s: more than %d pings a second", self.peer, _MAX_PINGS_PER_SECOND)
        self._protocol.fail(CloseCode.POLICY_VIOLATION, "too many pings")
        return True

    def _valid_text(self, frame: Frame) -> bool:
        """Check a text frame or continuation for UTF-8; fail with 1007 if it is not.

        The protocol has already checked the frame order, so a continuation
        belongs to a text message exactly when a decoder is running.
        """
        if frame.opcode is Opcode.TEXT:
            self._utf8 = _Utf8Decoder()
        decoder = self._utf8
        if decoder is None:  # a continuation of a binary message
            return True
        if frame.fin:
            self._utf8 = None
        try:
            decoder.decode(frame.data, frame.fin)
        except UnicodeDecodeError:
            self._utf8 = None
            if not self._closing:
                log.info("closing %s: invalid UTF-8 in a text message", self.peer)
                self._protocol.fail(CloseCode.INVALID_DATA, "invalid UTF-8 in a text message")
            return False
        return True

    def _flush_protocol(self) -> None:
        for data in self._protocol.data_to_send():
            if data:
                self._send_control(data)
            else:
                self._end()

    # -- ending ----------------------------------------------------------

    def _close_now(self, code: int, reason: str, why: str) -> None:
        log.info("closing %s: %s", self.peer, why)
        # that line tells the story: cutting off a silent peer later is a detail
        self._start_closing(code, reason, logging.DEBUG)

    def _end(self) -> None:
        """Write what is queued, then shut the socket (the server closes TCP first)."""
        self._ending = True
        if self._writer is None and self._pending is None and not self._queue:
            self._shut()

    def _shut(self) -> None:
        self._closing = self._closed = True
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass

    def _abort(self, why: str, level: int = logging.INFO) -> None:
        if self._closed:
            return
        log.log(level, "connection with %s ended: %s", self.peer, why)
        self._reset(slow=False)

    def _reset(self, *, slow: bool) -> None:
        """Stop everything now: no more writes, the socket reset, callbacks run once."""
        first = not self._ended
        self._closing = True
        if not self._closed:
            self._closed = True
            try:
                if self.sock is not None:
                    self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _SO_LINGER_RESET)
                    self.sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        self._queue = None
        self._queued_data = 0
        self._pending = None
        writer, self._writer = self._writer, None
        if writer is not None and writer is not gevent.getcurrent():
            writer.kill(block=False)
        if first:
            _registry.discard(self)
            self._ended = True
            if self._ended_event is not None:
                self._ended_event.set()
            if self._on_close is not None:
                try:
                    self._on_close(self, slow)
                except Exception:
                    log.exception("on_close callback failed for %s", self.peer)


class _Registry:
    """Every open connection of this process, and the one keepalive greenlet.

    Kept per process (not per middleware) so that a shutdown finds every
    connection and one timer serves them all, whatever number of apps.
    """

    def __init__(self) -> None:
        self.connections: set[Connection] = set()
        self._keepalive: gevent.Greenlet | None = None
        self._pid = os.getpid()

    def add(self, connection: Connection) -> None:
        if self._pid != os.getpid():  # forked: the parent's state is not ours
            self.__init__()
        self.connections.add(connection)
        if self._keepalive is None and connection.settings.ping_interval is not None:
            self._keepalive = gevent.spawn(self._keepalive_loop)

    def discard(self, connection: Connection) -> None:
        self.connections.discard(connection)

    def _keepalive_loop(self) -> None:
        while self.connections:
            tick = min(
                min(c.settings.ping_interval or 60.0, c.settings.ping_timeout or 60.0)
                for c in tuple(self.connections)
            ) / 4
            gevent.sleep(max(tick, 0.01))
            now = time.monotonic()
            for connection in tuple(self.connections):
                connection.keepalive(now)
        self._keepalive = None


_registry = _Registry()


def open_connections() -> tuple[Connection, ...]:
    """The open connections of this process."""
    return tuple(_registry.connections)


def close_all(code: int = CloseCode.GOING_AWAY, reason: str = "server shutting down", *, grace: float = 5.0) -> int:
    """Send every open connection a close frame and wait for the replies.

    Returns how many were still open after ``grace`` seconds (and were then
    cut off). Used on shutdown with 1001 Going Away.
    """
    connections = open_connections()
    for connection in connections:
        connection.close(code, reason)
    deadline = time.monotonic() + grace
    for connection in connections:
        connection.wait_closed(max(0.0, deadline - time.monotonic()))
    left = [c for c in connections if not c.wait_closed(0)]
    for connection in left:
        connection._abort("no close reply before shutdown")
    return len(left)
