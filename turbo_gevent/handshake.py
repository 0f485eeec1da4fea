"""The opening handshake, decided on the request alone (RFC 6455 4.2).

Pure functions over a WSGI environ: :func:`check_handshake` returns the
:class:`Refusal` to answer with, or ``None`` when the request is a valid
WebSocket upgrade; :func:`accept_headers` gives the headers of the 101.
Checked in this order: HTTP/1.1 GET with no body (400), the Upgrade and Connection token
lists (426), the version (426 naming the one we speak), the key (400).
"""

from __future__ import annotations

import binascii
from base64 import b64decode
from dataclasses import dataclass, field

from websockets.utils import accept_key
from werkzeug.http import parse_list_header

__all__ = ["Refusal", "check_handshake", "accept_headers", "is_upgrade_request"]

WEBSOCKET_VERSION = "13"


@dataclass(frozen=True)
class Refusal:
    """An HTTP answer instead of the upgrade: status, a short reason, headers."""

    status: int
    reason: str
    headers: tuple[tuple[str, str], ...] = field(default=())


def _tokens(environ: dict, key: str) -> set[str]:
    return {token.lower() for token in parse_list_header(environ.get(key, ""))}


def is_upgrade_request(environ: dict) -> bool:
    """Whether the request asks for a WebSocket (Upgrade and Connection tokens)."""
    return "websocket" in _tokens(environ, "HTTP_UPGRADE") and "upgrade" in _tokens(
        environ, "HTTP_CONNECTION"
    )


def _http_version(environ: dict) -> tuple[int, int]:
    protocol = environ.get("SERVER_PROTOCOL", "")
    try:
        name, _, version = protocol.partition("/")
        major, _, minor = version.partition(".")
        if name.upper() != "HTTP":
            raise ValueError
        return int(major), int(minor or 0)
    except ValueError:
        return (0, 0)


def check_handshake(environ: dict) -> Refusal | None:
    """The refusal for this request, or ``None`` if it is a valid upgrade."""
    if _http_version(environ) < (1, 1):
        return Refusal(400, "WebSocket needs HTTP/1.1")
    if environ.get("REQUEST_METHOD") != "GET":
        return Refusal(400, "WebSocket handshake must be a GET", (("Allow", "GET"),))
    if environ.get("CONTENT_LENGTH", "") not in ("", "0") or "HTTP_TRANSFER_ENCODING" in environ:
        return Refusal(400, "a WebSocket handshake has no body")
    if not is_upgrade_request(environ):
        return Refusal(
            426,
            "this endpoint only speaks WebSocket",
            (("Upgrade", "websocket"), ("Sec-WebSocket-Version", WEBSOCKET_VERSION)),
        )
    if environ.get("HTTP_SEC_WEBSOCKET_VERSION", "").strip() != WEBSOCKET_VERSION:
        return Refusal(
            426,
            "unsupported WebSocket version: 13 is required",
            (("Upgrade", "websocket"), ("Sec-WebSocket-Version", WEBSOCKET_VERSION)),
        )
    key = environ.get("HTTP_SEC_WEBSOCKET_KEY", "").strip()
    try:
        valid_key = len(key) == 24 and len(b64decode(key, validate=True)) == 16
    except (binascii.Error, ValueError):
        valid_key = False
    if not valid_key:
        return Refusal(400, "missing or malformed Sec-WebSocket-Key")
    return None


def accept_headers(environ: dict) -> list[tuple[str, str]]:
    """The headers of the 101 answering a request that passed :func:`check_handshake`."""
    key = environ["HTTP_SEC_WEBSOCKET_KEY"].strip()
    return [
        ("Upgrade", "websocket"),
        ("Connection", "Upgrade"),
        ("Sec-WebSocket-Accept", accept_key(key)),
    ]
