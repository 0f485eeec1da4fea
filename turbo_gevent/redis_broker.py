"""Carry every broadcast to every process through one Redis channel.

Run several processes (gunicorn workers, several machines) and give their hub
a :class:`RedisBroker`: each broadcast is published to Redis, and each process
holds **one** subscription, whatever its number of clients, and delivers what
it receives to its own connections. Usage::

    broker = RedisBroker("redis://localhost:6379/0", channel_prefix="chat")
    hub = Hub(broker=broker)
    app = TurboStreams(app, hub=hub)

Nothing connects at construction: the hub starts the subscription on its
first connection or broadcast, in the serving process, so a broker built
before a fork (gunicorn ``--preload``) subscribes in each worker on its own;
a process that finds itself forked from the one that started the broker
starts anew instead of sharing the parent's sockets. Other processes (a
Celery worker, a script) publish with :class:`turbo_gevent.Publisher`.

Delivery and order: all messages of one ``channel_prefix`` travel on one
channel, ``<channel_prefix>:messages`` (see :mod:`turbo_gevent.wire`), so
Redis hands them to every process in one global order. :meth:`publish`
returns once Redis has accepted the message, so a broadcast made after another
one returned, from any process, is delivered after it.

Faults, and whose they are:

* Redis unreachable in :meth:`start` (the first request): ``BrokerError``,
  naming the URL without its password.
* Redis unreachable in :meth:`publish`: ``BrokerError`` at once, within
  ``connect_timeout`` + ``socket_timeout`` at worst. Nothing is retried
  silently and nothing is queued; the caller decides.
* The subscription breaks: the listener greenlet logs one WARNING, then
  resubscribes with a backoff from ``reconnect_delay`` doubling up to
  ``reconnect_delay_max``, then calls ``on_reconnect`` once, and the hub asks
  every page to refresh, since messages may have been missed meanwhile.
  A silent half-open connection is found by a PING after ``ping_interval``
  idle seconds left unanswered for ``socket_timeout``.
* A message that is not in the wire format is logged and skipped; an error
  raised by the hub while delivering is logged with its traceback. The
  listener never dies of either.

The serving process must be monkey-patched by gevent (the CLI and the
gunicorn worker do it), so that waiting on Redis only suspends a greenlet.
"""

from __future__ import annotations

import logging
import os
import time
from typing import Any, Callable

import gevent

from . import wire
from .errors import BrokerError, ConfigurationError
from .publisher import (
    Publisher,
    check_channel_prefix,
    check_timeout,
    check_url,
    import_redis,
    redact_url,
)

__all__ = ["RedisBroker"]

log = logging.getLogger("turbo_gevent.redis_broker")

Deliver = Callable[[str, "str | None", str], Any]


class RedisBroker:
    """A broker for :class:`~turbo_gevent.Hub` backed by Redis pub/sub.

    Arguments:
        url: a redis-py URL, ``redis://[[user]:password@]host[:port][/db]``,
            ``rediss://`` or ``unix://``.
        channel_prefix: names the channel, ``<channel_prefix>:messages``;
            applications with different prefixes share one Redis without
            seeing each other's broadcasts.
        connect_timeout: seconds to wait for a TCP connection to Redis.
        socket_timeout: seconds to wait for Redis to answer a command (a
            PUBLISH, a SUBSCRIBE, a PING).
        ping_interval: idle seconds after which the listener pings Redis to
            find a dead connection; ``None`` never pings.
        reconnect_delay: seconds before the second attempt to resubscribe
            (the first is immediate); doubles after each failure...
        reconnect_delay_max: ...up to this.
        logger: defaults to ``logging.getLogger("turbo_gevent.redis_broker")``.

    Raises :class:`~turbo_gevent.ConfigurationError` for a setting that
    cannot work, and ``ImportError`` when redis-py is not installed.
    """

    def __init__(
        self,
        url: str,
        *,
        channel_prefix: str = "turbo_gevent",
        # timeouts
        connect_timeout: float = 2.0,
        socket_timeout: float = 2.0,
        ping_interval: float | None = 10.0,
        # reconnection
        reconnect_delay: float = 0.1,
        reconnect_delay_max: float = 2.0,
        # logging
        logger: logging.Logger | None = None,
    ) -> None:
        check_url(url)
        check_channel_prefix(channel_prefix)
        check_timeout("connect_timeout", connect_timeout)
        check_timeout("socket_timeout", socket_timeout)
        check_timeout("ping_interval", ping_interval, allow_none=True)
        check_timeout("reconnect_delay", reconnect_delay)
        check_timeout("reconnect_delay_max", reconnect_delay_max)
        if reconnect_delay_max < reconnect_delay:
            raise ConfigurationError("reconnect_delay_max must be at least reconnect_delay")
        import_redis()
        self.url = url
        self.channel_prefix = channel_prefix
        self.channel = wire.channel_name(channel_prefix)
        self.connect_timeout = connect_timeout
        self.socket_timeout = socket_timeout
        self.ping_interval = ping_interval
        self.reconnect_delay = reconnect_delay
        self.reconnect_delay_max = reconnect_delay_max
        self.logger = logger if logger is not None else log
        # Everything below belongs to one process, self._pid; a forked child
        # finds another pid and starts afresh.
        self._pid: int | None = None
        self._publisher: Publisher | None = None
        self._listener: Any = None  # the greenlet reading the subscription
        self._deliver: Deliver | None = None
        self._on_reconnect: Callable[[], Any] | None = None

    def __repr__(self) -> str:
        return f"{type(self).__name__}({redact_url(self.url)!r}, channel_prefix={self.channel_prefix!r})"

    # -- the hub's side --------------------------------------------------

    def start(self, deliver: Deliver, on_reconnect: Callable[[], Any]) -> None:
        """Subscribe in this process and deliver what arrives (idempotent).

        ``deliver(kind, key, message)`` is called in the listener greenlet for
        every broadcast received; ``on_reconnect()`` once after each outage.
        Returns once the subscription is live, so a broadcast published after
        this returns is received. Raises :class:`~turbo_gevent.BrokerError`
        when Redis cannot be reached.
        """
        pid = os.getpid()
        if self.listening:
            self._deliver, self._on_reconnect = deliver, on_reconnect
            return
        if self._pid != pid:
            self._forget_other_process()
        pubsub = self._subscribe()
        self._pid = pid
        self._deliver, self._on_reconnect = deliver, on_reconnect
        self._listener = gevent.spawn(self._listen, pubsub)
        self.logger.info("listening to %s on Redis at %s", self.channel, redact_url(self.url))

    def publish(self, kind: str, key: str | None, message: str) -> None:
        """Publish one message; returns once Redis has accepted it.

        ``kind`` is ``"stream"``, ``"all"`` or ``"user"``; ``key`` the stream
        name, ``None`` or the user id. Raises
        :class:`~turbo_gevent.BrokerError` at once when Redis is unreachable.
        """
        if self._pid is not None and self._pid != os.getpid():
            # Forked after start(): a hub copied from the parent believes it
            # started already, so listen here too before publishing.
            deliver, on_reconnect = self._deliver, self._on_reconnect
            self._forget_other_process()
            if deliver is not None and on_reconnect is not None:
                self.start(deliver, on_reconnect)
        self._get_publisher().publish(kind, key, message)

    def stop(self, timeout: float | None = 5.0) -> None:
        """End the listener and close this process's connections to Redis.

        :meth:`start` may be called again afterwards.
        """
        if self._pid is not None and self._pid != os.getpid():
            self._forget_other_process()
            return
        listener, self._listener = self._listener, None
        self._pid = None
        if listener is not None:
            listener.kill(block=True, timeout=timeout)
        publisher, self._publisher = self._publisher, None
        if publisher is not None:
            publisher.close()

    @property
    def listening(self) -> bool:
        """Whether this process has a live listener greenlet."""
        return (
            self._pid == os.getpid()
            and self._listener is not None
            and not self._listener.dead
        )

    # -- internals -------------------------------------------------------

    def _get_publisher(self) -> Publisher:
        # Made in the process (and after the monkey patching) that uses it.
        if self._publisher is None:
            self._publisher = Publisher(
                self.url,
                channel_prefix=self.channel_prefix,
                connect_timeout=self.connect_timeout,
                socket_timeout=self.socket_timeout,
            )
        return self._publisher

    def _forget_other_process(self) -> None:
        """Drop what a parent process left behind, without touching its sockets.

        A greenlet copied by the fork is killed without waiting; closing its
        pub/sub connection in the child only closes the child's descriptor
        (redis-py shuts a socket down only in the process that opened it).
        """
        listener, self._listener = self._listener, None
        if listener is not None and not listener.dead:
            listener.kill(block=False)
        self._publisher = None
        self._pid = None

    def _subscribe(self) -> Any:
        """A pub/sub subscribed to our channel, confirmed by Redis."""
        redis = import_redis()
        pubsub = None
        try:
            pubsub = self._get_publisher().client().pubsub()
            pubsub.subscribe(self.channel)
            deadline = time.monotonic() + self.socket_timeout
            while True:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise redis.TimeoutError(
                        f"no confirmation of SUBSCRIBE within {self.socket_timeout}s"
                    )
                reply = pubsub.get_message(timeout=remaining)
                if reply is not None and reply["type"] == "subscribe":
                    return pubsub
        except (redis.RedisError, OSError) as exc:
            _close_quietly(pubsub)
            raise BrokerError(
                f"cannot subscribe to Redis at {redact_url(self.url)}: {exc}"
            ) from exc
        except BaseException:
            _close_quietly(pubsub)
            raise

    def _current(self) -> bool:
        return self._pid == os.getpid() and gevent.getcurrent() is self._listener

    def _listen(self, pubsub: Any) -> None:
        """The listener greenlet: read, and on any failure resubscribe."""
        redis = import_redis()
        lost_at = 0.0
        delay = 0.0  # the first attempt after a failure is immediate
        unexpected_logged = False
        try:
            while self._current():
                if pubsub is None:
                    try:
                        pubsub = self._subscribe()
                    except Exception as exc:  # the listener must not die
                        if isinstance(exc, BrokerError):
                            self.logger.debug("still cannot resubscribe: %s", exc)
                        elif not unexpected_logged:  # a bug: one traceback an outage
                            self.logger.warning("resubscribing failed", exc_info=True)
                            unexpected_logged = True
                        delay = min(max(delay * 2, self.reconnect_delay), self.reconnect_delay_max)
                        gevent.sleep(delay)
                        continue
                    self.logger.info(
                        "resubscribed to %s on Redis at %s after %.1fs",
                        self.channel, redact_url(self.url), time.monotonic() - lost_at,
                    )
                    delay = 0.0
                    unexpected_logged = False
                    self._call("on_reconnect", self._on_reconnect)
                try:
                    self._read(pubsub)
                except (redis.RedisError, OSError) as exc:
                    self.logger.warning(
                        "lost the subscription to %s on Redis at %s (%s); resubscribing",
                        self.channel, redact_url(self.url), exc,
                    )
                except Exception:
                    self.logger.warning(
                        "the Redis listener failed; resubscribing", exc_info=True
                    )
                _close_quietly(pubsub)
                pubsub = None
                lost_at = time.monotonic()
        finally:
            _close_quietly(pubsub)

    def _read(self, pubsub: Any) -> None:
        """Deliver messages until the connection fails (it raises) or we are replaced."""
        redis = import_redis()
        awaiting_pong = False
        while self._current():
            timeout = self.socket_timeout if awaiting_pong else self.ping_interval
            reply = pubsub.get_message(timeout=timeout)
            if reply is None:
                if awaiting_pong:
                    raise redis.TimeoutError(
                        f"no answer to PING within {self.socket_timeout}s"
                    )
                pubsub.ping()
                awaiting_pong = True
                continue
            awaiting_pong = False  # any reply proves the connection alive
            if reply["type"] == "message":
                self._receive(reply["data"])

    def _receive(self, data: bytes) -> None:
        try:
            kind, key, message = wire.decode(data)
        except ValueError as exc:
            self.logger.warning(
                "skipped a message on %s that is not a turbo_gevent broadcast (%s): %r",
                self.channel, exc, bytes(data[:60]),
            )
            return
        self._call("deliver", self._deliver, kind, key, message)

    def _call(self, name: str, callback: Callable[..., Any] | None, *args: Any) -> None:
        if callback is None:
            return
        try:
            callback(*args)
        except Exception:
            self.logger.exception("the hub's %s callback raised", name)


def _close_quietly(pubsub: Any) -> None:
    if pubsub is None:
        return
    try:
        pubsub.close()
    except Exception:  # closing a broken connection may fail; it is gone anyway
        log.debug("closing a pub/sub connection failed", exc_info=True)
