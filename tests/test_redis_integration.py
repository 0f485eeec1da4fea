"""Several server processes behind one real Redis, with real WebSocket clients."""

import subprocess
import sys

import pytest

from tests import redis_server as harness
from tests.support.rawws import RawClient
from tests.support.server import ROOT, TEST_SECRET, wait_for
from turbo_gevent.tokens import StreamSigner

token = "stream=" + StreamSigner(TEST_SECRET).sign("chat")


@pytest.fixture
def redis():
    yield from harness.running_redis()


@pytest.fixture
def two_servers(redis, make_server_process):
    config = {"redis_url": redis.url, "channel_prefix": "it"}
    return make_server_process(config), make_server_process(config)


def clients_on(*servers):
    clients = [RawClient(server.port, query=token) for server in servers]
    assert [c.status for c in clients] == [101] * len(clients)
    for server in servers:
        server.wait_connections(1)
    return clients


def test_a_broadcast_in_one_process_reaches_clients_of_both(two_servers):
    one, two = two_servers
    a, b = clients_on(one, two)
    assert one.broadcast("chat", "<p>from one</p>") == (200, "ok")
    assert a.recv_frame()[2] == b.recv_frame()[2] == b"<p>from one</p>"
    two.broadcast_all("<p>all from two</p>")
    assert a.recv_frame()[2] == b.recv_frame()[2] == b"<p>all from two</p>"


def test_publisher_in_a_plain_process_reaches_both(two_servers, redis):
    one, two = two_servers
    a, b = clients_on(one, two)
    script = (
        "import sys\n"
        "from turbo_gevent import Publisher, streams\n"
        "assert 'gevent.monkey' not in sys.modules or not __import__('gevent.monkey').monkey.is_anything_patched()\n"
        f"with Publisher({redis.url!r}, channel_prefix='it') as publisher:\n"
        "    publisher.broadcast('chat', streams.append('messages', '<p>from a script</p>'))\n"
    )
    subprocess.run([sys.executable, "-c", script], cwd=ROOT, check=True, timeout=30)
    expected = b'<turbo-stream action="append" target="messages"><template><p>from a script</p></template></turbo-stream>'
    assert a.recv_frame()[2] == b.recv_frame()[2] == expected


def test_a_one_megabyte_fragment_and_a_thousand_in_order(two_servers, redis):
    one, two = two_servers
    a, b = clients_on(one, two)
    big = "<p>" + "é" * 500_000 + "</p>"
    assert one.broadcast("chat", big) == (200, "ok")
    assert a.recv_frame()[2].decode() == b.recv_frame()[2].decode() == big
    script = (
        "from turbo_gevent import Publisher\n"
        f"with Publisher({redis.url!r}, channel_prefix='it') as publisher:\n"
        "    for i in range(1000):\n"
        "        publisher.broadcast('chat', f'<p>{i}</p>')\n"
    )
    subprocess.run([sys.executable, "-c", script], cwd=ROOT, check=True, timeout=60)
    for client in (a, b):
        assert [client.recv_frame()[2] for _ in range(1000)] == [f"<p>{i}</p>".encode() for i in range(1000)]


def test_redis_outage_raises_then_resumes_with_a_refresh(two_servers, redis):
    one, two = two_servers
    a, b = clients_on(one, two)
    redis.stop()
    status, body = one.broadcast("chat", "<p>lost</p>")
    assert status == 503 and body.startswith("BrokerError")  # raised at once, to the caller
    redis.start()
    # Each process resubscribes and asks its pages to refresh.
    refresh = b'<turbo-stream action="refresh"></turbo-stream>'
    assert a.recv_frame(timeout=20)[2] == refresh
    assert b.recv_frame(timeout=20)[2] == refresh
    wait_for(lambda: one.broadcast("chat", "<p>back</p>") == (200, "ok"), 10, message="publishing again")
    assert a.recv_frame()[2] == b.recv_frame()[2] == b"<p>back</p>"
    assert "Traceback" not in one.stderr() + two.stderr()


def test_redis_down_at_the_first_connection_is_a_503_then_works(redis, make_server_process):
    redis.stop()
    server = make_server_process({"redis_url": redis.url, "channel_prefix": "down"})
    refused = RawClient(server.port, query=token)
    assert refused.status == 503
    assert refused.headers["retry-after"].isdigit()
    assert int(refused.headers["content-length"]) == len(refused.buffer)
    redis.start()
    client = RawClient(server.port, query=token)
    assert client.status == 101
    server.wait_connections(1)  # the refused one was never counted
    assert server.broadcast("chat", "<p>up</p>") == (200, "ok")
    assert client.recv_frame()[2] == b"<p>up</p>"
    assert "Traceback" not in server.stderr()
