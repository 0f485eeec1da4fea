"""How a broadcast travels between processes: one tagged byte string.

Every process of an application subscribes to one Redis channel,
``<channel_prefix>:messages``, and every broadcast is published there, so
Redis gives all of them the same global order. A message on that channel is::

    TG1 <kind> <key length> ":" <key> <message>

written without spaces: the magic ``TG1`` (format version 1), one ASCII letter
for the kind (``s`` a stream, ``a`` every connection, ``u`` one user), the
length in bytes of the UTF-8 key in decimal, a colon, the key, then the joined
fragments in UTF-8 up to the end. For example::

    b'TG1s8:messages<turbo-stream action="append" ...>...</turbo-stream>'
    b'TG1a0:<turbo-stream action="refresh"></turbo-stream>'

The message is never escaped or copied into a container, so a fragment of any
size costs one encode and one slice. This module does no I/O; the broker and
the publisher both use it.
"""

from __future__ import annotations

__all__ = ["channel_name", "encode", "decode"]

_MAGIC = b"TG1"
_KIND_TO_TAG = {"stream": b"s", "all": b"a", "user": b"u"}
_TAG_TO_KIND = {tag[0]: kind for kind, tag in _KIND_TO_TAG.items()}
_MAX_KEY_DIGITS = 10


def channel_name(channel_prefix: str) -> str:
    """The one Redis channel every process of an application shares."""
    return f"{channel_prefix}:messages"


def encode(kind: str, key: str | None, message: str) -> bytes:
    """Encode one broadcast; ``key`` is ``None`` exactly for kind ``"all"``.

    Raises ``ValueError`` for an unknown kind or a key that does not fit it.
    """
    tag = _KIND_TO_TAG.get(kind)
    if tag is None:
        raise ValueError(f"unknown message kind {kind!r}")
    if (key is None) != (kind == "all"):
        raise ValueError(f"a {kind!r} message needs {'no' if kind == 'all' else 'a'} key")
    key_bytes = key.encode("utf-8") if key is not None else b""
    return b"".join(
        (_MAGIC, tag, str(len(key_bytes)).encode("ascii"), b":", key_bytes,
         message.encode("utf-8"))
    )


def decode(data: bytes) -> tuple[str, str | None, str]:
    """Decode what :func:`encode` made back into ``(kind, key, message)``.

    Raises ``ValueError`` for anything else (including invalid UTF-8).
    """
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise ValueError(f"expected bytes, not {type(data).__name__}")
    data = bytes(data)
    if not data.startswith(_MAGIC) or len(data) < len(_MAGIC) + 3:
        raise ValueError("not a turbo_gevent message")
    kind = _TAG_TO_KIND.get(data[3])
    if kind is None:
        raise ValueError(f"unknown message kind tag {data[3:4]!r}")
    colon = data.find(b":", 4, 4 + _MAX_KEY_DIGITS + 1)
    length_digits = data[4:colon]
    if colon < 0 or not length_digits.isdigit():
        raise ValueError("bad key length")
    key_end = colon + 1 + int(length_digits)
    if key_end > len(data):
        raise ValueError("key longer than the message")
    key: str | None = data[colon + 1:key_end].decode("utf-8")
    if kind == "all":
        if key:
            raise ValueError("an 'all' message has no key")
        key = None
    return kind, key, data[key_end:].decode("utf-8")
