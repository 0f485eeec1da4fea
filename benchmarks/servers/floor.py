"""The floor: the least a gevent server can do to fan a message out.

A raw WebSocket handshake (no checks), the frame encoded once per broadcast,
then one ``send`` per socket, in connection order, straight on the
underlying non-blocking socket (not through gevent's wrapper); only what the
kernel does not take is finished with gevent's blocking ``sendall``. No
queues, no timeouts, no keepalive, no slow-client handling: one client that
stops reading blocks every broadcast after it. It is what the
other systems' costs are measured against, not a server to deploy.

    python benchmarks/servers/floor.py --port 8000 [--order hash]

``--order hash`` sends in the order of a ``set`` of sockets, as a hub that
keeps its subscribers in sets does, instead of the order of connection. Over
loopback the order changes the sender's CPU: consecutive messages to clients
of one load-generator process find it awake, scattered ones wake it each time.
"""

from gevent import monkey

monkey.patch_all()

import argparse  # noqa: E402
import base64  # noqa: E402
import hashlib  # noqa: E402
import struct  # noqa: E402

import gevent  # noqa: E402
from gevent.server import StreamServer  # noqa: E402

from control import PREFIX, Control, http_response, raise_nofile, run_blocking  # noqa: E402

GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
clients: dict = {}  # gevent socket -> its raw socket, in connection order


def encode(message: str) -> bytes:
    data = message.encode()
    n = len(data)
    if n < 126:
        return struct.pack("!BB", 0x81, n) + data
    if n < 65536:
        return struct.pack("!BBH", 0x81, 126, n) + data
    return struct.pack("!BBQ", 0x81, 127, n) + data


ORDER = ["connection"]


def broadcast(message: str) -> None:
    frame = encode(message)
    size = len(frame)
    recipients = list(clients.items()) if ORDER[0] == "connection" else list(set(clients.items()))
    for sock, raw in recipients:
        try:
            sent = raw.send(frame)
        except BlockingIOError:
            sent = 0
        except OSError:
            continue
        if sent < size:
            try:
                sock.sendall(frame[sent:])
            except OSError:
                pass


control = Control(broadcast, lambda: len(clients))


def handle(sock, address) -> None:
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(4096)
        if not chunk:
            return
        data += chunk
    head = data.split(b"\r\n\r\n", 1)[0].decode("latin-1").split("\r\n")
    target = head[0].split(" ")[1]
    if target.startswith(PREFIX):
        status, body, run = control.answer(target)
        if run is not None:
            gevent.spawn(run_blocking, control, run)
        sock.sendall(http_response(status, body))
        return
    key = b""
    for line in head[1:]:
        name, _, value = line.partition(":")
        if name.strip().lower() == "sec-websocket-key":
            key = value.strip().encode()
    accept = base64.b64encode(hashlib.sha1(key + GUID).digest())
    sock.sendall(
        b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
        b"Connection: Upgrade\r\nSec-WebSocket-Accept: " + accept + b"\r\n\r\n"
    )
    clients[sock] = sock._sock  # the non-blocking socket under gevent's
    try:
        while sock.recv(65536):
            pass
    except OSError:
        pass
    finally:
        clients.pop(sock, None)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--order", choices=("connection", "hash"), default="connection")
    args = parser.parse_args()
    ORDER[0] = args.order
    raise_nofile()
    StreamServer(("127.0.0.1", args.port), handle, backlog=1024).serve_forever()


if __name__ == "__main__":
    main()
