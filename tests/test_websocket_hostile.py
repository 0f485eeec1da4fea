"""Hostile and broken peers against a real server process, over real sockets.

The ``test_caseN_`` tests send the exact bytes of twelve known hostile or
broken inputs (a request without a version, a key that is not 16 bytes,
Firefox's Connection list, HTTP/1.0, a close with 1000 "bye", an unmasked
frame, invalid UTF-8, a 1 GiB header, a ping, pings during large writes, a
reset while sending, a peer that never reads). The others hold one rule each
of the WebSocket layer (handshake, frames, one writer, keepalive, slow peers,
shutdown, quiet failures) and the faults of gevent-websocket that it
replaces. Most tests share one server with the default settings; the last
test checks that its stderr never showed a traceback.
"""

from __future__ import annotations

import base64
import os
import re
import socket
import struct
import subprocess
import threading
import time

import pytest
from websockets.utils import accept_key

from tests.support.rawws import (
    RawClient,
    close_payload,
    frame,
    handshake_request,
    read_http_response,
)
from tests.support.server import TEST_SECRET, ServerProcess, wait_for
from turbo_gevent.tokens import StreamSigner

signer = StreamSigner(TEST_SECRET)

TEXT, BINARY, CONT, CLOSE, PING, PONG = 0x1, 0x2, 0x0, 0x8, 0x9, 0xA
MAX_SIZE = 64 * 1024  # the default max_message_size
MIB = 1024 * 1024


@pytest.fixture(scope="module")
def srv():
    """One server with the default settings for the whole module."""
    with ServerProcess() as process:
        yield process


# -- helpers ------------------------------------------------------------------

_names = iter(range(10**9))


def unique(prefix="s"):
    return f"{prefix}{next(_names)}-{os.getpid()}"


def query(*streams):
    return "&".join("stream=" + signer.sign(stream) for stream in streams)


def raw_client(sock, request):
    """A :class:`RawClient` over ``sock``, after sending ``request`` and reading the answer."""
    client = RawClient.__new__(RawClient)
    client.sock, client.timeout = sock, 10.0
    sock.settimeout(10.0)
    sock.sendall(request)
    client.status, client.headers, client.buffer = read_http_response(sock)
    return client


def connect(server, *streams, rcvbuf=None):
    """A handshaken raw client on ``streams`` (a fresh one by default).

    ``rcvbuf`` shrinks the client's receive buffer (set before connecting,
    so that the TCP window is small too): the server backs up quickly.
    """
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    if rcvbuf is not None:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    sock.settimeout(10.0)
    sock.connect(("127.0.0.1", server.port))
    request = handshake_request(server.port, "/turbo-stream?" + query(*(streams or (unique(),))))
    client = raw_client(sock, request)
    assert client.status == 101, client.status
    return client


def read_to_eof(sock, timeout=10.0):
    sock.settimeout(timeout)
    data = b""
    while True:
        chunk = sock.recv(65536)
        if not chunk:
            return data
        data += chunk


def http_exchange(port, request):
    """Send raw request bytes; read the whole answer up to EOF and parse it strictly.

    The answer must be one complete HTTP response: a body of exactly
    Content-Length bytes and nothing after it (no 101, no second response).
    """
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(request)
        data = read_to_eof(sock)
    head, sep, body = data.partition(b"\r\n\r\n")
    assert sep, f"no complete head: {data!r}"
    lines = head.decode("latin-1").split("\r\n")
    match = re.fullmatch(r"HTTP/1\.[01] (\d{3}) .*", lines[0])
    assert match, lines[0]
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    assert "content-length" in headers, headers
    assert int(headers["content-length"]) == len(body), (headers, body)
    return int(match.group(1)), headers, body


def close_frame_code(client, timeout=None):
    """The next frame must be a close frame: its (code, reason)."""
    fin, opcode, payload = client.recv_frame(timeout)
    assert (fin, opcode) == (True, CLOSE), (fin, opcode, payload[:60])
    assert len(payload) >= 2, "a close frame without a status code"
    assert len(payload) <= 125
    return struct.unpack("!H", payload[:2])[0], payload[2:].decode("utf-8")


def expect_failed(client, code):
    """The server closes with ``code`` and a short reason, then ends the TCP connection."""
    got, reason = close_frame_code(client)
    assert got == code, (got, reason)
    assert reason, "the close frame should say why"
    assert client.at_eof(), "the server should close the TCP connection after failing"
    return reason


def assert_open(client, payload=b"still-open"):
    """The connection is alive: a ping is answered by a pong with its payload."""
    client.send(frame(PING, payload))
    while True:
        fin, opcode, data = client.recv_frame()
        if opcode == PONG and data == payload:
            return
        if opcode == PING:  # keepalive
            client.send(frame(PONG, data))
        assert opcode in (PONG, PING, TEXT), (opcode, data[:60])


def lines_about(server, client):
    """Server log lines naming this client's address."""
    port = client.sock.getsockname()[1]
    return [line for line in server.stderr().splitlines() if f"127.0.0.1:{port}" in line]


def level(line):
    return line.split()[2]


class Collector(threading.Thread):
    """Read text frames on a client in the background, strictly, until it fails."""

    def __init__(self, client):
        super().__init__(daemon=True)
        self.client = client
        self.messages = []
        self.error = None

    def run(self):
        try:
            while True:
                fin, opcode, payload = self.client.recv_frame(30)
                assert fin and opcode in (TEXT, PING), (fin, opcode)
                if opcode == TEXT:
                    self.messages.append(payload)
        except Exception as exc:  # reported by the test
            self.error = exc


def big(i, size):
    head = f"<p>{i}</p>"
    return head + "x" * (size - len(head))


# -- 1. the handshake, decided before any 101 -----------------------------------


def test_case1_no_version_is_426_naming_13_with_a_complete_body(srv):
    status, headers, body = http_exchange(srv.port, handshake_request(srv.port, version=None))
    assert status == 426
    assert headers["sec-websocket-version"] == "13"
    assert body


def test_other_version_is_426_naming_13(srv):
    status, headers, _ = http_exchange(srv.port, handshake_request(srv.port, version="8"))
    assert status == 426
    assert headers["sec-websocket-version"] == "13"


def test_case2_key_abc_is_400_not_500(srv):
    status, _, body = http_exchange(srv.port, handshake_request(srv.port, key="abc"))
    assert status == 400
    assert b"Sec-WebSocket-Key" in body


def test_missing_key_is_400(srv):
    status, _, _ = http_exchange(srv.port, handshake_request(srv.port, key=""))
    assert status == 400
    request = handshake_request(srv.port).replace(b"Sec-WebSocket-Key", b"X-Not-The-Key")
    assert http_exchange(srv.port, request)[0] == 400


def test_case3_connection_token_list_of_firefox_is_101(srv):
    key = base64.b64encode(os.urandom(16)).decode()
    request = handshake_request(srv.port, "/turbo-stream?" + query(unique()), key=key, connection="keep-alive, Upgrade")
    client = raw_client(socket.create_connection(("127.0.0.1", srv.port)), request)
    assert client.status == 101
    assert client.headers["sec-websocket-accept"] == accept_key(key)
    assert client.headers["upgrade"].lower() == "websocket"
    assert_open(client)
    client.close()


def test_case4_http_1_0_is_400_not_402(srv):
    status, _, body = http_exchange(srv.port, handshake_request(srv.port, http="HTTP/1.0"))
    assert status == 400
    assert body


def test_post_upgrade_is_400(srv):
    request = handshake_request(srv.port, method="POST", extra=(("Content-Length", "0"),))
    assert http_exchange(srv.port, request)[0] == 400


def test_no_upgrade_headers_is_426(srv):
    status, headers, _ = http_exchange(srv.port, handshake_request(srv.port, upgrade=None, connection=None))
    assert status == 426
    assert headers["upgrade"].lower() == "websocket"


def test_bad_token_is_403_and_never_101(srv):
    # gevent-websocket answered 101 before the application could refuse;
    # http_exchange reads to EOF: a 101 anywhere would fail its strict parse
    forged = StreamSigner("another-secret").sign("chat")
    good = signer.sign("chat")
    altered = good[:-2] + ("AA" if not good.endswith("AA") else "BB")
    for token in ("chat", forged, altered):
        status, _, _ = http_exchange(srv.port, handshake_request(srv.port, "/turbo-stream?stream=" + token))
        assert status == 403


@pytest.mark.parametrize(
    "changes, status",
    [
        ({"http": "HTTP/1.0", "version": "8", "key": "abc"}, 400),
        ({"upgrade": None, "version": "8", "key": "abc"}, 426),
        ({"version": "8", "key": "abc"}, 426),
        ({"key": "abc"}, 400),  # the key is checked before the (forged) token
    ],
    ids=repr,
)
def test_checks_run_in_order_before_the_tokens(srv, changes, status):
    request = handshake_request(srv.port, "/turbo-stream?stream=forged", **changes)
    assert http_exchange(srv.port, request)[0] == status


@pytest.mark.parametrize(
    "changes",
    [
        {"version": None},
        {"version": "8"},
        {"key": "abc"},
        {"key": ""},
        {"http": "HTTP/1.0"},
        {"method": "PUT", "extra": (("Content-Length", "0"),)},
        {"upgrade": None, "connection": None},
        {"connection": "keep-alive"},
        {"path": "/turbo-stream?stream=forged"},
        {"extra": (("Origin", "https://evil.example"),)},
    ],
    ids=repr,
)
def test_every_refusal_is_one_complete_response_then_eof(srv, changes):
    # the TypeError-on-memoryview fault crashed refusals half-written
    status, headers, body = http_exchange(srv.port, handshake_request(srv.port, **changes))
    assert status in (400, 403, 426)
    assert headers["content-type"].startswith("text/plain")
    assert body.endswith(b"\n") and b"Traceback" not in body


# -- 2. frames --------------------------------------------------------------------


def test_case5_close_1000_bye_is_echoed_with_its_code(srv):
    client = connect(srv)
    client.send(frame(CLOSE, close_payload(1000, b"bye")))
    fin, opcode, payload = client.recv_frame()
    assert opcode == CLOSE
    assert payload.startswith(b"\x03\xe8")
    assert client.at_eof()


@pytest.mark.parametrize("code", [1001, 1003, 1011, 3000, 4999])
def test_peer_close_codes_are_echoed(srv, code):
    client = connect(srv)
    client.send(frame(CLOSE, close_payload(code, "é".encode())))
    assert close_frame_code(client) == (code, "é")
    assert client.at_eof()


def test_empty_close_is_answered_and_ends_the_connection(srv):
    client = connect(srv)
    client.send(frame(CLOSE, b""))
    fin, opcode, _ = client.recv_frame()
    assert opcode == CLOSE
    assert client.at_eof()


def test_case6_unmasked_text_frame_is_1002(srv):
    client = connect(srv)
    client.send(frame(TEXT, b"hello", mask=False))
    expect_failed(client, 1002)


@pytest.mark.parametrize("rsv", [1, 2, 4, 7])
def test_rsv_bits_are_1002(srv, rsv):
    client = connect(srv)
    client.send(frame(TEXT, b"hello", rsv=rsv))
    expect_failed(client, 1002)


@pytest.mark.parametrize(
    "frames",
    [
        [frame(CONT, b"orphan")],
        [frame(CONT, b"orphan", fin=False)],
        [frame(PING, b"x" * 126)],
        [frame(PONG, b"x" * 200)],
        [frame(CLOSE, close_payload(1000, b"x" * 124))],
        [frame(PING, b"a", fin=False)],
        [frame(TEXT, b"first", fin=False), frame(TEXT, b"second")],
        [frame(0x3, b"reserved opcode")],
        [frame(0xB, b"reserved control opcode")],
        [frame(CLOSE, b"\x03")],
    ],
    ids=["orphan-cont", "orphan-cont-nofin", "ping-126", "pong-200", "close-126", "fragmented-ping",
         "text-inside-text", "opcode-3", "opcode-b", "close-1-byte"],
)
def test_protocol_errors_are_1002_with_a_reason(srv, frames):
    # gevent-websocket closed protocol errors with an empty payload
    client = connect(srv)
    client.send(b"".join(frames))
    expect_failed(client, 1002)


@pytest.mark.parametrize("code", [0, 999, 1004, 1005, 1006, 1015, 1016, 2000, 2999, 5000, 65535])
def test_invalid_close_codes_are_1002(srv, code):
    client = connect(srv)
    client.send(frame(CLOSE, close_payload(code, b"x")))
    expect_failed(client, 1002)


def test_close_reason_not_utf8_is_1007(srv):
    client = connect(srv)
    client.send(frame(CLOSE, close_payload(1000, b"\xff")))
    expect_failed(client, 1007)


def test_case7_invalid_utf8_text_is_1007(srv):
    client = connect(srv)
    client.send(frame(TEXT, b"\xff\xfe\xfd"))
    expect_failed(client, 1007)


@pytest.mark.parametrize(
    "fragments",
    [
        [b"caf\xc3", b"\x28"],  # a two-byte sequence broken across fragments
        [b"\xe2\x82", b"\x28\xa1"],
        [b"ok", b"ok", b"\xed\xa0\x80"],  # a surrogate
        [b"ok", b"\xf0\x9f\x98"],  # ends in the middle of a character
        [b"\xf4\x90\x80\x80", b""],  # above U+10FFFF
    ],
    ids=repr,
)
def test_invalid_utf8_across_fragments_is_1007(srv, fragments):
    client = connect(srv)
    frames = [frame(TEXT, fragments[0], fin=False)]
    frames += [frame(CONT, part, fin=False) for part in fragments[1:-1]]
    frames.append(frame(CONT, fragments[-1]))
    client.send(b"".join(frames))
    expect_failed(client, 1007)


def test_valid_utf8_split_across_fragments_is_accepted(srv):
    client = connect(srv)
    text = "né €😀".encode()
    client.send(frame(TEXT, text[:2], fin=False) + frame(CONT, text[2:6], fin=False) + frame(CONT, text[6:]))
    client.send(frame(BINARY, b"\xff\xfe", fin=False) + frame(CONT, b"\xfd"))  # binary is not UTF-8
    assert_open(client)
    client.close()


def test_case8_a_1gib_frame_header_is_1009_at_once(srv):
    client = connect(srv)
    client.send(frame(BINARY, length=2**30))  # the header (with its mask key) and nothing after it
    expect_failed(client, 1009)


def test_one_byte_over_the_limit_is_1009(srv):
    client = connect(srv)
    client.send(frame(TEXT, b"x" * (MAX_SIZE + 1)))
    expect_failed(client, 1009)


def test_fragmented_message_over_the_limit_is_1009(srv):
    client = connect(srv)
    client.send(frame(TEXT, b"x" * (40 * 1024), fin=False) + frame(CONT, b"y" * (40 * 1024)))
    expect_failed(client, 1009)


def test_fragment_announcing_too_much_is_1009_from_its_header(srv):
    client = connect(srv)
    client.send(frame(TEXT, b"x" * 1024, fin=False))
    client.send(frame(CONT, length=2**40))  # the header only
    expect_failed(client, 1009)


def test_case9_ping_abc_gets_pong_abc_as_its_own_frame(srv):
    client = connect(srv)
    client.send(frame(PING, b"abc"))
    assert client.recv_frame() == (True, PONG, b"abc")
    client.send(frame(PING, b""))
    assert client.recv_frame() == (True, PONG, b"")
    client.send(frame(PING, bytes(range(125))))
    assert client.recv_frame() == (True, PONG, bytes(range(125)))
    client.close()


def test_control_frames_between_fragments_are_handled(srv):
    client = connect(srv)
    client.send(
        frame(TEXT, b"hel", fin=False)
        + frame(PING, b"one")
        + frame(CONT, b"lo ", fin=False)
        + frame(PONG, b"unsolicited")
        + frame(PING, b"two")
        + frame(CONT, b"world")
    )
    assert client.recv_frame() == (True, PONG, b"one")
    assert client.recv_frame() == (True, PONG, b"two")
    assert_open(client)
    client.send(frame(CLOSE, close_payload(1000)))
    assert close_frame_code(client) == (1000, "")
    assert client.at_eof()


def test_max_size_messages_are_processed_and_others_are_served(srv):
    # gevent-websocket handled incoming frames byte by byte in Python: a
    # max-size message froze the whole process.
    stream = unique("max")
    sender = connect(srv)
    listener = connect(srv, stream)
    at_limit = frame(TEXT, b"a" * MAX_SIZE)
    fragmented = frame(TEXT, b"b" * (MAX_SIZE // 2), fin=False) + frame(CONT, b"c" * (MAX_SIZE // 2))
    for i in range(20):
        sender.send(at_limit if i % 2 else fragmented)
        assert srv.broadcast(stream, f"<p>{i}</p>") == (200, "ok")
        assert listener.recv_frame() == (True, TEXT, f"<p>{i}</p>".encode())
    assert_open(sender)
    sender.close()
    listener.close()


def test_memory_stays_flat_under_ten_1gib_frame_headers(srv):
    # gevent-websocket had no size limit: it read whatever length was announced
    clients = [connect(srv) for _ in range(10)]
    wait_for(lambda: srv.stats()["connections"] >= 10, message="10 connections")
    before = srv.rss_kib()
    chunk = os.urandom(MIB)
    for client in clients:
        client.send(frame(BINARY, length=2**30))
        assert close_frame_code(client)[0] == 1009  # decided from the header
        try:  # then push 8 MiB of the announced payload: none of it is kept
            for _ in range(8):
                client.sock.sendall(chunk)
        except OSError:
            pass
    for client in clients:
        assert client.at_eof()
    grown = srv.rss_kib() - before
    assert grown < 50 * 1024, f"RSS grew by {grown} KiB"


def test_frames_sent_right_behind_the_request_are_read(srv):
    # the handler must hand over what it read past the request
    request = handshake_request(srv.port, "/turbo-stream?" + query(unique()))
    frames = frame(PING, b"early") + frame(TEXT, b"y" * MAX_SIZE) + frame(PING, b"later")
    client = raw_client(socket.create_connection(("127.0.0.1", srv.port)), request + frames)
    assert client.status == 101
    assert client.recv_frame() == (True, PONG, b"early")
    assert client.recv_frame() == (True, PONG, b"later")
    client.close()


# -- 3. one writer per socket -------------------------------------------------------


def test_case10_pongs_sit_between_whole_frames(srv):
    # gevent-websocket wrote pongs from the reading greenlet, in the middle
    # of a data frame another greenlet was writing
    stream = unique("interleave")
    client = connect(srv, stream, rcvbuf=4096)
    # 6 MB: more than the kernel's send buffer (4 MB at most), so a backlog builds
    messages = [big(i, 300_000).encode() for i in range(20)]
    pings = []
    stop = threading.Event()

    def flood():  # about 50 pings a second: under the limit of 100 that closes with 1008
        i = 0
        while not stop.wait(0.02):
            payload = b"p%d" % i
            pings.append(payload)
            client.sock.sendall(frame(PING, payload))
            i += 1

    pinger = threading.Thread(target=flood, daemon=True)
    pinger.start()
    wait_for(lambda: len(pings) >= 20, message="pings sent")
    for message in messages:  # the client reads nothing yet: a backlog builds
        assert srv.broadcast(stream, message.decode()) == (200, "ok")
        wait_for(lambda n=len(pings) + 5: len(pings) >= n, message="more pings")
    received = []  # strictly parsed: a pong inside a frame would garble both
    while sum(op == TEXT for op, _ in received) < len(messages):
        fin, opcode, payload = client.recv_frame()
        assert fin, "the server never fragments"
        assert opcode in (TEXT, PONG), opcode
        received.append((opcode, payload))
    stop.set()
    pinger.join(10)
    client.send(frame(PING, b"last"))
    while True:
        fin, opcode, payload = client.recv_frame()
        assert (fin, opcode) == (True, PONG)
        received.append((opcode, payload))
        if payload == b"last":
            break
    texts = [payload for opcode, payload in received if opcode == TEXT]
    pongs = [payload for opcode, payload in received if opcode == PONG]
    assert texts == messages  # every data frame whole, in order
    order = {payload: i for i, payload in enumerate(pings + [b"last"])}
    assert all(p in order for p in pongs), "a pong with a payload never sent"
    assert [order[p] for p in pongs] == sorted(order[p] for p in pongs)
    # pongs were written while data frames were backlogged, between them
    kinds = "".join("t" if opcode == TEXT else "p" for opcode, _ in received)
    assert re.search("tp+t", kinds), kinds
    client.close()


def test_peer_close_during_a_backlog_comes_after_whole_frames(srv):
    stream = unique("backlog")
    client = connect(srv, stream, rcvbuf=4096)
    messages = [big(i, 300_000).encode() for i in range(20)]  # more than the kernel holds
    for message in messages:
        srv.broadcast(stream, message.decode())
    client.send(frame(CLOSE, close_payload(1000, b"bye")))
    texts = []
    while True:
        fin, opcode, payload = client.recv_frame()
        assert fin
        if opcode == CLOSE:
            break
        assert opcode == TEXT
        texts.append(payload)
    assert payload == close_payload(1000, b"bye")
    assert texts == messages
    assert client.at_eof()


# -- 7. quiet failures: resets ------------------------------------------------------


def test_case11_reset_while_sending_is_one_quiet_line_and_others_keep_receiving(srv):
    stream = unique("reset")
    victim = connect(srv, stream, rcvbuf=4096)
    other = connect(srv, stream)
    collector = Collector(other)
    collector.start()
    messages = [big(i, 300_000) for i in range(18)]
    for message in messages[:15]:  # more than the kernel holds: the server is writing
        srv.broadcast(stream, message)
    wait_for(lambda: len(collector.messages) >= 1, message="the first message")
    victim_port = victim.sock.getsockname()[1]
    victim.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    victim.sock.close()  # RST while the server has a backlog for it
    for message in messages[15:]:
        srv.broadcast(stream, message)
    wait_for(lambda: len(collector.messages) == len(messages) or collector.error, message="every message")
    assert collector.error is None, collector.error
    assert collector.messages == [m.encode() for m in messages]
    wait_for(lambda: f"127.0.0.1:{victim_port}" in srv.stderr(), message="a log line about the reset peer")
    lines = [line for line in srv.stderr().splitlines() if f"127.0.0.1:{victim_port}" in line]
    assert len(lines) == 1, lines
    assert level(lines[0]) in ("INFO", "DEBUG"), lines
    assert "Traceback" not in srv.stderr()
    other.close()


# -- 4. keepalive and slow peers ------------------------------------------------------


class PongingReader(threading.Thread):
    """Answer every ping at once, noting when it came; collect text messages."""

    def __init__(self, client):
        super().__init__(daemon=True)
        self.client = client
        self.ping_times = []
        self.messages = []
        self.error = None
        self.stop = threading.Event()

    def run(self):
        try:
            while not self.stop.is_set():
                try:
                    fin, opcode, payload = self.client.recv_frame(0.1)
                except TimeoutError:
                    continue
                if opcode == PING:
                    self.ping_times.append(time.monotonic())
                    self.client.send(frame(PONG, payload))
                else:
                    assert (fin, opcode) == (True, TEXT), (fin, opcode, payload[:60])
                    self.messages.append(payload)
        except Exception as exc:  # reported by the test
            self.error = exc


def test_keepalive_drops_a_peer_that_never_pongs_and_keeps_one_that_does(make_server_process):
    server = make_server_process(config={"ping_interval": 0.5, "ping_timeout": 0.5, "close_timeout": 1.0})
    stream = unique("keepalive")
    connected_at = time.monotonic()
    silent = connect(server, stream)
    polite = connect(server, stream)
    reader = PongingReader(polite)
    reader.start()
    # the silent one reads but never answers: a ping, then a 1008 close
    fin, opcode, payload = silent.recv_frame()
    assert (fin, opcode) == (True, PING)
    code, reason = close_frame_code(silent, timeout=5)
    assert code == 1008 and reason
    # after its close frame the server sends it no more data frames
    assert server.broadcast(stream, "<p>after close</p>") == (200, "ok")
    try:
        rest = read_to_eof(silent.sock)
    except ConnectionResetError:
        rest = b""
    assert silent.buffer + rest == b"", "data after the close frame"
    lines = lines_about(server, silent)
    assert len(lines) == 1 and level(lines[0]) in ("INFO", "DEBUG"), lines
    # the polite one answers every ping and stays, pinged every ping_interval
    wait_for(lambda: len(reader.ping_times) >= 4 or reader.error, message="4 pings")
    reader.stop.set()
    reader.join(5)
    assert reader.error is None, reader.error
    assert reader.messages == [b"<p>after close</p>"]
    times = [connected_at, *reader.ping_times]
    average = (times[-1] - times[0]) / (len(times) - 1)
    assert average >= 0.45, f"pinged more often than every 0.5 s: {times}"
    assert_open(polite)
    assert server.stats()["connections"] == 1
    assert "Traceback" not in server.stderr()


def _slow_peer_is_dropped(server, why):
    stream = unique("slow")
    slow = connect(server, stream, rcvbuf=4096)
    fast = connect(server, stream)
    collector = Collector(fast)
    collector.start()
    before = server.rss_kib()
    sent = []

    def send():
        message = big(len(sent), 200_000)
        assert server.broadcast(stream, message) == (200, "ok")
        sent.append(message)

    while len(sent) < 40 and not server.stats()["dropped_slow"]:  # more than the kernel holds
        send()
    wait_for(lambda: server.stats()["dropped_slow"] == 1, message="the slow peer dropped")
    for _ in range(3):  # the others are still served after the drop
        send()
    wait_for(lambda: len(collector.messages) == len(sent) or collector.error, message="every message")
    assert collector.error is None, collector.error
    assert collector.messages == [m.encode() for m in sent]  # all of them, in order
    stats = server.stats()
    assert stats["dropped_slow"] == 1 and stats["connections"] == 1
    assert server.rss_kib() - before < 50 * 1024
    # the slow peer's connection is gone: reading drains what the kernel held, then ends
    try:
        read_to_eof(slow.sock)
    except ConnectionResetError:
        pass
    lines = lines_about(server, slow)
    assert len(lines) == 1 and level(lines[0]) in ("INFO", "DEBUG"), lines
    assert why in lines[0]
    assert "Traceback" not in server.stderr()
    fast.close()


def test_case12_a_peer_that_never_reads_is_dropped_after_send_timeout(make_server_process):
    _slow_peer_is_dropped(make_server_process(config={"send_timeout": 0.5, "max_queue": None}), "took nothing")


def test_a_peer_whose_queue_overflows_is_dropped(make_server_process):
    _slow_peer_is_dropped(make_server_process(config={"send_timeout": None, "max_queue": 4}), "queue of 4")


# -- 5. shutdown ------------------------------------------------------------------------


def test_sigterm_closes_every_client_with_1001_and_exits_once_they_answer(make_server_process):
    server = make_server_process(args=("--grace", "30"))
    clients = [connect(server) for _ in range(3)]
    server.wait_connections(3)
    started = time.monotonic()
    server.proc.terminate()
    for client in clients:
        assert close_frame_code(client)[0] == 1001
        client.send(frame(CLOSE, close_payload(1001)))
    for client in clients:
        assert client.at_eof()
    assert server.proc.wait(15) == 0
    assert time.monotonic() - started < 15  # did not sit out the 30 s grace
    assert "Traceback" not in server.stderr()


def test_sigterm_exits_within_grace_when_clients_do_not_answer(make_server_process):
    server = make_server_process(args=("--grace", "2"))
    clients = [connect(server) for _ in range(3)]
    server.wait_connections(3)
    server.proc.terminate()
    for client in clients:
        assert close_frame_code(client)[0] == 1001  # and never answered
    with pytest.raises(subprocess.TimeoutExpired):
        server.proc.wait(0.5)  # it waits for the answers...
    assert server.proc.wait(10) == 0  # ...up to the grace period
    for client in clients:
        assert client.at_eof(timeout=1)
    assert "Traceback" not in server.stderr()


# -- 7. quiet failures -----------------------------------------------------------------


def test_a_misbehaving_peer_is_one_quiet_line(srv):
    client = connect(srv)
    client.send(frame(TEXT, b"hello", mask=False))
    expect_failed(client, 1002)
    wait_for(lambda: lines_about(srv, client), message="a log line")
    lines = lines_about(srv, client)
    assert len(lines) == 1 and level(lines[0]) in ("INFO", "DEBUG"), lines


@pytest.mark.parametrize("reset", [False, True], ids=["fin", "rst"])
def test_a_peer_that_vanishes_mid_frame_is_one_quiet_line(srv, reset):
    client = connect(srv)
    port = client.sock.getsockname()[1]
    client.send(frame(TEXT, b"x" * 1000)[:500])
    if reset:
        client.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    client.sock.close()
    wait_for(lambda: f"127.0.0.1:{port}" in srv.stderr(), message="a log line naming the peer")
    lines = [line for line in srv.stderr().splitlines() if f"127.0.0.1:{port}" in line]
    assert len(lines) == 1 and level(lines[0]) in ("INFO", "DEBUG"), lines
    # and no anonymous line from the protocol layer about the same event
    assert not re.search(r" INFO turbo_gevent\.protocol", srv.stderr())


# -- found by attacking the server: fairness, bodies, control frames first ----


def test_a_ping_flood_is_closed_with_1008_and_others_are_served_meanwhile(srv):
    flooder = connect(srv)
    flooder.sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 1 << 20)
    burst = frame(PING, b"") * 5000  # far more than 100 a second, in one go
    flooder.send(burst)
    # The reading greenlet gives way between reads: the server answers others meanwhile.
    assert srv.stats()["connections"] >= 1
    code, reason = None, ""
    while code is None:
        fin, opcode, payload = flooder.recv_frame()
        if opcode == CLOSE:
            code, reason = struct.unpack("!H", payload[:2])[0], payload[2:].decode()
    assert (code, reason) == (1008, "too many pings")


def test_an_upgrade_request_with_a_body_is_400_before_any_101(srv):
    for extra in (("Content-Length", "5"), ("Transfer-Encoding", "chunked")):
        request = handshake_request(srv.port, "/turbo-stream?" + query(unique()), extra=[extra])
        status, _, body = http_exchange(srv.port, request + b"hello" if extra[0] == "Content-Length"
                                        else request + b"5\r\nhello\r\n0\r\n\r\n")
        assert status == 400, extra
        assert b"body" in body


def test_no_traceback_on_stderr(srv):
    """Last: nothing above made the shared server print a traceback."""
    err = srv.stderr()
    assert "Traceback" not in err
    assert " ERROR " not in err
