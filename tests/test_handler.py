"""The HTTP side of the handler, over real sockets: silent and vanishing peers."""

import socket
import struct

import pytest

from tests.support.rawws import RawClient, read_http_response
from tests.support.server import TEST_SECRET, ServerProcess, wait_for
from turbo_gevent.tokens import StreamSigner


@pytest.fixture(scope="module")
def quick():
    with ServerProcess(args=("--header-timeout", "0.5")) as server:
        yield server


def test_a_peer_that_says_nothing_is_closed_after_the_header_timeout(quick):
    with socket.create_connection(("127.0.0.1", quick.port), timeout=10) as sock:
        assert sock.recv(1024) == b""  # closed by the server, not by our own timeout


def test_a_peer_that_stops_mid_headers_is_closed_with_one_log_line(quick):
    with socket.create_connection(("127.0.0.1", quick.port), timeout=10) as sock:
        sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n")
        assert sock.recv(1024) == b""
    wait_for(lambda: "request from 127.0.0.1" in quick.stderr(), message="one log line")


def test_a_reset_mid_headers_is_quiet(quick):
    sock = socket.create_connection(("127.0.0.1", quick.port), timeout=10)
    sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nX-Half: ")
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()
    # The server still serves, and said nothing loud about it.
    with socket.create_connection(("127.0.0.1", quick.port), timeout=10) as other:
        other.sendall(b"GET /page HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        assert read_http_response(other)[0] == 200


def test_keep_alive_between_requests_is_bounded_too(quick):
    with socket.create_connection(("127.0.0.1", quick.port), timeout=10) as sock:
        sock.sendall(b"GET /page HTTP/1.1\r\nHost: x\r\n\r\n")
        assert read_http_response(sock)[0] == 200
        assert sock.recv(1024) == b""  # idle after the response: closed


def test_a_websocket_is_not_cut_by_the_header_timeout(quick):
    client = RawClient(quick.port, query="stream=" + StreamSigner(TEST_SECRET).sign("chat"))
    assert client.status == 101
    quick.wait_connections(1)
    assert client.at_eof(timeout=1.5) is False  # three header timeouts later, still open
    quick.broadcast("chat", "<p>still here</p>")
    assert client.recv_frame()[2] == b"<p>still here</p>"


def test_a_body_announced_and_never_sent_is_bounded_too(quick):
    for request in (
        b"GET /page HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\n",
        b"GET /turbo-stream?stream=forged HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\n",
    ):
        with socket.create_connection(("127.0.0.1", quick.port), timeout=10) as sock:
            sock.sendall(request)
            status, _, _ = read_http_response(sock)
            assert status in (200, 400)
            assert sock.recv(1024) == b""  # closed by the server within the header timeout


def test_more_than_100_headers_is_a_plain_400(quick):
    head = b"GET /page HTTP/1.1\r\nHost: x\r\n" + b"".join(b"X-%d: y\r\n" % i for i in range(150))
    with socket.create_connection(("127.0.0.1", quick.port), timeout=10) as sock:
        sock.sendall(head + b"\r\n")
        status, headers, body = read_http_response(sock)
    assert status == 400
    assert int(headers["content-length"]) == len(body)


def test_control_characters_from_the_peer_are_escaped_in_the_log(quick):
    with socket.create_connection(("127.0.0.1", quick.port), timeout=10) as sock:
        sock.sendall(b"GET /x%1b[31m\x1b[2Jred HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        read_http_response(sock)
    wait_for(lambda: "red HTTP/1.1" in quick.stderr(), message="the access log line")
    assert "\x1b" not in quick.stderr()
    assert "\\x1b[2Jred" in quick.stderr()


def test_no_traceback(quick):
    assert "Traceback" not in quick.stderr()
