"""The gunicorn worker, run for real: access log, upgrades, graceful 1001."""

import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import urllib.request
from pathlib import Path

import pytest

from tests.support.rawws import RawClient, close_payload, frame
from tests.support.server import ROOT, TEST_SECRET, wait_for
from turbo_gevent.tokens import StreamSigner

pytest.importorskip("gunicorn")


class Gunicorn:
    def __init__(self, workers=1, graceful_timeout=10, config=None):
        self.log = tempfile.NamedTemporaryFile(prefix="gunicorn-", suffix=".log", delete=False)
        env = {**os.environ, "TURBO_TEST_CONFIG": json.dumps({"secret": TEST_SECRET, **(config or {})})}
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "gunicorn", "-k", "turbo_gevent.worker.Worker", "-w", str(workers),
             "--bind", "127.0.0.1:0", "--access-logfile", "-", "--error-logfile", "-",
             "--graceful-timeout", str(graceful_timeout), "tests.support.app:app"],
            cwd=ROOT, env=env, stdout=self.log, stderr=subprocess.STDOUT,
        )
        match = wait_for(lambda: re.search(r"Listening at: http://127\.0\.0\.1:(\d+)", self.output()),
                         20, message="gunicorn to listen")
        self.port = int(match.group(1))
        wait_for(lambda: self.output().count("Booting worker") >= workers, 20, message="workers")
        self.url = f"http://127.0.0.1:{self.port}"

    def output(self):
        return Path(self.log.name).read_text(errors="replace")

    def stop(self):
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        os.unlink(self.log.name)


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
