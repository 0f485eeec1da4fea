"""The benchmark's message: one Turbo Stream fragment carrying its send time.

Every system broadcasts the same fragment, padded to a fixed size so that a
client counting bytes knows how many messages it received::

    <turbo-stream action="append" target="bench"><template><p data-seq="00000042"
    data-t="1733230000.123456">xxxx…</p></template></turbo-stream>

``data-t`` is the server's ``time.time()`` just before it hands the fragment
to its broadcast function; a client subtracts it from its own arrival time.
"""

from __future__ import annotations

import time

SIZE = 300
_HEAD = '<turbo-stream action="append" target="bench"><template><p data-seq="{seq:08d}" data-t="{t:017.6f}">'
_TAIL = "</p></template></turbo-stream>"
_SEQ = b'data-seq="'
_T = b'data-t="'


def fragment(seq: int, size: int = SIZE, now: float | None = None) -> str:
    """The fragment for broadcast number ``seq``, exactly ``size`` bytes long."""
    head = _HEAD.format(seq=seq, t=time.time() if now is None else now)
    pad = size - len(head) - len(_TAIL)
    if pad < 0:
        raise ValueError(f"size must be at least {len(head) + len(_TAIL)}")
    return head + "x" * pad + _TAIL


def frame_length(size: int = SIZE) -> int:
    """Bytes on the wire for one unmasked text frame of ``size`` bytes."""
    if size < 126:
        return size + 2
    if size < 65536:
        return size + 4
    return size + 10


def parse(payload: bytes) -> tuple[int, float]:
    """``(seq, send time)`` from a received fragment."""
    i = payload.index(_SEQ) + len(_SEQ)
    j = payload.index(_T, i) + len(_T)
    return int(payload[i:i + 8]), float(payload[j:j + 17])
