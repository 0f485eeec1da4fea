"""wss:// end to end: the CLI serving TLS, a strict client, and the src it renders."""

import shutil
import ssl
import subprocess
import urllib.request

import pytest
from websockets.sync.client import connect

from tests.support.server import TEST_SECRET, ServerProcess
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
