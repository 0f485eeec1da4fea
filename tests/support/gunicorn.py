"""Run an app under ``gunicorn -k turbo_gevent.worker.Worker`` on 127.0.0.1, port 0."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

from .server import ROOT, post_form, wait_for


class GunicornProcess:
    """gunicorn with turbo_gevent's worker; its whole output in :meth:`stderr`.

    The access log goes to the same output, as ``pid=PID "REQUEST LINE" STATUS``.
    """

    def __init__(self, target: str, *, env: dict | None = None, workers: int = 1, graceful_timeout: float = 10):
        self._log = tempfile.NamedTemporaryFile(prefix="gunicorn-", suffix=".log", delete=False)
        self.proc = subprocess.Popen(
            [
                sys.executable, "-m", "gunicorn", "-k", "turbo_gevent.worker.Worker", "-w", str(workers),
                "--bind", "127.0.0.1:0", "--graceful-timeout", str(graceful_timeout),
                "--access-logfile", "-", "--access-logformat", 'pid=%(p)s "%(r)s" %(s)s',
                "--error-logfile", "-", target,
            ],
            cwd=ROOT,
            env={**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})},
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )
        try:
            self.port = int(self._wait(r"Listening at: http://127\.0\.0\.1:(\d+)")[0])
            self.pids = {int(pid) for pid in self._wait(r"Booting worker with pid: (\d+)", count=workers)}
        except BaseException:
            self.stop()
            raise
        self.url = f"http://127.0.0.1:{self.port}"

    def _wait(self, pattern: str, count: int = 1, timeout: float = 30.0) -> list[str]:
        def found():
            if self.proc.poll() is not None:
                raise RuntimeError(f"gunicorn exited:\n{self.stderr()}")
            matches = re.findall(pattern, self.stderr())
            return matches if len(matches) >= count else None

        return wait_for(found, timeout, message=f"{count} of {pattern!r}")

    def post(self, path: str, **form) -> tuple[int, str]:
        return post_form(self.url + path, **form)

    def stderr(self) -> str:
        return Path(self._log.name).read_text(errors="replace")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        os.unlink(self._log.name)
