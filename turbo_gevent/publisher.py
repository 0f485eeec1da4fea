"""Broadcast to a Redis-backed application from any Python process.

A Celery worker, a cron script or a management command has no hub and no
WebSocket, and usually no gevent either. :class:`Publisher` gives it the
hub's three broadcast methods: each publishes one message on the channel that
every serving process of the application listens to (see
:class:`turbo_gevent.RedisBroker`), and those processes deliver it to their
own connections. It is plain redis-py: no gevent, no monkey patching.

Usage::

    from turbo_gevent import Publisher, streams

    publisher = Publisher("redis://localhost:6379/0")

    @celery.task
    def report_ready(user_id, html):
        publisher.broadcast_to_user(user_id, streams.replace("report", html))

The ``channel_prefix`` must be the one the application's broker uses.

Each call returns once Redis has accepted the message, so two broadcasts made
one after the other reach every page in that order, and after anything the
application broadcast before. When Redis cannot be reached the call raises
:class:`~turbo_gevent.BrokerError` within the timeouts: nothing is retried
behind your back and nothing is queued. A ``Publisher`` is safe to share
between threads and survives a fork (redis-py's pool reconnects in the child).
"""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import urlsplit

from . import wire
from .errors import BrokerError, ConfigurationError
from .hub import Broadcasting

__all__ = ["Publisher"]

_SCHEMES = ("redis", "rediss", "unix")
_PASSWORD_PARAMETER = re.compile(r"((?:^|&)password=)[^&]*")


class Publisher(Broadcasting):
    """Publish Turbo Stream broadcasts to every process through Redis.

    Arguments:
        url: a redis-py URL, ``redis://[[user]:password@]host[:port][/db]``,
            ``rediss://`` or ``unix://``.
        channel_prefix: names the application's channel,
            ``<channel_prefix>:messages``; applications with different
            prefixes share one Redis without seeing each other's messages.
        connect_timeout: seconds to wait for a TCP connection to Redis.
        socket_timeout: seconds to wait for Redis to answer once connected.

    Raises :class:`~turbo_gevent.ConfigurationError` for a URL or prefix that
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
    ) -> None:
        check_url(url)
        check_channel_prefix(channel_prefix)
        check_timeout("connect_timeout", connect_timeout)
        check_timeout("socket_timeout", socket_timeout)
        import_redis()
        self.url = url
        self.channel_prefix = channel_prefix
        self.channel = wire.channel_name(channel_prefix)
        self.connect_timeout = connect_timeout
        self.socket_timeout = socket_timeout
        self._client: Any = None

    def __repr__(self) -> str:
        return f"{type(self).__name__}({redact_url(self.url)!r}, channel_prefix={self.channel_prefix!r})"

    # -- broadcasting ----------------------------------------------------

    def _publish(self, kind: str, key: str | None, message: str) -> None:
        self.publish(kind, key, message)

    def publish(self, kind: str, key: str | None, message: str) -> None:
        """Publish one joined message of ``kind`` ``"stream"``, ``"all"`` or ``"user"``.

        The lower-level call behind the broadcast methods (and the broker's
        :meth:`~turbo_gevent.RedisBroker.publish`). Returns once Redis has
        accepted it; raises :class:`~turbo_gevent.BrokerError` when Redis
        cannot be reached or refuses it.
        """
        data = wire.encode(kind, key, message)
        redis = import_redis()
        try:
            self.client().publish(self.channel, data)
        except (redis.RedisError, OSError) as exc:
            raise BrokerError(
                f"cannot publish to Redis at {redact_url(self.url)}: {exc}"
            ) from exc

    # -- connection ------------------------------------------------------

    def client(self) -> Any:
        """The ``redis.Redis`` client, made on first use (no connection yet)."""
        if self._client is None:
            self._client = connect(
                self.url,
                connect_timeout=self.connect_timeout,
                socket_timeout=self.socket_timeout,
            )
        return self._client

    def close(self) -> None:
        """Close the connections to Redis; a later broadcast reconnects."""
        client, self._client = self._client, None
        if client is not None:
            client.close()

    def __enter__(self) -> "Publisher":
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self.close()


# -- shared with turbo_gevent.redis_broker ---------------------------------


def import_redis() -> Any:
    """Import redis-py, or say which extra installs it."""
    try:
        import redis
        import redis.backoff
        import redis.retry
    except ImportError as exc:
        raise ImportError(
            "turbo_gevent needs redis-py to talk to Redis: "
            "pip install turbo_gevent[redis]"
        ) from exc
    return redis


def connect(url: str, *, connect_timeout: float, socket_timeout: float) -> Any:
    """A ``redis.Redis`` for ``url`` that fails fast and never retries.

    redis-py's ``Redis()`` retries a failed command ten times with backoff by
    default, and a pub/sub connection resubscribes on its own; either would
    hide an outage (and a retried PUBLISH may be delivered twice). Here
    ``Retry(NoBackoff(), 0)`` lets every error out on the first failure.
    Query-string options in the URL still win over these.
    """
    redis = import_redis()
    return redis.Redis.from_url(
        url,
        socket_connect_timeout=connect_timeout,
        socket_timeout=socket_timeout,
        retry=redis.retry.Retry(redis.backoff.NoBackoff(), 0),
        health_check_interval=0,
        # RESP2 works with every Redis and has no push messages of its own.
        protocol=2,
    )


def redact_url(url: str) -> str:
    """``url`` with its password, if any, replaced by ``***``: safe to log."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return "<invalid Redis URL>"
    userinfo, at, hostport = parts.netloc.rpartition("@")
    netloc = f"{userinfo.partition(':')[0]}:***@{hostport}" if at and ":" in userinfo else parts.netloc
    query = _PASSWORD_PARAMETER.sub(r"\1***", parts.query)
    if netloc == parts.netloc and query == parts.query:
        return url
    return f"{parts.scheme}://{netloc}{parts.path}" + (f"?{query}" if query else "")


def check_url(url: Any) -> None:
    if not isinstance(url, str):
        raise TypeError(f"url must be a str, not {type(url).__name__}")
    scheme = url.partition("://")[0].lower() if "://" in url else ""
    if scheme not in _SCHEMES:
        raise ConfigurationError(
            f"not a Redis URL: {redact_url(url)!r} "
            "(expected redis://, rediss:// or unix://)"
        )


def check_channel_prefix(channel_prefix: Any) -> None:
    if not isinstance(channel_prefix, str) or not channel_prefix:
        raise ConfigurationError("channel_prefix must be a non-empty str")


def check_timeout(name: str, value: Any, *, allow_none: bool = False) -> None:
    if value is None and allow_none:
        return
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
        raise ConfigurationError(
            f"{name} must be a positive number of seconds"
            + (" or None" if allow_none else "")
            + f", not {value!r}"
        )
