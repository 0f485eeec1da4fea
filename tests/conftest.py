import pytest

from tests.support.server import ServerProcess


@pytest.fixture
def server():
    """A real turbo-gevent server process with the default settings."""
    with ServerProcess() as process:
        yield process


@pytest.fixture
def make_server_process():
    """Start servers with custom ``TurboStreams`` settings; all stopped at the end."""
    started = []

    def start(config=None, **kwargs):
        process = ServerProcess(config=config, **kwargs)
        started.append(process)
        return process

    yield start
    for process in started:
        process.__exit__(None, None, None)
