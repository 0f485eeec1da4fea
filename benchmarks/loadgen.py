"""Load generator: many WebSocket clients in one process, on raw sockets and epoll.

Two roles, one process each (pinned by the runner to the core the server does
not use):

``bulk``
    Clients that only drain their sockets: one ``recv_into`` into a shared
    buffer per readiness event, bytes counted per client, no frame parsing.
    Every message has the same length on the wire, so the counts tell how
    many each client got, and the running total tells when *every* bulk
    client had broadcast *k*.
``probe``
    Clients that parse every frame and record, per message, the arrival time
    minus the send time the server wrote into it (see :mod:`payload`).

Commands arrive as JSON lines on stdin; each is answered by one JSON line
on stdout:

``{"cmd": "connect", "n": N, "host": H, "port": P, "path": "/..."}``
    open N more clients (raw handshake, at most ``inflight`` at a time);
    answers once all are open or failed.
``{"cmd": "mark"}``
    start counting from now: byte counts and probe records are cleared.
``{"cmd": "report", "frame": BYTES, "first": SEQ, "count": N}``
    what arrived since the mark.
``{"cmd": "slow", "rcvbuf": BYTES, ...connect fields}``
    open one client with that receive buffer that never reads; its reset by
    the server is timed.
``{"cmd": "batch", "seconds": S}``
    a bulk process sleeps S seconds after each wake-up, so that each read
    takes several messages at once (for rates the process could not follow
    one message at a time); 0, the default, reads as soon as data arrives.
``{"cmd": "close"}``
    reset every client (RST, no TIME_WAIT).
``{"cmd": "quit"}``

    python benchmarks/loadgen.py --role bulk --source 127.0.0.2
"""

from __future__ import annotations

import argparse
import base64
import errno
import json
import os
import resource
import select
import socket
import struct
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from payload import parse as parse_payload  # noqa: E402

_KEY = base64.b64encode(b"turbo-gevent-ben").decode()
_LINGER_RESET = struct.pack("ii", 1, 0)
_PONG = bytes((0x8A, 0x80, 0, 0, 0, 0))  # an empty masked pong
_IN = select.EPOLLIN
_OUT = select.EPOLLOUT
_ERR = select.EPOLLERR | select.EPOLLHUP


class Client:
    __slots__ = ("sock", "state", "head", "count", "buf", "records", "slow")

    def __init__(self, sock: socket.socket, slow: bool = False) -> None:
        self.sock = sock
        self.state = "connecting"
        self.head = b""
        self.count = 0  # bytes since the mark
        self.buf = bytearray()
        self.records: list = []  # (seq, latency) for a probe
        self.slow = slow


class Loadgen:
    def __init__(self, role: str, source: str, inflight: int) -> None:
        self.role = role
        self.source = source
        self.inflight_max = inflight
        self.epoll = select.epoll()
        self.clients: dict[int, Client] = {}
        self.open = 0
        self.failed = 0
        self.errors: list[str] = []
        self.closed_by_server = 0
        self.buffer = bytearray(1 << 18)
        self.view = memoryview(self.buffer)
        # connecting
        self.todo = 0
        self.pending = 0
        self.target = None
        self.request = b""
        self.slow_client: Client | None = None
        self.slow_opened_at = None
        self.slow_reset_at = None
        # bulk completion: when the total since the mark crossed k messages each
        self.total = 0
        self.per_message = 0  # bytes of one message to every bulk client
        self.next_threshold = 0
        self.completions: list[float] = []
        self.stdin = sys.stdin.buffer.raw
        self.stdin_buf = b""
        self.epoll.register(self.stdin.fileno(), _IN)
        self.reply_when_connected = False
        self.batch = 0.0

    # -- commands --------------------------------------------------------

    def reply(self, body: dict) -> None:
        sys.stdout.write(json.dumps(body) + "\n")
        sys.stdout.flush()

    def command(self, msg: dict) -> bool:
        cmd = msg["cmd"]
        if cmd in ("connect", "slow"):
            host, port, path = msg["host"], msg["port"], msg["path"]
            self.target = (host, port)
            self.request = (
                f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\nUpgrade: websocket\r\n"
                f"Connection: Upgrade\r\nSec-WebSocket-Key: {_KEY}\r\nSec-WebSocket-Version: 13\r\n\r\n"
            ).encode()
            if cmd == "slow":
                self.start_connect(slow=msg["rcvbuf"])
            else:
                self.todo += msg["n"]
            self.reply_when_connected = True
            self.fill()
            self.check_connected()
        elif cmd == "mark":
            for client in self.clients.values():
                client.count = 0
                client.records = []
            self.total = 0
            bulk = sum(1 for c in self.clients.values() if c.state == "open" and not c.slow)
            self.per_message = bulk * msg.get("frame", 0)
            self.next_threshold = self.per_message
            self.completions = []
            self.closed_by_server = 0
            self.reply({"marked": bulk})
        elif cmd == "report":
            self.reply(self.report(msg))
        elif cmd == "close":
            for fd, client in list(self.clients.items()):
                self.drop(fd, client, reset=True)
            self.open = 0
            self.slow_client = None
            self.reply({"closed": True})
        elif cmd == "batch":
            self.batch = msg["seconds"]
            self.reply({"batch": self.batch})
        elif cmd == "quit":
            return False
        return True

    def report(self, msg: dict) -> dict:
        frame = msg["frame"]
        first, count = msg["first"], msg["count"]
        usage = resource.getrusage(resource.RUSAGE_SELF)
        body = {
            "role": self.role,
            "open": self.open,
            "closed_by_server": self.closed_by_server,
            "cpu": usage.ru_utime + usage.ru_stime,
            "slow_opened_at": self.slow_opened_at,
            "slow_reset_at": self.slow_reset_at,
        }
        healthy = [c for c in self.clients.values() if c.state == "open" and not c.slow]
        if self.role == "bulk":
            missing = 0
            for client in healthy:
                got = client.count // frame
                if got < count:
                    missing += count - got
            body["missing"] = missing
            body["clients"] = len(healthy)
            body["completions"] = self.completions
        else:
            missing = 0
            records = []
            for client in healthy:
                seen = set()
                for seq, sent, latency in client.records:
                    if first <= seq < first + count:
                        seen.add(seq)
                        records.append((seq, sent, latency))
                missing += count - len(seen)
            body["missing"] = missing
            body["clients"] = len(healthy)
            body["records"] = records
        return body

    # -- connecting ------------------------------------------------------

    def fill(self) -> None:
        while self.todo and self.pending < self.inflight_max:
            self.todo -= 1
            self.start_connect()

    def start_connect(self, slow: int | None = None) -> None:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        if slow:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, slow)
        sock.bind((self.source, 0))
        sock.setblocking(False)
        err = sock.connect_ex(self.target)
        if err not in (0, errno.EINPROGRESS):
            sock.close()
            self.fail(f"connect: {os.strerror(err)}")
            return
        client = Client(sock, slow=bool(slow))
        self.clients[sock.fileno()] = client
        self.pending += 1
        self.epoll.register(sock.fileno(), _OUT)

    def fail(self, why: str) -> None:
        self.failed += 1
        if len(self.errors) < 5:
            self.errors.append(why)

    def check_connected(self) -> None:
        if self.reply_when_connected and not self.todo and not self.pending:
            self.reply_when_connected = False
            self.reply({"open": self.open, "failed": self.failed, "errors": self.errors})
            self.failed = 0
            self.errors = []

    def handshake_event(self, fd: int, client: Client, events: int) -> None:
        sock = client.sock
        if client.state == "connecting":
            err = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
            if err:
                self.pending -= 1
                self.fail(f"connect: {os.strerror(err)}")
                self.drop(fd, client)
                return
            sock.send(self.request)
            client.state = "handshake"
            self.epoll.modify(fd, _IN)
            return
        try:
            data = sock.recv(65536)
        except OSError as exc:
            data = b""
            self.fail(f"handshake: {exc}")
        if not data:
            self.pending -= 1
            if not self.errors:
                self.fail("handshake: closed")
            self.drop(fd, client)
            return
        client.head += data
        end = client.head.find(b"\r\n\r\n")
        if end < 0:
            return
        self.pending -= 1
        if not client.head.startswith(b"HTTP/1.1 101"):
            self.fail("handshake: " + client.head.split(b"\r\n", 1)[0].decode("latin-1"))
            self.drop(fd, client)
            return
        rest = client.head[end + 4:]
        client.head = b""
        client.state = "open"
        self.open += 1
        if client.slow:
            self.slow_client = client
            self.slow_opened_at = time.time()
            self.epoll.modify(fd, 0)  # never read; still told of a reset
            return
        if rest:
            self.data(client, rest, time.time())

    def drop(self, fd: int, client: Client, reset: bool = False) -> None:
        try:
            self.epoll.unregister(fd)
        except (OSError, ValueError):
            pass
        if reset:
            try:
                client.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _LINGER_RESET)
            except OSError:
                pass
        client.sock.close()
        self.clients.pop(fd, None)

    # -- receiving -------------------------------------------------------

    def data(self, client: Client, data, now: float) -> None:
        if self.role == "bulk":
            n = len(data)
            client.count += n
            self.count_total(n, now)
        else:
            self.parse(client, data, now)

    def count_total(self, n: int, now: float) -> None:
        self.total += n
        if self.per_message:
            while self.total >= self.next_threshold:
                self.completions.append(now)
                self.next_threshold += self.per_message

    def parse(self, client: Client, data, now: float) -> None:
        buf = client.buf
        buf += data
        i = 0
        end = len(buf)
        while end - i >= 2:
            length = buf[i + 1] & 0x7F
            header = 2
            if length == 126:
                if end - i < 4:
                    break
                length = (buf[i + 2] << 8) | buf[i + 3]
                header = 4
            elif length == 127:
                if end - i < 10:
                    break
                length = int.from_bytes(buf[i + 2:i + 10], "big")
                header = 10
            if end - i < header + length:
                break
            opcode = buf[i] & 0x0F
            if opcode == 1:
                seq, sent = parse_payload(bytes(buf[i + header:i + header + length]))
                client.records.append((seq, sent, now - sent))
                client.count += header + length
            elif opcode == 9:
                client.sock.send(_PONG)
            i += header + length
        del buf[:i]

    def readable(self, fd: int, client: Client) -> None:
        try:
            n = client.sock.recv_into(self.buffer)
        except BlockingIOError:
            return
        except OSError:
            n = 0
        if n == 0:
            self.closed_by_server += 1
            self.open -= 1
            self.drop(fd, client)
            return
        now = time.time()
        self.data(client, self.view[:n], now)

    # -- the loop --------------------------------------------------------

    def run(self) -> None:
        stdin_fd = self.stdin.fileno()
        clients = self.clients
        poll = self.epoll.poll
        while True:
            ready = poll(1.0, 4096)
            if self.batch and len(ready) > 1:
                time.sleep(self.batch)
            for fd, events in ready:
                if fd == stdin_fd:
                    chunk = os.read(stdin_fd, 65536)
                    if not chunk:
                        return
                    self.stdin_buf += chunk
                    while b"\n" in self.stdin_buf:
                        line, self.stdin_buf = self.stdin_buf.split(b"\n", 1)
                        if line.strip() and not self.command(json.loads(line)):
                            return
                    continue
                client = clients.get(fd)
                if client is None:
                    continue
                if client.state == "open":
                    if client.slow:
                        if events & _ERR:
                            self.slow_reset_at = time.time()
                            self.open -= 1
                            self.drop(fd, client)
                        continue
                    self.readable(fd, client)
                else:
                    self.handshake_event(fd, client, events)
                    self.fill()
                    self.check_connected()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--role", choices=("bulk", "probe"), required=True)
    parser.add_argument("--source", default="127.0.0.1", help="local address to connect from")
    parser.add_argument("--inflight", type=int, default=64, help="handshakes in progress at once")
    args = parser.parse_args()
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    Loadgen(args.role, args.source, args.inflight).run()


if __name__ == "__main__":
    main()
