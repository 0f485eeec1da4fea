"""The in-process hub: who listens to what, and one fan-out per broadcast.

A :class:`Hub` keeps, for every stream, the connections subscribed to it and,
for every identified user, that user's open connections. A broadcast joins its
fragments into one message, encodes the WebSocket frame **once**, and hands the
same bytes to every recipient. Handing over never blocks: each connection owns
a bounded queue and a single writer (see :mod:`turbo_gevent.connection`), so a
client that stops reading is dropped on its own and never delays the others.

Usage::

    hub = Hub()
    middleware = TurboStreams(app, hub=hub)
    hub.broadcast("messages", streams.append("messages", "<p>hi</p>"))

With ``Hub(broker=RedisBroker(url))`` every broadcast travels through the
broker and each process delivers what it receives to its own connections.
The hub itself does no network I/O; it is plain bookkeeping.
"""

from __future__ import annotations

import logging
import os
from typing import Any, Iterable, Protocol

from websockets.frames import Frame, Opcode

__all__ = ["Broadcasting", "Hub", "Subscriber", "join_fragments", "encode_text_frame"]

log = logging.getLogger("turbo_gevent.hub")

#: Message kinds, as they travel through a broker.
STREAM, ALL, USER = "stream", "all", "user"


class Subscriber(Protocol):
    """What the hub needs of a connection."""

    streams: tuple[str, ...]
    user_id: str | None

    def send_frame(self, frame: bytes) -> None:
        """Queue an encoded data frame without blocking."""


def join_fragments(fragments: Iterable[Any]) -> str:
    """Join Turbo Stream fragments with nothing between them.

    Turbo leaves any text between ``<turbo-stream>`` elements in the
    document, so no separator is allowed. Each fragment is HTML: a ``str`` or
    anything with ``__html__`` (``markupsafe.Markup``, a builder's result).
    """
    parts = []
    for fragment in fragments:
        if isinstance(fragment, str):
            parts.append(fragment)
        elif hasattr(fragment, "__html__"):
            parts.append(str(fragment.__html__()))
        else:
            raise TypeError(
                f"a fragment must be str or have __html__, not {type(fragment).__name__}"
            )
    if not parts:
        raise ValueError("nothing to broadcast: give at least one fragment")
    message = "".join(parts)
    try:
        message.encode("utf-8")  # a lone surrogate fails here, recipients or not
    except UnicodeEncodeError as exc:
        raise ValueError(f"a fragment is not valid text: {exc.reason} at position {exc.start}") from None
    return message


def encode_text_frame(message: str) -> bytes:
    """Encode one unmasked text frame, as a server sends it (RFC 6455 5.2)."""
    return Frame(Opcode.TEXT, message.encode("utf-8")).serialize(mask=False)


class Broadcasting:
    """The three broadcast methods, shared by :class:`Hub` and ``Publisher``.

    A subclass implements ``_publish(kind, key, message)``.
    """

    def broadcast(self, stream: str, *fragments: Any) -> None:
        """Send fragments, as one message, to every connection on ``stream``."""
        if not isinstance(stream, str) or not stream:
            raise ValueError("stream must be a non-empty str")
        self._publish(STREAM, stream, join_fragments(fragments))

    def broadcast_all(self, *fragments: Any) -> None:
        """Send fragments, as one message, to every connection."""
        self._publish(ALL, None, join_fragments(fragments))

    def broadcast_to_user(self, user_id: Any, *fragments: Any) -> None:
        """Send fragments to every open page of one user; none open is fine."""
        if user_id is None:
            raise ValueError("user_id must not be None")
        self._publish(USER, str(user_id), join_fragments(fragments))

    def _publish(self, kind: str, key: str | None, message: str) -> None:
        raise NotImplementedError


class Hub(Broadcasting):
    """Broadcast Turbo Stream fragments to the connections that listen.

    Arguments:
        broker: optional broker (for example :class:`turbo_gevent.RedisBroker`)
            that carries every broadcast to every process. Without one,
            broadcasts reach the connections of this process only.
        refresh_on_reconnect: when the broker reconnects after an outage,
            send every connected page a ``<turbo-stream action="refresh">``,
            because messages may have been missed meanwhile.

    Every method is callable from any greenlet and returns without waiting on
    any client. With a broker, the broadcast methods raise
    :class:`~turbo_gevent.BrokerError` when the broker cannot take the message.
    """

    def __init__(self, *, broker: Any = None, refresh_on_reconnect: bool = True) -> None:
        self.broker = broker
        self.refresh_on_reconnect = refresh_on_reconnect
        # Dicts as ordered sets: a broadcast reaches connections in the order
        # they came, which over loopback costs measurably less than hash order.
        self._connections: dict[Subscriber, None] = {}
        self._by_stream: dict[str, dict[Subscriber, None]] = {}
        self._by_user: dict[str, dict[Subscriber, None]] = {}
        # Tuples rebuilt only after a change, so a broadcast iterates a stable
        # snapshot (a drop during fan-out cannot disturb it) without copying.
        self._snapshots: dict[tuple[str, str | None], tuple[Subscriber, ...]] = {}
        self._broker_pid: int | None = None
        self._counters = {
            "connections_total": 0,
            "broadcasts": 0,
            "messages_sent": 0,
            "dropped_slow": 0,
        }

    # -- membership ------------------------------------------------------

    def add(self, connection: Subscriber) -> None:
        """Subscribe a connection to its streams and to its user's stream."""
        self.start()
        self._connections[connection] = None
        self._counters["connections_total"] += 1
        self._snapshots.pop((ALL, None), None)
        for stream in connection.streams:
            self._by_stream.setdefault(stream, {})[connection] = None
            self._snapshots.pop((STREAM, stream), None)
        if connection.user_id is not None:
            self._by_user.setdefault(connection.user_id, {})[connection] = None
            self._snapshots.pop((USER, connection.user_id), None)

    def discard(self, connection: Subscriber, *, slow: bool = False) -> None:
        """Forget a connection; ``slow=True`` counts it as dropped for not reading."""
        if connection not in self._connections:
            return
        del self._connections[connection]
        if slow:
            self._counters["dropped_slow"] += 1
        self._snapshots.pop((ALL, None), None)
        for stream in connection.streams:
            self._forget(self._by_stream, STREAM, stream, connection)
        if connection.user_id is not None:
            self._forget(self._by_user, USER, connection.user_id, connection)

    def _forget(self, index, kind, key, connection) -> None:
        members = index.get(key)
        if members is not None:
            members.pop(connection, None)
            if not members:
                del index[key]
        self._snapshots.pop((kind, key), None)

    def connections(self) -> tuple[Subscriber, ...]:
        """The open connections of this process."""
        return self._recipients(ALL, None)

    def user_connection_count(self, user_id: str) -> int:
        """How many pages of this user are open in this process."""
        return len(self._by_user.get(str(user_id), ()))

    # -- broadcasting ----------------------------------------------------

    def _publish(self, kind: str, key: str | None, message: str) -> None:
        if self.broker is None:
            self.deliver(kind, key, message)
        else:
            self.start()
            self.broker.publish(kind, key, message)

    def deliver(self, kind: str, key: str | None, message: str) -> int:
        """Hand one message to this process's recipients; returns their number.

        Brokers call this for every message they receive.
        """
        self._counters["broadcasts"] += 1
        recipients = self._recipients(kind, key)
        if not recipients:
            return 0
        frame = encode_text_frame(message)
        for connection in recipients:
            connection.send_frame(frame)
        self._counters["messages_sent"] += len(recipients)
        return len(recipients)

    def _recipients(self, kind: str, key: str | None) -> tuple[Subscriber, ...]:
        snapshot = self._snapshots.get((kind, key))
        if snapshot is None:
            if kind == ALL:
                members = self._connections
            elif kind == STREAM:
                members = self._by_stream.get(key, ())
            elif kind == USER:
                members = self._by_user.get(key, ())
            else:
                raise ValueError(f"unknown message kind {kind!r}")
            if not members:
                return ()  # never cache absent keys: names may be unbounded
            snapshot = self._snapshots[(kind, key)] = tuple(members)
        return snapshot

    # -- broker ----------------------------------------------------------

    def start(self) -> None:
        """Start the broker's subscription in this process (idempotent).

        Called on the first connection and the first broadcast, so a process
        forked after import (gunicorn ``--preload``) subscribes on its own.
        Raises :class:`~turbo_gevent.BrokerError` when the broker is down.
        """
        if self.broker is None or self._broker_pid == os.getpid():
            return
        self.broker.start(self.deliver, self._broker_reconnected)
        # Remember the process, not just the fact: a forked child starts its own.
        self._broker_pid = os.getpid()

    def _broker_reconnected(self) -> None:
        if not self.refresh_on_reconnect:
            return
        from .streams import refresh

        log.info("broker reconnected: asking %d pages to refresh", len(self._connections))
        self.deliver(ALL, None, str(refresh()))

    def stats(self) -> dict[str, int]:
        """Counters: ``connections`` open now, ``connections_total`` ever,
        ``broadcasts`` delivered to this process, ``messages_sent`` to sockets,
        ``dropped_slow`` connections closed for not reading."""
        return {"connections": len(self._connections), **self._counters}
