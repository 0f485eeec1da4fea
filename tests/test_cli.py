"""The turbo-gevent command's refusals: a usage message and exit 2, never a traceback."""

import subprocess
import sys

import pytest

from tests.support.server import ROOT


@pytest.mark.parametrize(
    "args, message",
    [
        (["nocolon"], "MODULE:ATTR"),
        (["no_such_module_here:app"], "cannot import"),
        (["tests.support.app:missing"], "has no attribute"),
        (["tests.support.app:build", "--bind", "nope"], "HOST:PORT"),
        (["tests.support.app:app", "--header-timeout", "0"], "positive"),
        (["tests.support.app:app", "--grace", "nan"], "positive"),
        (["tests.support.app:app", "--certfile", "x.pem"], "go together"),
    ],
)
def test_bad_invocations_explain_themselves(args, message):
    result = subprocess.run(
        [sys.executable, "-m", "turbo_gevent.cli", *args], cwd=ROOT, capture_output=True, text=True, timeout=30
    )
    assert result.returncode == 2
    assert message in result.stderr
    assert "Traceback" not in result.stderr
