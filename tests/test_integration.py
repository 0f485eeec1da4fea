"""The whole path over real sockets: a real server process, real clients."""

import urllib.error
import urllib.request

from tests.support.rawws import RawClient
from tests.support.server import TEST_SECRET
from turbo_gevent.tokens import StreamSigner

signer = StreamSigner(TEST_SECRET)


def test_other_paths_reach_the_app_untouched(server):
    with urllib.request.urlopen(server.url + "/anything?x=1") as response:
        assert response.status == 200
        assert response.read() == b"<p>plain page</p>"


def test_broadcast_reaches_subscribers_and_not_others(server):
    chat = RawClient(server.port, query="stream=" + signer.sign("chat"))
    other = RawClient(server.port, query="stream=" + signer.sign("other"))
    assert chat.status == other.status == 101
    server.wait_connections(2)
    assert server.broadcast("chat", "<turbo-stream>1</turbo-stream>") == (200, "ok")
    assert server.broadcast("other", "<turbo-stream>2</turbo-stream>") == (200, "ok")
    assert chat.recv_frame() == (True, 0x1, b"<turbo-stream>1</turbo-stream>")
    assert other.recv_frame() == (True, 0x1, b"<turbo-stream>2</turbo-stream>")
    server.broadcast_all("<turbo-stream>all</turbo-stream>")
    assert chat.recv_frame()[2] == other.recv_frame()[2] == b"<turbo-stream>all</turbo-stream>"


def test_broadcast_right_after_the_handshake_is_delivered(server):
    for i in range(5):
        client = RawClient(server.port, query="stream=" + signer.sign(f"fresh{i}"))
        server.broadcast(f"fresh{i}", "<p>first</p>")
        assert client.recv_frame()[2] == b"<p>first</p>"
        client.close()


def test_plain_get_on_the_stream_path_is_426(server):
    try:
        urllib.request.urlopen(server.url + "/turbo-stream")
    except urllib.error.HTTPError as exc:
        body = exc.read()
        assert exc.code == 426
        assert int(exc.headers["Content-Length"]) == len(body) > 0
    else:
        raise AssertionError("expected 426")


def test_forged_altered_and_bare_stream_names_are_403_before_upgrade(server):
    good = signer.sign("chat")
    forged = StreamSigner("another-secret").sign("chat")
    altered = good[:-2] + ("AA" if not good.endswith("AA") else "BB")
    for query in ("stream=chat", "stream=" + forged, "stream=" + altered):
        client = RawClient(server.port, query=query)
        assert client.status == 403, query
        assert int(client.headers["content-length"]) == len(client.buffer)
    assert "Traceback" not in server.stderr()


def test_sigterm_lets_a_request_in_progress_finish(server):
    import signal
    import socket

    from tests.support.rawws import read_http_response

    body = b"stream=chat&html=%3Cp%3Elate%3C%2Fp%3E"
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        sock.sendall(b"POST /_test/broadcast HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-www-form-urlencoded\r\n"
                     b"Content-Length: %d\r\n\r\n" % len(body) + body[:10])
        server.wait_connections(0)  # the request is being read: the server is in the middle of it
        server.proc.send_signal(signal.SIGTERM)
        sock.sendall(body[10:])
        status, _, answer = read_http_response(sock)
    assert (status, answer) == (200, b"ok")
    assert server.proc.wait(10) == 0
