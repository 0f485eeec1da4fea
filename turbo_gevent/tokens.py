"""Signed stream tokens: which streams a page may listen to, and for whom.

A page rendered by the app carries, in its ``<turbo-stream-source>`` src, one
token per stream. A token proves that this server rendered a page naming that
stream for that viewer (a user id, or anonymous) at that time. Signing uses
itsdangerous; the secret may be a list, newest first, so a key can be rotated
without breaking pages already open: tokens are signed with the first key and
accepted with any of them.
"""

from __future__ import annotations

from typing import Sequence

from itsdangerous import BadSignature, SignatureExpired, URLSafeTimedSerializer

from .errors import ConfigurationError

__all__ = ["StreamSigner", "InvalidToken"]

_SALT = "turbo_gevent.stream"


class InvalidToken(Exception):
    """A token that was forged, altered, expired or made for another viewer.

    ``reason`` is safe to log: it never contains the token or the secret.
    """

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class StreamSigner:
    """Sign stream names into tokens and check them.

    Arguments:
        secrets: one secret, or a list of them newest first.
        max_age: seconds a token stays valid; ``None`` for no expiry.
    """

    def __init__(self, secrets: str | bytes | Sequence[str | bytes], *, max_age: float | None = None) -> None:
        if isinstance(secrets, (str, bytes)):
            secrets = [secrets]
        secrets = list(secrets)
        if not secrets or not all(isinstance(s, (str, bytes)) and s for s in secrets):
            raise ConfigurationError("secret must be a non-empty str/bytes, or a list of them newest first")
        if max_age is not None and max_age <= 0:
            raise ConfigurationError("token_max_age must be a positive number of seconds, or None")
        self.max_age = max_age
        # itsdangerous takes keys oldest to newest and signs with the last.
        self._serializer = URLSafeTimedSerializer(list(reversed(secrets)), salt=_SALT)

    def sign(self, stream: str, viewer: str | None = None) -> str:
        """A token for ``stream``, bound to ``viewer`` (``None``: anonymous)."""
        if not isinstance(stream, str) or not stream:
            raise ValueError("a stream name must be a non-empty str")
        return self._serializer.dumps([stream, viewer])

    def unsign(self, token: str, viewer: str | None = None) -> str:
        """The stream name in ``token``; raises :class:`InvalidToken`."""
        try:
            payload = self._serializer.loads(token, max_age=self.max_age)
        except SignatureExpired:
            raise InvalidToken("stream token expired") from None
        except BadSignature:
            raise InvalidToken("stream token has a bad signature") from None
        if (
            not isinstance(payload, list)
            or len(payload) != 2
            or not isinstance(payload[0], str)
            or not (payload[1] is None or isinstance(payload[1], str))
        ):
            raise InvalidToken("stream token is malformed")
        stream, bound_to = payload
        if bound_to != viewer:
            raise InvalidToken("stream token was issued to another viewer")
        return stream
