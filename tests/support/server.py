"""Run a WSGI app in a real ``turbo-gevent`` process on 127.0.0.1, port 0.

The tests themselves are not monkey-patched: they talk to the server over
real sockets, as a browser or a hostile peer would, and read its stderr.
"""

from __future__ import annotations

import json
import os
import re
import signal
import ssl
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
TEST_SECRET = "test-secret"


def wait_for(predicate, timeout=10.0, message="condition", interval=0.02):
    """Poll ``predicate`` until it returns a true value; fail after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {message}")
        time.sleep(interval)


# The TLS tests' servers use a throwaway self-signed certificate.
_UNVERIFIED = ssl.create_default_context()
_UNVERIFIED.check_hostname = False
_UNVERIFIED.verify_mode = ssl.CERT_NONE


def _open(url, data=None):
    return urllib.request.urlopen(url, data=data, timeout=10, context=_UNVERIFIED if url.startswith("https") else None)


def post_form(url, **form):
    """POST a form; (status, body) whatever the status."""
    data = urllib.parse.urlencode(form).encode()
    try:
        with _open(url, data) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


class ServerProcess:
    """A ``turbo-gevent MODULE:ATTR --bind 127.0.0.1:0`` child process."""

    def __init__(self, target="tests.support.app:app", config=None, env=None, log_level="INFO", args=()):
        self.target = target
        self.config = {"secret": TEST_SECRET, **(config or {})}
        self._stderr = tempfile.NamedTemporaryFile(prefix="turbo-server-", suffix=".log", delete=False)
        child_env = {**os.environ, "TURBO_TEST_CONFIG": json.dumps(self.config), "PYTHONUNBUFFERED": "1"}
        child_env.update(env or {})
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "turbo_gevent.cli", target, "--bind", "127.0.0.1:0", "--log-level", log_level, *args],
            cwd=ROOT,
            env=child_env,
            stdout=subprocess.PIPE,
            stderr=self._stderr,
            text=True,
        )
        line = self.proc.stdout.readline()
        match = re.search(r"(https?)://127\.0\.0\.1:(\d+)", line)
        if not match:
            self.proc.kill()
            raise RuntimeError(f"server did not start: {line!r}\n{self.stderr()}")
        self.port = int(match.group(2))
        self.url = f"{match.group(1)}://127.0.0.1:{self.port}"

    # -- acting inside the server -----------------------------------------

    def post(self, path, **form):
        return post_form(self.url + path, **form)

    def broadcast(self, stream, html):
        return self.post("/_test/broadcast", stream=stream, html=html)

    def broadcast_all(self, html):
        return self.post("/_test/broadcast", all="1", html=html)

    def broadcast_to_user(self, user, html):
        return self.post("/_test/broadcast", user=user, html=html)

    def stats(self):
        with _open(self.url + "/_test/stats") as response:
            return json.loads(response.read())

    def wait_connections(self, count, timeout=10.0):
        wait_for(lambda: self.stats()["connections"] == count, timeout, message=f"{count} connections")

    # -- lifetime ---------------------------------------------------------

    def stderr(self):
        return Path(self._stderr.name).read_text(errors="replace")

    def rss_kib(self):
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
        raise RuntimeError("no VmRSS")

    def terminate(self, timeout=15.0):
        """SIGTERM and wait; returns the exit code."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc.stdout.close()
        return self.proc.returncode

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.terminate()
        os.unlink(self._stderr.name)
