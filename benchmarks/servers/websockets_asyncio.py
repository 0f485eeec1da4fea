"""The ``websockets`` package on asyncio, broadcasting with ``broadcast()``.

The pattern of websockets' own broadcast guide: a set of connections, each
handler waits for its connection to close, and ``broadcast(CONNECTIONS,
message)`` writes the message to every one without waiting. Keepalive pings
are off, as in every benchmarked system.

    python benchmarks/servers/websockets_asyncio.py --port 8000
"""

import argparse
import asyncio
import json

from websockets.asyncio.server import broadcast, serve
from websockets.datastructures import Headers
from websockets.http11 import Response

from control import PREFIX, Control, raise_nofile

CONNECTIONS: set = set()


async def handler(websocket) -> None:
    CONNECTIONS.add(websocket)
    try:
        await websocket.wait_closed()
    finally:
        CONNECTIONS.discard(websocket)


control = Control(lambda message: broadcast(CONNECTIONS, message), lambda: len(CONNECTIONS))


async def run(run_args: dict) -> None:
    for delay in control.steps(run_args):
        await asyncio.sleep(delay)


def process_request(connection, request):
    if not request.path.startswith(PREFIX):
        return None
    status, body, run_args = control.answer(request.path)
    if run_args is not None:
        asyncio.get_running_loop().create_task(run(run_args))
    data = json.dumps(body).encode()
    headers = Headers([("Content-Type", "application/json"), ("Content-Length", str(len(data))), ("Connection", "close")])
    return Response(status, "-", headers, data)


async def main(port: int) -> None:
    async with serve(handler, "127.0.0.1", port, ping_interval=None, process_request=process_request, backlog=1024) as server:
        await server.serve_forever()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--port", type=int, required=True)
    raise_nofile()
    asyncio.run(main(parser.parse_args().port))
