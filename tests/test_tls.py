"""wss:// end to end: the CLI serving TLS, a strict client, and the src it renders."""

import shutil
import socket
import ssl
import subprocess
import urllib.parse
import urllib.request

import pytest
from websockets.sync.client import connect

from tests.support.rawws import RawClient, handshake_request, read_http_response
from tests.support.server import TEST_SECRET, ServerProcess, wait_for
from turbo_gevent.tokens import StreamSigner


@pytest.fixture(scope="module")
def certificate(tmp_path_factory):
    if shutil.which("openssl") is None:
        pytest.skip("openssl is not installed")
    folder = tmp_path_factory.mktemp("tls")
    cert, key = folder / "cert.pem", folder / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=127.0.0.1",
         "-addext", "subjectAltName=IP:127.0.0.1", "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True,
    )
    return cert, key


def test_wss_connection_over_tls(certificate):
    cert, key = certificate
    context = ssl.create_default_context(cafile=str(cert))
    with ServerProcess(args=("--certfile", str(cert), "--keyfile", str(key))) as server:
        assert server.url.startswith("https://")
        with urllib.request.urlopen(server.url + "/page", context=context) as response:
            assert response.read() == b"<p>plain page</p>"
        uri = f"wss://127.0.0.1:{server.port}/turbo-stream?stream=" + StreamSigner(TEST_SECRET).sign("chat")
        with connect(uri, ssl=context, origin=f"https://127.0.0.1:{server.port}") as websocket:
            request = urllib.request.Request(
                server.url + "/_test/broadcast", data=b"stream=chat&html=%3Cp%3Esecure%3C%2Fp%3E"
            )
            with urllib.request.urlopen(request, context=context) as response:
                assert response.read() == b"ok"
            assert websocket.recv(timeout=10) == "<p>secure</p>"
        assert "Traceback" not in server.stderr()


@pytest.fixture
def tls_server(certificate):
    cert, key = certificate
    server = ServerProcess(
        config={"send_timeout": 1, "max_queue": 4},
        args=("--certfile", str(cert), "--keyfile", str(key), "--header-timeout", "1"),
    )
    yield server, ssl.create_default_context(cafile=str(cert))
    server.__exit__(None, None, None)


def tls_client(server, context, rcvbuf=None):
    raw = socket.socket()
    if rcvbuf:
        raw.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    raw.connect(("127.0.0.1", server.port))
    sock = context.wrap_socket(raw, server_hostname="127.0.0.1")
    sock.sendall(handshake_request(server.port, "/turbo-stream?stream=" + StreamSigner(TEST_SECRET).sign("chat")))
    client = RawClient.__new__(RawClient)
    client.sock, client.timeout = sock, 10.0
    client.status, client.headers, client.buffer = read_http_response(sock)
    assert client.status == 101
    return client


def post(server, context, html):
    request = urllib.request.Request(server.url + "/_test/broadcast", data=urllib.parse.urlencode(
        {"stream": "chat", "html": html}).encode())
    with urllib.request.urlopen(request, context=context, timeout=10) as response:
        return response.read()


def test_a_tls_client_that_stops_reading_is_dropped_and_blocks_no_one(tls_server):
    server, context = tls_server
    stuck = tls_client(server, context, rcvbuf=4096)
    healthy = tls_client(server, context)
    server.wait_connections(2)
    messages = [f"<p>{i}</p>" + "x" * 300_000 for i in range(30)]  # 9 MB: more than kernel buffers hold
    for message in messages:
        assert post(server, context, message) == b"ok"  # never waits on the stuck client
        assert healthy.recv_frame()[2].decode() == message
    wait_for(lambda: server.stats()["dropped_slow"] == 1, message="the stuck client dropped")
    assert "Traceback" not in server.stderr()
    stuck.sock.close()


def test_tls_handshakes_that_fail_are_bounded_and_quiet(tls_server):
    server, _ = tls_server
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as silent:
        assert silent.recv(1024) == b""  # no ClientHello: closed after the header timeout
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as plain:
        plain.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")  # plain HTTP on the TLS port
        try:
            assert plain.recv(1024) == b""
        except ConnectionResetError:
            pass  # closed either way
    wait_for(lambda: server.stderr().count("TLS handshake with 127.0.0.1 failed") >= 2, message="two log lines")
    assert "Traceback" not in server.stderr()
