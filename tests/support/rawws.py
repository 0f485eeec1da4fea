"""A raw WebSocket client that can send any bytes, for hostile-peer tests."""

from __future__ import annotations

import base64
import os
import socket
import struct
import time

from .server import TEST_SECRET  # noqa: F401  (handy for callers)


def handshake_request(port, path="/turbo-stream", *, key=None, version="13", connection="Upgrade",
                      upgrade="websocket", http="HTTP/1.1", method="GET", extra=(), host=None):
    """The bytes of an upgrade request; a header given as None is left out."""
    if key is None:
        key = base64.b64encode(os.urandom(16)).decode()
    lines = [f"{method} {path} {http}", f"Host: {host or f'127.0.0.1:{port}'}"]
    for name, value in (("Upgrade", upgrade), ("Connection", connection),
                        ("Sec-WebSocket-Version", version), ("Sec-WebSocket-Key", key), *extra):
        if value is not None:
            lines.append(f"{name}: {value}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


def read_http_response(sock, timeout=10.0):
    """Read a whole HTTP response (head and Content-Length body): (status, headers, body)."""
    sock.settimeout(timeout)
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError(f"closed before the end of the headers: {data!r}")
        data += chunk
    head, _, rest = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    length = int(headers.get("content-length", "0")) if status != 101 else 0
    while len(rest) < length:
        chunk = sock.recv(65536)
        if not chunk:
            break
        rest += chunk
    return status, headers, rest


def frame(opcode, payload=b"", *, fin=True, mask=True, rsv=0, length=None):
    """Encode one client frame; ``length`` overrides the announced length."""
    first = (0x80 if fin else 0) | (rsv << 4) | opcode
    n = len(payload) if length is None else length
    mask_bit = 0x80 if mask else 0
    if n < 126:
        head = struct.pack("!BB", first, mask_bit | n)
    elif n < 65536:
        head = struct.pack("!BBH", first, mask_bit | 126, n)
    else:
        head = struct.pack("!BBQ", first, mask_bit | 127, n)
    if not mask:
        return head + payload
    key = os.urandom(4)
    masked = bytes(b ^ key[i % 4] for i, b in enumerate(payload))
    return head + key + masked


def close_payload(code, reason=b""):
    return struct.pack("!H", code) + reason


class RawClient:
    """A connected, handshaken raw WebSocket client."""

    def __init__(self, port, path="/turbo-stream", *, query="", extra=(), timeout=10.0):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        self.sock.sendall(handshake_request(port, path + (f"?{query}" if query else ""), extra=extra))
        self.status, self.headers, self.buffer = read_http_response(self.sock, timeout)
        self.timeout = timeout

    def send(self, data):
        self.sock.sendall(data)

    def _fill(self, n, deadline):
        while len(self.buffer) < n:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError("no frame in time")
            self.sock.settimeout(remaining)
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionError("connection closed")
            self.buffer += chunk

    def recv_frame(self, timeout=None):
        """Read one server frame: (fin, opcode, payload). Server frames must be unmasked."""
        deadline = time.monotonic() + (timeout or self.timeout)
        self._fill(2, deadline)
        b0, b1 = self.buffer[0], self.buffer[1]
        assert not b1 & 0x80, "server frames must not be masked"
        n, offset = b1 & 0x7F, 2
        if n == 126:
            self._fill(4, deadline)
            n, offset = struct.unpack("!H", self.buffer[2:4])[0], 4
        elif n == 127:
            self._fill(10, deadline)
            n, offset = struct.unpack("!Q", self.buffer[2:10])[0], 10
        self._fill(offset + n, deadline)
        payload = self.buffer[offset:offset + n]
        self.buffer = self.buffer[offset + n:]
        return bool(b0 & 0x80), b0 & 0x0F, payload

    def recv_until(self, opcode, timeout=None):
        """Skip frames until one with ``opcode``; returns its payload."""
        deadline = time.monotonic() + (timeout or self.timeout)
        while True:
            _, op, payload = self.recv_frame(max(0.01, deadline - time.monotonic()))
            if op == opcode:
                return payload

    def expect_close_code(self, timeout=None):
        payload = self.recv_until(0x8, timeout)
        return struct.unpack("!H", payload[:2])[0] if len(payload) >= 2 else None

    def at_eof(self, timeout=5.0):
        """True once the server has closed the TCP connection (after any frames)."""
        deadline = time.monotonic() + timeout
        try:
            while time.monotonic() < deadline:
                self.sock.settimeout(max(0.01, deadline - time.monotonic()))
                if not self.sock.recv(65536):
                    return True
        except ConnectionResetError:
            return True
        except (TimeoutError, socket.timeout):
            return False
        return False

    def close(self):
        self.sock.close()
