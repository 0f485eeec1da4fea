"""The gunicorn worker, run for real: access log, upgrades, graceful 1001."""

import json
import re
import signal
import urllib.request

import pytest

from tests.support.gunicorn import GunicornProcess
from tests.support.rawws import RawClient, close_payload, frame
from tests.support.server import TEST_SECRET, wait_for
from turbo_gevent.tokens import StreamSigner

pytest.importorskip("gunicorn")


class Gunicorn(GunicornProcess):
    def __init__(self, workers=1, graceful_timeout=10, config=None):
        env = {"TURBO_TEST_CONFIG": json.dumps({"secret": TEST_SECRET, **(config or {})})}
        super().__init__("tests.support.app:app", env=env, workers=workers, graceful_timeout=graceful_timeout)

    def output(self):
        return self.stderr()

    def stop(self):
        if self.proc.poll() is None:
            self.proc.kill()  # the tests that stop it gracefully do it themselves
        super().stop()


@pytest.fixture
def gunicorn():
    started = []

    def start(**kwargs):
        started.append(Gunicorn(**kwargs))
        return started[-1]

    yield start
    for process in started:
        process.stop()


def test_access_log_records_pages_and_upgrades(gunicorn):
    server = gunicorn()
    with urllib.request.urlopen(server.url + "/page") as response:
        assert response.status == 200
    client = RawClient(server.port, query="stream=" + StreamSigner(TEST_SECRET).sign("chat"))
    assert client.status == 101
    client.send(frame(0x8, close_payload(1000)))
    assert client.expect_close_code() == 1000
    wait_for(lambda: '"GET /page HTTP/1.1" 200' in server.output(), message="page in access log")
    wait_for(lambda: re.search(r'"GET /turbo-stream\?stream=\[redacted\] HTTP/1.1" 101', server.output()),
             message="upgrade in access log")


def test_library_log_lines_go_to_gunicorns_error_log(gunicorn):
    server = gunicorn()
    forged = RawClient(server.port, query="stream=" + StreamSigner("not-the-secret").sign("chat"))
    assert forged.status == 403
    wait_for(lambda: re.search(r"\[\d+\] \[INFO\] refused 403 from 127\.0\.0\.1:\d+: stream token has a bad signature",
                               server.output()), message="turbo_gevent's line, formatted as gunicorn's")


def test_graceful_shutdown_sends_1001_and_exits_when_clients_answer(gunicorn):
    server = gunicorn(graceful_timeout=20)
    token = StreamSigner(TEST_SECRET).sign("chat")
    clients = [RawClient(server.port, query="stream=" + token) for _ in range(3)]
    assert all(c.status == 101 for c in clients)
    server.proc.send_signal(signal.SIGTERM)
    for client in clients:
        assert client.expect_close_code(timeout=10) == 1001
        client.send(frame(0x8, close_payload(1001)))
    # Exits once every client answered, long before the 20 s graceful timeout.
    assert server.proc.wait(timeout=10) == 0
    assert "Traceback" not in server.output()
