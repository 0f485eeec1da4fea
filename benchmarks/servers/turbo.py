"""turbo_gevent as its users run it: ``TurboStreams`` served by ``make_server``.

Clients connect to ``/turbo-stream?stream=TOKEN`` with a token for the stream
``bench``, signed with the secret given here; broadcasts are
``hub.broadcast("bench", fragment)``. With ``--redis URL`` the hub has a
:class:`turbo_gevent.redis_broker.RedisBroker`, so every broadcast goes
through Redis and back before it reaches the sockets.

Keepalive pings are off (``ping_interval=None``), as in every benchmarked
system: the load generator's bulk clients do not parse frames, so they would
not answer them. Everything else keeps its default.

    python benchmarks/servers/turbo.py --port 8000 --secret s3cret [--redis redis://...]
"""

from gevent import monkey

monkey.patch_all()

import argparse  # noqa: E402
import os  # noqa: E402
import sys  # noqa: E402

import gevent  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))

from turbo_gevent import Hub, TurboStreams, make_server  # noqa: E402

from control import Control, raise_nofile, wsgi_control  # noqa: E402

STREAM = "bench"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--secret", required=True)
    parser.add_argument("--redis", help="a Redis URL: broadcast through a RedisBroker")
    parser.add_argument("--send-timeout", type=float, default=10.0)
    args = parser.parse_args()
    raise_nofile()
    if args.redis:
        from turbo_gevent.redis_broker import RedisBroker

        hub = Hub(broker=RedisBroker(args.redis, channel_prefix="bench"))
    else:
        hub = Hub()
    control = Control(
        lambda message: hub.broadcast(STREAM, message),
        lambda: hub.stats()["connections"],
        hub.stats,
    )
    app = TurboStreams(
        wsgi_control(control, gevent.spawn),
        hub=hub,
        secret=args.secret,
        ping_interval=None,
        send_timeout=args.send_timeout,
    )
    if args.redis:
        hub.start()  # subscribe now, not on the first connection
    make_server(app, f"127.0.0.1:{args.port}", log=None, backlog=1024).serve_forever()


if __name__ == "__main__":
    main()
