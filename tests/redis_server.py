"""Real processes for the Redis tests: a redis-server, and gevent hub processes.

:class:`RedisServer` runs ``redis-server`` on a free 127.0.0.1 port in a
temporary directory, with persistence off, and can stop and restart it on the
same port. :class:`HubProcess` runs a monkey-patched gevent process holding a
``Hub(broker=RedisBroker(...))`` with fake connections that collect the
messages they are sent; the test drives it with one JSON line per request.
Run as a script, this module *is* that hub process.

Every wait has a deadline; nothing sleeps and hopes.
"""

if __name__ == "__main__":  # the hub process: patch before anything else loads
    from gevent import monkey

    monkey.patch_all()

import json
import os
import queue
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time

from tests.support.server import wait_for  # noqa: F401  (the tests use harness.wait_for)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def child_env() -> dict:
    env = dict(os.environ)
    env["PYTHONPATH"] = ROOT + os.pathsep + env.get("PYTHONPATH", "")
    env["PYTHONUNBUFFERED"] = "1"
    return env


class RedisServer:
    """One throwaway redis-server; ``stop()`` and ``start()`` keep its port."""

    def __init__(self, executable: str, port: int | None = None) -> None:
        self.executable = executable
        self.port = port or free_port()
        self.dir = tempfile.mkdtemp(prefix="turbo-gevent-redis-")
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def ping(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as sock:
                sock.sendall(b"PING\r\n")
                return sock.recv(64).startswith(b"+PONG")
        except OSError:
            return False

    def start(self, timeout: float = 10.0) -> None:
        assert self.proc is None, "already running"
        log = open(os.path.join(self.dir, "redis.log"), "ab")
        self.proc = subprocess.Popen(
            [
                self.executable,
                "--port", str(self.port),
                "--bind", "127.0.0.1",
                "--dir", self.dir,
                "--save", "",
                "--appendonly", "no",
                "--daemonize", "no",
                "--loglevel", "warning",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        log.close()
        deadline = time.monotonic() + timeout
        while not self.ping():
            if self.proc.poll() is not None:
                self.proc = None
                raise RuntimeError(f"redis-server exited at start:\n{self.log()}")
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"redis-server did not answer PING within {timeout}s")
            time.sleep(0.02)

    def stop(self, timeout: float = 10.0) -> None:
        proc, self.proc = self.proc, None
        if proc is None:
            return
        proc.terminate()
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout)

    def restart(self) -> None:
        self.stop()
        self.start()

    def close(self) -> None:
        try:
            self.stop()
        finally:
            shutil.rmtree(self.dir, ignore_errors=True)

    def log(self) -> str:
        try:
            with open(os.path.join(self.dir, "redis.log"), errors="replace") as f:
                return f.read()
        except OSError:
            return ""


def running_redis():
    """Fixture body: a started :class:`RedisServer`, closed at teardown.

    Skips when ``redis-server`` is not installed.
    """
    import pytest

    executable = shutil.which("redis-server")
    if executable is None:
        if os.environ.get("CI"):
            pytest.fail("redis-server is not installed: .ci/run must install it")
        pytest.skip("redis-server is not installed")
    server = RedisServer(executable)
    try:
        server.start()
        yield server
    finally:
        server.close()


class HubProcess:
    """A gevent process with a hub on a RedisBroker, driven over its stdin.

    ``ready`` is its first answer: ``{"ok": True}`` once the broker listens,
    or ``{"ok": False, "error": ..., "message": ...}`` when ``start`` raised.
    """

    def __init__(self, url: str, prefix: str = "turbo_gevent", timeout: float = 20.0,
                 refresh_on_reconnect: bool = False, **broker_options) -> None:
        self.stderr = tempfile.TemporaryFile()
        hub_options = {"refresh_on_reconnect": refresh_on_reconnect}
        self.proc = subprocess.Popen(
            [sys.executable, os.path.abspath(__file__), url, prefix,
             json.dumps(hub_options), json.dumps(broker_options)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self.stderr,
            cwd=ROOT,
            env=child_env(),
        )
        self._lines: queue.Queue = queue.Queue()
        threading.Thread(target=self._read_lines, daemon=True).start()
        self.ready = self._answer(timeout)

    def _read_lines(self) -> None:
        for line in self.proc.stdout:
            self._lines.put(line)
        self._lines.put(None)

    def _answer(self, timeout: float) -> dict:
        try:
            line = self._lines.get(timeout=timeout)
        except queue.Empty:
            raise AssertionError(f"the hub process did not answer within {timeout}s") from None
        if line is None:
            raise AssertionError(f"the hub process exited:\n{self.stderr_text()}")
        return json.loads(line)

    def request(self, op: str, timeout: float = 20.0, **arguments) -> dict:
        self.proc.stdin.write(json.dumps({"op": op, **arguments}).encode() + b"\n")
        self.proc.stdin.flush()
        return self._answer(timeout)

    # conveniences

    def add(self, name: str, streams=(), user=None, broken=False) -> None:
        assert self.request("add", name=name, streams=list(streams), user=user, broken=broken)["ok"]

    def broadcast(self, method: str, *args) -> dict:
        return self.request("broadcast", method=method, args=list(args))

    def wait_messages(self, name: str, count: int, timeout: float = 10.0) -> list:
        answer = self.request("wait", timeout=timeout + 10, name=name, count=count, within=timeout)
        assert answer["ok"], f"{name} got {len(answer['messages'])} of {count} messages"
        return answer["messages"]

    def messages(self, name: str) -> list:
        return self.request("wait", name=name, count=0, within=0)["messages"]

    def stderr_text(self) -> str:
        self.stderr.seek(0)
        return self.stderr.read().decode(errors="replace")

    def close(self) -> None:
        if self.proc.poll() is None:
            try:
                self.proc.stdin.write(b'{"op": "quit"}\n')
                self.proc.stdin.flush()
                self.proc.wait(10)
            except (OSError, subprocess.TimeoutExpired):
                self.proc.kill()
                self.proc.wait(10)
        self.proc.stdin.close()
        self.proc.stdout.close()
        self.stderr.close()

    def __enter__(self) -> "HubProcess":
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()


# -- the hub process ----------------------------------------------------------


def decode_text_frame(frame: bytes) -> str:
    """The payload of one unmasked text frame, as the hub encodes it."""
    assert frame[0] == 0x81, "expected a final text frame"
    length, offset = frame[1] & 0x7F, 2
    if length == 126:
        length, offset = int.from_bytes(frame[2:4], "big"), 4
    elif length == 127:
        length, offset = int.from_bytes(frame[2:10], "big"), 10
    payload = frame[offset:]
    assert len(payload) == length
    return payload.decode("utf-8")


def _hub_main(url: str, prefix: str, hub_options: dict, broker_options: dict) -> None:
    import logging

    import gevent
    from gevent.event import Event
    from gevent.fileobject import FileObjectPosix

    from turbo_gevent.errors import BrokerError
    from turbo_gevent.hub import Hub
    from turbo_gevent.redis_broker import RedisBroker

    records: list = []

    class Collect(logging.Handler):
        def emit(self, record):
            records.append(
                {"level": record.levelname, "message": record.getMessage(),
                 "traceback": record.exc_info is not None}
            )

    logger = logging.getLogger("turbo_gevent")
    logger.setLevel(logging.DEBUG)
    logger.addHandler(Collect())
    logging.basicConfig(level=logging.INFO, stream=sys.stderr)

    changed = Event()  # set whenever something a waiter may wait for happens
    reconnects = []

    class FakeConnection:
        def __init__(self, streams, user_id, broken):
            self.streams = tuple(streams)
            self.user_id = user_id
            self.broken = broken
            self.messages = []

        def send_frame(self, frame):
            if self.broken:
                raise RuntimeError("a broken connection")
            self.messages.append(decode_text_frame(frame))
            changed.set()

    class RecordingBroker(RedisBroker):
        def start(self, deliver, on_reconnect):
            def reconnected():
                reconnects.append(time.monotonic())
                changed.set()
                on_reconnect()

            super().start(deliver, reconnected)

    broker = RecordingBroker(url, channel_prefix=prefix, **broker_options)
    hub = Hub(broker=broker, **hub_options)
    connections: dict = {}

    def reply(**answer):
        sys.stdout.write(json.dumps(answer) + "\n")
        sys.stdout.flush()

    try:
        hub.start()
    except BrokerError as exc:
        reply(ok=False, error=type(exc).__name__, message=str(exc))
        return
    reply(ok=True, pid=os.getpid())

    def wait_until(condition, timeout):
        deadline = time.monotonic() + timeout
        while not condition():
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            changed.clear()
            changed.wait(min(remaining, 0.05))
        return True

    stdin = FileObjectPosix(sys.stdin.fileno(), "rb", close=False)
    for line in stdin:
        request = json.loads(line)
        op = request["op"]
        if op == "quit":
            broker.stop()
            return
        if op == "add":
            connection = FakeConnection(request["streams"], request["user"], request["broken"])
            connections[request["name"]] = connection
            hub.add(connection)
            reply(ok=True)
        elif op == "broadcast":
            started = time.monotonic()
            try:
                getattr(hub, request["method"])(*request["args"])
            except Exception as exc:
                reply(ok=False, error=type(exc).__name__, message=str(exc),
                      elapsed=time.monotonic() - started)
            else:
                reply(ok=True, elapsed=time.monotonic() - started)
        elif op == "wait":
            connection = connections[request["name"]]
            ok = wait_until(lambda: len(connection.messages) >= request["count"], request["within"])
            reply(ok=ok, messages=connection.messages)
        elif op == "wait_reconnects":
            ok = wait_until(lambda: len(reconnects) >= request["count"], request["within"])
            reply(ok=ok, reconnects=len(reconnects))
        elif op == "state":
            reply(ok=True, listening=broker.listening, reconnects=len(reconnects),
                  logs=records)
        elif op == "stop":
            broker.stop()
            reply(ok=True, listening=broker.listening)
        else:
            reply(ok=False, error="unknown op")
        gevent.sleep(0)


if __name__ == "__main__":
    _hub_main(sys.argv[1], sys.argv[2], json.loads(sys.argv[3]), json.loads(sys.argv[4]))
