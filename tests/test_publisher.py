"""Publisher: broadcasting from a plain Python process to the serving processes."""

import subprocess
import sys
import time

import pytest
import redis

from tests import redis_server as harness
from tests.redis_server import HubProcess
from turbo_gevent import wire
from turbo_gevent.errors import BrokerError, ConfigurationError
from turbo_gevent.publisher import Publisher


@pytest.fixture(scope="module")
def redis_server():
    yield from harness.running_redis()


class Html:
    def __init__(self, text):
        self.text = text

    def __html__(self):
        return self.text


# -- arguments, checked before anything connects ---------------------------------

UNREACHABLE = "redis://127.0.0.1:9/0"  # nothing listens on the discard port


@pytest.mark.parametrize(
    "method, args, error",
    [
        ("broadcast", ("", "<p>x</p>"), ValueError),
        ("broadcast", (None, "<p>x</p>"), ValueError),
        ("broadcast", ("s",), ValueError),
        ("broadcast", ("s", 42), TypeError),
        ("broadcast_all", (), ValueError),
        ("broadcast_to_user", (None, "<p>x</p>"), ValueError),
        ("broadcast_to_user", ("7",), ValueError),
    ],
)
def test_bad_arguments_raise_before_connecting(method, args, error):
    with Publisher(UNREACHABLE) as publisher:
        with pytest.raises(error):
            getattr(publisher, method)(*args)
        assert publisher._client is None


@pytest.mark.parametrize(
    "kwargs",
    [{"channel_prefix": ""}, {"connect_timeout": 0}, {"socket_timeout": -1}, {"socket_timeout": "2"}],
)
def test_bad_settings_raise_at_construction(kwargs):
    with pytest.raises(ConfigurationError):
        Publisher("redis://localhost", **kwargs)


def test_redis_down_raises_broker_error_at_once():
    url = f"redis://:s3cret@127.0.0.1:{harness.free_port()}/0"
    with Publisher(url) as publisher:
        started = time.monotonic()
        with pytest.raises(BrokerError) as caught:
            publisher.broadcast_all("<p>x</p>")
        assert time.monotonic() - started < 3
    assert "redis://:***@127.0.0.1:" in str(caught.value)
    assert "s3cret" not in str(caught.value)
    assert "s3cret" not in repr(publisher)


# -- on the wire ---------------------------------------------------------------


def test_messages_on_the_wire(redis_server):
    with redis.Redis.from_url(redis_server.url) as client, client.pubsub() as pubsub:
        pubsub.subscribe("wire-test:messages")
        assert pubsub.get_message(timeout=5)["type"] == "subscribe"
        with Publisher(redis_server.url, channel_prefix="wire-test") as publisher:
            publisher.broadcast("room", "<p>a</p>", Html("<p>b</p>"))
            publisher.broadcast_all("<p>ünïcode ✓</p>")
            publisher.broadcast_to_user(42, "<p>c</p>")
        received = []
        deadline = time.monotonic() + 5
        while len(received) < 3 and time.monotonic() < deadline:
            message = pubsub.get_message(timeout=0.5)
            if message and message["type"] == "message":
                received.append(wire.decode(message["data"]))
        assert received == [
            ("stream", "room", "<p>a</p><p>b</p>"),
            ("all", None, "<p>ünïcode ✓</p>"),
            ("user", "42", "<p>c</p>"),
        ]


def test_close_and_reuse(redis_server):
    publisher = Publisher(redis_server.url)
    with publisher:
        publisher.broadcast_all("<p>x</p>")
        assert publisher._client is not None
    assert publisher._client is None
    publisher.broadcast_all("<p>reconnects</p>")  # a later call reconnects
    publisher.close()
    publisher.close()


# -- into a serving process ------------------------------------------------------

PLAIN_SCRIPT = r"""
import socket, sys
from turbo_gevent.publisher import Publisher

url, prefix, count = sys.argv[1], sys.argv[2], int(sys.argv[3])
with Publisher(url, channel_prefix=prefix) as publisher:
    publisher.broadcast("news", "<p>from a script</p>")
    publisher.broadcast_to_user("u1", "<p>for u1</p>")
    publisher.broadcast_all("<p>for everyone</p>")
    for i in range(count):
        publisher.broadcast("seq", f"<p>{i}</p>")
# Plain Python: nothing was monkey-patched behind the script's back.
assert socket.socket.__module__ == "socket", socket.socket
assert "gevent.monkey" not in sys.modules or not sys.modules["gevent.monkey"].is_anything_patched()
print("sent")
"""


def run_plain_publisher(url, prefix, count=0):
    result = subprocess.run(
        [sys.executable, "-c", PLAIN_SCRIPT, url, prefix, str(count)],
        capture_output=True, text=True, timeout=60, cwd=harness.ROOT, env=harness.child_env(),
    )
    assert result.returncode == 0 and result.stdout.strip() == "sent", result.stderr


def test_a_plain_process_reaches_a_hub(redis_server):
    with HubProcess(redis_server.url, "plain") as hub:
        hub.add("reader", ["news"])
        hub.add("user", [], user="u1")
        hub.add("other", ["elsewhere"], user="u2")
        run_plain_publisher(redis_server.url, "plain")
        assert hub.wait_messages("reader", 2) == ["<p>from a script</p>", "<p>for everyone</p>"]
        assert hub.wait_messages("user", 2) == ["<p>for u1</p>", "<p>for everyone</p>"]
        assert hub.wait_messages("other", 1) == ["<p>for everyone</p>"]


def test_a_thousand_messages_arrive_in_order(redis_server):
    with HubProcess(redis_server.url, "seq") as hub:
        hub.add("reader", ["seq"])
        run_plain_publisher(redis_server.url, "seq", count=1000)
        expected = ["<p>for everyone</p>"] + [f"<p>{i}</p>" for i in range(1000)]
        assert hub.wait_messages("reader", 1001, timeout=30) == expected


def test_another_prefix_reaches_nobody(redis_server):
    with HubProcess(redis_server.url, "mine") as hub:
        hub.add("reader", ["news"])
        run_plain_publisher(redis_server.url, "theirs")
        with Publisher(redis_server.url, channel_prefix="mine") as publisher:
            publisher.broadcast("news", "<p>marker</p>")
        assert hub.wait_messages("reader", 1) == ["<p>marker</p>"]
