"""The benchmark keeps working: its smoke run (200 clients, every system) in CI.

It asserts that the run completes and that nothing was lost, never timings:
speed is reported by the benchmark itself, not judged by a test.
"""

import os
import re
import shutil
import subprocess
import sys

import pytest

from tests.support.server import ROOT


def test_smoke_run_reports_every_system_without_losses(tmp_path):
    if shutil.which("taskset") is None or shutil.which("redis-server") is None:
        if os.environ.get("CI"):
            pytest.fail("the benchmark needs taskset and redis-server: .ci/run must install them")
        pytest.skip("taskset or redis-server missing")
    result = subprocess.run(
        [sys.executable, "benchmarks/run.py", "--smoke", "--out", str(tmp_path)],
        cwd=ROOT, capture_output=True, text=True, timeout=900,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    report = result.stdout
    if os.environ.get("CI"):
        assert "Skipped:" not in report, report  # every system's packages are installed in CI
    for system in ("floor (raw gevent)", "turbo_gevent", "turbo_gevent + Redis"):
        rows = re.findall(rf"^\| 200 \| {re.escape(system)} \|.*$", report, re.MULTILINE)
        assert rows, f"no fan-out row for {system}:\n{report}"
        lost = re.search(r"\| (\d+)/(\d+) \|", rows[0])
        assert lost and lost.group(1) == "0" and int(lost.group(2)) > 0, rows[0]
    assert list(tmp_path.glob("*-smoke.md")), "the report is written to --out"
