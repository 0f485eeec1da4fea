"""RedisBroker and the wire format, against a real redis-server.

The serving side runs in gevent subprocesses (:class:`HubProcess`), since
this pytest process is not monkey-patched; their connections are fakes that
collect the messages the hub sends them.
"""

import socket
import subprocess
import sys
import threading
import time

import pytest
import redis

from tests import redis_server as harness
from tests.redis_server import HubProcess
from turbo_gevent import wire
from turbo_gevent.errors import BrokerError, ConfigurationError
from turbo_gevent.publisher import Publisher, redact_url
from turbo_gevent.redis_broker import RedisBroker


@pytest.fixture(scope="module")
def redis_server():
    """One Redis for the tests that never stop it."""
    yield from harness.running_redis()


@pytest.fixture
def own_redis():
    """A Redis this test may stop and restart."""
    yield from harness.running_redis()


def numsub(url, channel):
    with redis.Redis.from_url(url) as client:
        return dict(client.pubsub_numsub(channel))[channel.encode()]


# -- the wire format -----------------------------------------------------------


@pytest.mark.parametrize(
    "kind, key, message",
    [
        ("stream", "messages", '<turbo-stream action="append"></turbo-stream>'),
        ("stream", "room:1:2", "colons in the key"),
        ("stream", "ключ ✓", "unicode key 🚀 and message, also \x00 and \r\n"),
        ("all", None, "<turbo-stream action=\"refresh\"></turbo-stream>"),
        ("user", "42", "for one user"),
        ("user", "", "an empty user id still round-trips"),
        ("stream", "s", ""),
        ("stream", "big", "é" * 600_000),
    ],
)
def test_wire_round_trip(kind, key, message):
    data = wire.encode(kind, key, message)
    assert isinstance(data, bytes)
    assert wire.decode(data) == (kind, key, message)


def test_wire_is_compact_and_readable():
    assert wire.encode("stream", "messages", "<p>hi</p>") == b"TG1s8:messages<p>hi</p>"
    assert wire.encode("all", None, "x") == b"TG1a0:x"
    assert wire.encode("user", "é", "x") == "TG1u2:éx".encode()
    assert wire.channel_name("chat") == "chat:messages"


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"hello",
        b"TG1",
        b"TG2s1:ab",
        b"TG1x1:ab",
        b"TG1s:ab",
        b"TG1s-1:ab",
        b"TG1s99:ab",
        b"TG1s12345678901:ab",
        b"TG1a1:kx",
        b"TG1s1:\xff",
        b"TG1s1:a\xff",
        "TG1s1:ab",
    ],
)
def test_wire_rejects_anything_else(data):
    with pytest.raises(ValueError):
        wire.decode(data)


@pytest.mark.parametrize(
    "kind, key", [("nope", "k"), ("stream", None), ("user", None), ("all", "k")]
)
def test_wire_refuses_to_encode_nonsense(kind, key):
    with pytest.raises(ValueError):
        wire.encode(kind, key, "m")


# -- settings ------------------------------------------------------------------


@pytest.mark.parametrize(
    "url, expected",
    [
        ("redis://localhost:6379/0", "redis://localhost:6379/0"),
        ("redis://:s3cret@localhost:6379/0", "redis://:***@localhost:6379/0"),
        ("redis://bob:s3cret@localhost/1", "redis://bob:***@localhost/1"),
        ("rediss://bob:p%40ss@[::1]:6380", "rediss://bob:***@[::1]:6380"),
        ("redis://bob@localhost", "redis://bob@localhost"),
        ("redis://localhost?password=s3cret&db=2", "redis://localhost?password=***&db=2"),
        ("unix://:s3cret@/tmp/redis.sock?db=1", "unix://:***@/tmp/redis.sock?db=1"),
        ("unix:///tmp/redis.sock?db=1&password=s3cret", "unix:///tmp/redis.sock?db=1&password=***"),
        ("unix:///tmp/redis.sock?db=1", "unix:///tmp/redis.sock?db=1"),
    ],
)
def test_redact_url(url, expected):
    assert redact_url(url) == expected


@pytest.mark.parametrize(
    "args, kwargs, error",
    [
        (("localhost:6379",), {}, ConfigurationError),
        (("http://localhost",), {}, ConfigurationError),
        ((b"redis://localhost",), {}, TypeError),
        (("redis://localhost",), {"channel_prefix": ""}, ConfigurationError),
        (("redis://localhost",), {"channel_prefix": None}, ConfigurationError),
        (("redis://localhost",), {"connect_timeout": 0}, ConfigurationError),
        (("redis://localhost",), {"socket_timeout": None}, ConfigurationError),
        (("redis://localhost",), {"ping_interval": -1}, ConfigurationError),
        (("redis://localhost",), {"reconnect_delay": 1, "reconnect_delay_max": 0.5}, ConfigurationError),
    ],
)
def test_settings_are_checked_at_construction(args, kwargs, error):
    with pytest.raises(error):
        RedisBroker(*args, **kwargs)


def test_configuration_error_hides_the_password():
    with pytest.raises(ValueError) as caught:
        RedisBroker("http://:s3cret@localhost")
    assert "s3cret" not in str(caught.value)


def test_nothing_connects_at_construction():
    broker = RedisBroker(f"redis://127.0.0.1:{harness.free_port()}/0")
    assert not broker.listening
    assert "RedisBroker('redis://127.0.0.1:" in repr(broker)


def test_a_missing_redis_says_which_extra_to_install(monkeypatch):
    for name in ("redis", "redis.backoff", "redis.retry"):
        monkeypatch.setitem(sys.modules, name, None)
    with pytest.raises(ImportError, match=r"pip install turbo_gevent\[redis\]"):
        RedisBroker("redis://localhost")
    with pytest.raises(ImportError, match=r"pip install turbo_gevent\[redis\]"):
        Publisher("redis://localhost")


# -- failing fast --------------------------------------------------------------


def test_start_with_redis_down_raises_broker_error_naming_the_url():
    port = harness.free_port()
    broker = RedisBroker(f"redis://:s3cret@127.0.0.1:{port}/0")
    started = time.monotonic()
    with pytest.raises(BrokerError) as caught:
        broker.start(lambda *message: None, lambda: None)
    assert time.monotonic() - started < 3
    text = str(caught.value)
    assert f"redis://:***@127.0.0.1:{port}/0" in text
    assert "s3cret" not in text
    assert not broker.listening


class ScriptedServer:
    """A TCP server that counts connections and either hangs up or stays silent."""

    def __init__(self, hang_up: bool) -> None:
        self.hang_up = hang_up
        self.accepted = 0
        self.held = []
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            self.accepted += 1
            if self.hang_up:
                conn.close()
            else:
                self.held.append(conn)

    def close(self) -> None:
        self.listener.close()
        for conn in self.held:
            conn.close()


def test_publish_is_never_retried():
    server = ScriptedServer(hang_up=True)
    try:
        # The detector works: redis-py's default client reconnects silently.
        with redis.Redis(port=server.port, socket_timeout=1) as default_client:
            with pytest.raises(redis.ConnectionError):
                default_client.publish("c", "m")
        assert server.accepted > 1
        server.accepted = 0

        broker = RedisBroker(f"redis://127.0.0.1:{server.port}/0")
        with pytest.raises(BrokerError):
            broker.publish("stream", "s", "m")
        assert server.accepted == 1
        with Publisher(f"redis://127.0.0.1:{server.port}/0") as publisher:
            with pytest.raises(BrokerError):
                publisher.broadcast("s", "m")
        assert server.accepted == 2
    finally:
        server.close()


def test_start_is_never_retried():
    server = ScriptedServer(hang_up=True)
    try:
        broker = RedisBroker(f"redis://127.0.0.1:{server.port}/0")
        with pytest.raises(BrokerError):
            broker.start(lambda *message: None, lambda: None)
        assert server.accepted == 1
    finally:
        server.close()


def test_a_silent_server_cannot_hang_a_publish():
    server = ScriptedServer(hang_up=False)
    try:
        broker = RedisBroker(f"redis://127.0.0.1:{server.port}/0", socket_timeout=0.5)
        started = time.monotonic()
        with pytest.raises(BrokerError):
            broker.publish("all", None, "m")
        assert time.monotonic() - started < 2.5
        assert server.accepted == 1
    finally:
        server.close()


# -- across processes ----------------------------------------------------------


def test_broadcasts_reach_every_process(redis_server):
    with HubProcess(redis_server.url) as a, HubProcess(redis_server.url) as b:
        assert a.ready["ok"] and b.ready["ok"]
        a.add("a-room", ["room"], user="7")
        a.add("a-other", ["other"])
        b.add("b-room", ["room", "other"], user="7")
        b.add("b-anon", ["lobby"])

        assert a.broadcast("broadcast", "room", "<p>to room</p>")["ok"]
        assert a.wait_messages("a-room", 1) == ["<p>to room</p>"]
        assert b.wait_messages("b-room", 1) == ["<p>to room</p>"]

        assert b.broadcast("broadcast_to_user", 7, "<p>to user 7</p>")["ok"]
        assert a.wait_messages("a-room", 2)[1] == "<p>to user 7</p>"
        assert b.wait_messages("b-room", 2)[1] == "<p>to user 7</p>"

        assert b.broadcast("broadcast_all", "<p>to all</p>")["ok"]
        for hub, name, count in ((a, "a-room", 3), (a, "a-other", 1), (b, "b-room", 3), (b, "b-anon", 1)):
            assert hub.wait_messages(name, count)[-1] == "<p>to all</p>"
        # What was not for them never arrived: all is ordered after it.
        assert a.messages("a-other") == ["<p>to all</p>"]
        assert b.messages("b-anon") == ["<p>to all</p>"]


def test_one_subscription_per_process_and_stop_ends_it(redis_server):
    channel = "numsub:messages"
    with HubProcess(redis_server.url, "numsub") as a, HubProcess(redis_server.url, "numsub") as b:
        for i in range(5):
            a.add(f"a{i}", ["s"])
            b.add(f"b{i}", ["s"], user=str(i))
        assert numsub(redis_server.url, channel) == 2
        assert a.request("stop") == {"ok": True, "listening": False}
        harness.wait_for(lambda: numsub(redis_server.url, channel) == 1, 5, "one subscriber left")
        assert b.broadcast("broadcast", "s", "still here")["ok"]
        assert b.wait_messages("b0", 1) == ["still here"]


def test_prefixes_isolate_applications(redis_server):
    with HubProcess(redis_server.url, "app1") as one, HubProcess(redis_server.url, "app2") as two:
        one.add("c", ["s"])
        two.add("c", ["s"])
        assert one.broadcast("broadcast", "s", "for app1")["ok"]
        assert one.broadcast("broadcast_all", "all of app1")["ok"]
        assert two.broadcast("broadcast", "s", "for app2")["ok"]
        assert one.wait_messages("c", 2) == ["for app1", "all of app1"]
        assert two.wait_messages("c", 1) == ["for app2"]
        assert one.broadcast("broadcast", "s", "marker")["ok"]
        assert one.wait_messages("c", 3)[-1] == "marker"
        assert two.messages("c") == ["for app2"]


def test_a_one_megabyte_fragment_passes(redis_server):
    fragment = "<p>" + "é✓ " * 350_000 + "</p>"
    assert len(fragment.encode()) > 1_000_000
    with HubProcess(redis_server.url) as a, HubProcess(redis_server.url) as b:
        b.add("c", ["big"])
        answer = a.broadcast("broadcast", "big", fragment, "<p>tail</p>")
        assert answer["ok"], answer
        assert b.wait_messages("c", 1) == [fragment + "<p>tail</p>"]


def test_order_holds_across_processes(redis_server):
    """A broadcast made after another one returned is delivered after it."""
    with HubProcess(redis_server.url) as a, HubProcess(redis_server.url) as watcher, \
            Publisher(redis_server.url) as publisher:
        watcher.add("c", ["order"])
        expected = []
        for i in range(40):
            publisher.broadcast("order", f"publisher {i}")
            assert a.broadcast("broadcast", "order", f"hub {i}")["ok"]
            expected += [f"publisher {i}", f"hub {i}"]
        assert watcher.wait_messages("c", len(expected)) == expected


def test_a_hub_process_cannot_start_without_redis():
    url = f"redis://user:s3cret@127.0.0.1:{harness.free_port()}/0"
    with HubProcess(url) as hub:
        assert hub.ready["ok"] is False
        assert hub.ready["error"] == "BrokerError"
        assert "user:***@127.0.0.1" in hub.ready["message"]
        assert "s3cret" not in hub.ready["message"]


def test_an_outage_fails_fast_then_heals(own_redis):
    with HubProcess(own_redis.url, reconnect_delay=0.05, reconnect_delay_max=0.4) as hub, \
            Publisher(own_redis.url) as publisher:
        hub.add("c", ["s"], user="1")
        assert hub.broadcast("broadcast", "s", "before")["ok"]
        assert hub.wait_messages("c", 1) == ["before"]

        own_redis.stop()
        started = time.monotonic()
        answer = hub.request("broadcast", timeout=10, method="broadcast", args=["s", "during"])
        assert time.monotonic() - started < 5
        assert answer["ok"] is False and answer["error"] == "BrokerError"
        assert answer["elapsed"] < 3
        assert own_redis.url in answer["message"]
        with pytest.raises(BrokerError):
            publisher.broadcast("s", "during")
        # Let the listener fail to resubscribe several times.
        harness.wait_for(
            lambda: sum(r["message"].startswith("still cannot") for r in hub.request("state")["logs"]) >= 3,
            10, "several failed attempts to resubscribe",
        )
        assert hub.request("state")["reconnects"] == 0

        own_redis.start()
        answer = hub.request("wait_reconnects", count=1, within=10)
        assert answer == {"ok": True, "reconnects": 1}
        publisher.broadcast("s", "after")
        assert hub.broadcast("broadcast_to_user", "1", "after, from the hub")["ok"]
        assert hub.wait_messages("c", 3) == ["before", "after", "after, from the hub"]

        state = hub.request("state")
        assert state["listening"] and state["reconnects"] == 1
        logs = state["logs"]
        warnings = [r for r in logs if r["level"] == "WARNING"]
        assert len(warnings) == 1 and warnings[0]["message"].startswith("lost the subscription")
        assert not any(r["traceback"] for r in logs)
        assert not any(r["level"] in ("ERROR", "CRITICAL") for r in logs)
        assert sum(r["message"].startswith("resubscribed") for r in logs) == 1
        assert numsub(own_redis.url, "turbo_gevent:messages") == 1


def test_every_outage_calls_on_reconnect_once(own_redis):
    with HubProcess(own_redis.url, reconnect_delay=0.05) as hub:
        hub.add("c", ["s"])
        for outage in (1, 2):
            own_redis.restart()
            assert hub.request("wait_reconnects", count=outage, within=10)["reconnects"] == outage
            assert hub.broadcast("broadcast", "s", f"after outage {outage}")["ok"]
            assert hub.wait_messages("c", outage)[-1] == f"after outage {outage}"
        state = hub.request("state")
        assert state["reconnects"] == 2
        assert sum(r["level"] == "WARNING" for r in state["logs"]) == 2


def test_after_an_outage_the_hub_asks_every_page_to_refresh(own_redis):
    with HubProcess(own_redis.url, refresh_on_reconnect=True, reconnect_delay=0.05) as hub:
        hub.add("page1", ["s"])
        hub.add("page2", [], user="9")
        own_redis.restart()
        assert hub.request("wait_reconnects", count=1, within=10)["reconnects"] == 1
        refresh = '<turbo-stream action="refresh"></turbo-stream>'
        assert hub.wait_messages("page1", 1) == [refresh]
        assert hub.wait_messages("page2", 1) == [refresh]


class FreezingProxy:
    """A TCP relay to Redis that can stop relaying, like a network partition."""

    def __init__(self, port: int) -> None:
        self.target = ("127.0.0.1", port)
        self.thawed = threading.Event()
        self.thawed.set()
        self.sockets = []
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.url = f"redis://127.0.0.1:{self.listener.getsockname()[1]}/0"
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
                upstream = socket.create_connection(self.target)
            except OSError:
                return
            self.sockets += [client, upstream]
            for src, dst in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._relay, args=(src, dst), daemon=True).start()

    def _relay(self, src, dst) -> None:
        try:
            while data := src.recv(65536):
                self.thawed.wait()
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for sock in (src, dst):
                try:
                    sock.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def close(self) -> None:
        self.thawed.set()
        self.listener.close()
        for sock in self.sockets:
            sock.close()


def test_a_silently_dead_connection_is_found_by_ping(redis_server):
    """A partition sends no FIN: the unanswered PING finds it."""
    proxy = FreezingProxy(redis_server.port)
    try:
        with HubProcess(proxy.url, "frozen", ping_interval=0.2, socket_timeout=0.5,
                        reconnect_delay=0.05) as hub:
            hub.add("c", ["s"])
            proxy.thawed.clear()
            harness.wait_for(
                lambda: any("PING" in r["message"] for r in hub.request("state")["logs"]),
                10, "the listener to notice",
            )
            assert hub.request("state")["reconnects"] == 0
            proxy.thawed.set()
            assert hub.request("wait_reconnects", count=1, within=10)["reconnects"] == 1
            assert hub.broadcast("broadcast", "s", "alive")["ok"]
            assert hub.wait_messages("c", 1) == ["alive"]
            logs = hub.request("state")["logs"]
            warnings = [r for r in logs if r["level"] == "WARNING"]
            assert len(warnings) == 1 and "no answer to PING" in warnings[0]["message"]
    finally:
        proxy.close()


def test_undecodable_messages_are_logged_and_skipped(redis_server):
    with HubProcess(redis_server.url, "garbage") as hub:
        hub.add("c", ["s"])
        with redis.Redis.from_url(redis_server.url) as client:
            client.publish("garbage:messages", b"not ours")
            client.publish("garbage:messages", b"TG1s1:s\xff\xfe")
            client.publish("garbage:messages", wire.encode("stream", "s", "good"))
        assert hub.wait_messages("c", 1) == ["good"]
        state = hub.request("state")
        assert state["listening"]
        skipped = [r for r in state["logs"] if r["message"].startswith("skipped")]
        assert len(skipped) == 2 and all(r["level"] == "WARNING" for r in skipped)


def test_an_error_while_delivering_does_not_kill_the_listener(redis_server):
    with HubProcess(redis_server.url, "broken") as hub:
        hub.add("bad", ["bad"], broken=True)
        hub.add("good", ["good"])
        assert hub.broadcast("broadcast", "bad", "boom")["ok"]
        assert hub.broadcast("broadcast", "good", "fine")["ok"]
        assert hub.wait_messages("good", 1) == ["fine"]
        state = hub.request("state")
        assert state["listening"] and state["reconnects"] == 0
        errors = [r for r in state["logs"] if r["level"] == "ERROR"]
        assert len(errors) == 1 and errors[0]["traceback"]


FORK_SCRIPT = r"""
from gevent import monkey
monkey.patch_all()

import os, sys, time
import gevent
import redis
from turbo_gevent.hub import Hub
from turbo_gevent.redis_broker import RedisBroker

class Fake:
    def __init__(self):
        self.streams, self.user_id, self.frames = ("f",), None, []
    def send_frame(self, frame):
        self.frames.append(frame)

def received(connection, text):
    deadline = time.monotonic() + 10
    while not any(text.encode() in frame for frame in connection.frames):
        if time.monotonic() > deadline:
            return False
        gevent.sleep(0.01)
    return True

url = sys.argv[1]
hub = Hub(broker=RedisBroker(url, channel_prefix="fork"), refresh_on_reconnect=False)
mine = Fake()
hub.add(mine)  # starts the broker in the parent
hub.broadcast("f", "before the fork")
assert received(mine, "before the fork")

pid = os.fork()
if pid == 0:
    code = 1
    try:
        theirs = Fake()
        hub.add(theirs)  # the copied hub believes it started already
        hub.broadcast("f", "from the child")  # the broker notices the fork
        if received(theirs, "from the child") and received(theirs, "from the parent"):
            numsub = dict(redis.Redis.from_url(url).pubsub_numsub("fork:messages"))
            code = 0 if numsub[b"fork:messages"] == 2 else 3
    finally:
        os._exit(code)

assert received(mine, "from the child"), "the parent's listener broke"
hub.broadcast("f", "from the parent")
_, status = os.waitpid(pid, 0)
assert os.waitstatus_to_exitcode(status) == 0, status
hub.broadcast("f", "after the child left")
assert received(mine, "after the child left"), "the child closed the parent's socket"
print("OK")
"""


def test_a_forked_process_subscribes_on_its_own(redis_server):
    result = subprocess.run(
        [sys.executable, "-c", FORK_SCRIPT, redis_server.url],
        capture_output=True, text=True, timeout=60, cwd=harness.ROOT, env=harness.child_env(),
    )
    assert result.returncode == 0 and result.stdout.strip() == "OK", result.stderr
