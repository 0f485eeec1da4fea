"""A strict second opinion: the ``websockets`` package's own sync client.

It validates every frame the server sends (masking, RSV bits, opcodes,
control frame sizes, UTF-8 of text, close codes) and raises on anything
invalid, so each test here also checks the server's framing end to end.
"""

from __future__ import annotations

import contextlib
import logging

import pytest
from websockets.exceptions import (
    ConnectionClosedError,
    ConnectionClosedOK,
    InvalidStatus,
)
from websockets.sync.client import connect

from tests.support.server import TEST_SECRET, wait_for
from turbo_gevent import streams
from turbo_gevent.hub import join_fragments
from turbo_gevent.tokens import StreamSigner

signer = StreamSigner(TEST_SECRET)


def uri(server, *names):
    return f"ws://127.0.0.1:{server.port}/turbo-stream?" + "&".join("stream=" + signer.sign(n) for n in names)


def client(server, *names, **options):
    options = {"open_timeout": 10, "close_timeout": 10, "proxy": None, **options}
    return connect(uri(server, *(names or ("chat",))), **options)


def test_connects_with_a_signed_token_and_receives_broadcasts(server):
    with client(server, "chat") as ws:
        assert ws.response.status_code == 101
        assert "Sec-WebSocket-Extensions" not in ws.response.headers  # deflate was offered, not taken
        server.wait_connections(1)
        for i in range(5):
            assert server.broadcast("chat", f"<p>{i}</p>") == (200, "ok")
        assert [ws.recv(timeout=10) for _ in range(5)] == [f"<p>{i}</p>" for i in range(5)]
        ws.close()
        assert ws.close_code == 1000


def test_several_fragments_arrive_joined_in_one_message(server):
    html = join_fragments(
        [
            streams.append("messages", "<p>hi \u00e9\u20ac\U0001f600</p>"),
            streams.remove("old"),
            streams.update("count", "3"),
        ]
    )
    with client(server, "chat") as ws:
        server.wait_connections(1)
        server.broadcast("chat", html)
        server.broadcast("chat", "<p>next</p>")
        assert ws.recv(timeout=10) == html
        assert ws.recv(timeout=10) == "<p>next</p>"


def test_a_1mb_message_arrives_whole(server):
    message = "<p>" + "\u00e9" * 499_996 + "x</p>"  # 1,000,000 bytes of UTF-8
    assert len(message.encode()) == 1_000_000
    with client(server, "chat", max_size=2**21) as ws:
        server.wait_connections(1)
        server.broadcast("chat", message)
        server.broadcast("chat", "<p>after</p>")
        assert ws.recv(timeout=10) == message
        assert ws.recv(timeout=10) == "<p>after</p>"


def test_ping_is_answered(server):
    with client(server) as ws:
        for payload in (b"", b"abc", bytes(range(125))):
            assert ws.ping(payload).wait(10)


def test_close_handshake_completes_with_1000(server):
    with client(server) as ws:
        server.wait_connections(1)
        ws.close(1000, "bye")
    assert ws.close_code == 1000
    assert ws.close_reason == "bye"
    assert ws.protocol.close_rcvd.code == 1000
    assert ws.protocol.close_rcvd_then_sent is False  # the server echoed ours
    server.wait_connections(0)
    assert "Traceback" not in server.stderr()


def test_messages_from_the_client_are_accepted(server):
    with client(server) as ws:
        ws.send("x" * 65536)
        ws.send(["fragmented ", "text ", "\u20ac"])
        ws.send(b"\x00\xff" * 100)
        assert ws.ping(b"after").wait(10)


def test_an_oversized_message_is_closed_with_1009(server):
    with client(server) as ws:
        ws.send("x" * (65536 + 1))
        with pytest.raises(ConnectionClosedError) as info:
            ws.recv(timeout=10)
        assert info.value.rcvd.code == 1009
        assert info.value.rcvd.reason


def test_a_forged_token_is_refused_with_403(server):
    forged = StreamSigner("another-secret").sign("chat")
    with pytest.raises(InvalidStatus) as info:
        connect(f"ws://127.0.0.1:{server.port}/turbo-stream?stream={forged}", open_timeout=10, proxy=None)
    assert info.value.response.status_code == 403


class _Frames(logging.Handler):
    def __init__(self):
        super().__init__(logging.DEBUG)
        self.lines = []

    def emit(self, record):
        self.lines.append(record.getMessage())


def test_keepalive_pings_are_valid_and_answered(make_server_process):
    server = make_server_process(config={"ping_interval": 0.3, "ping_timeout": 1.0})
    frames = _Frames()
    logger = logging.getLogger("tests.websockets_client.keepalive")
    logger.setLevel(logging.DEBUG)
    logger.addHandler(frames)
    try:
        with client(server, "chat", logger=logger, ping_interval=None) as ws:
            # the client's own thread answers the server's pings with pongs
            wait_for(lambda: sum(line.startswith("< PING") for line in frames.lines) >= 3, message="3 pings")
            server.broadcast("chat", "<p>still here</p>")
            assert ws.recv(timeout=10) == "<p>still here</p>"
            assert server.stats()["connections"] == 1
    finally:
        logger.removeHandler(frames)


def test_shutdown_closes_with_1001_and_the_process_exits_0(make_server_process):
    server = make_server_process()
    with contextlib.ExitStack() as stack:
        connections = [stack.enter_context(client(server)) for _ in range(3)]
        server.wait_connections(3)
        server.proc.terminate()
        for ws in connections:
            with pytest.raises(ConnectionClosedOK):
                ws.recv(timeout=10)
            assert ws.close_code == 1001
        assert server.proc.wait(15) == 0
    assert "Traceback" not in server.stderr()
