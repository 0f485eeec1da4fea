"""The ``turbo-gevent`` command: serve a WSGI app with Turbo Streams.

    turbo-gevent MODULE:ATTR [--bind HOST:PORT] [--grace SECONDS] [--log-level LEVEL]
                 [--header-timeout SECONDS] [--certfile PEM --keyfile PEM]

Monkey-patches the process before importing the app (so its blocking I/O
cooperates with gevent), finds modules in the current directory, prints the
URL it serves, and shuts down gracefully on SIGINT/SIGTERM.
"""

from __future__ import annotations

import argparse
import sys


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="turbo-gevent", description=__doc__.split("\n\n")[0])
    parser.add_argument("app", metavar="MODULE:ATTR", help="the WSGI app, e.g. myapp:app")
    parser.add_argument("--bind", default="127.0.0.1:8000", help="HOST:PORT to listen on [%(default)s]")
    parser.add_argument("--grace", type=float, default=5.0, help="seconds to wait for clients on shutdown [%(default)s]")
    parser.add_argument("--log-level", default="INFO", help="logging level [%(default)s]")
    parser.add_argument("--header-timeout", type=float, default=None,
                        help="seconds a client may take to send a request's head [20]")
    parser.add_argument("--certfile", help="serve HTTPS and wss:// with this certificate (PEM)")
    parser.add_argument("--keyfile", help="the certificate's private key (PEM)")
    args = parser.parse_args(argv)

    from gevent import monkey

    monkey.patch_all()

    import importlib
    import logging
    import os

    from .server import parse_bind, serve

    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    module_name, sep, attr = args.app.partition(":")
    if not sep or not module_name or not attr:
        parser.error("the app must be given as MODULE:ATTR, e.g. myapp:app")
    try:
        host, port = parse_bind(args.bind)
    except ValueError as exc:
        parser.error(str(exc))
    for name in ("grace", "header_timeout"):
        value = getattr(args, name)
        if value is not None and not 0 < value < float("inf"):
            parser.error(f"--{name.replace('_', '-')} must be a positive number of seconds")
    if bool(args.certfile) != bool(args.keyfile):
        parser.error("--certfile and --keyfile go together")
    tls = {"certfile": args.certfile, "keyfile": args.keyfile} if args.certfile else {}
    sys.path.insert(0, os.getcwd())
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        parser.error(f"cannot import {module_name!r}: {exc}")
    app = module
    for part in attr.split("."):
        app = getattr(app, part, None)
        if app is None:
            parser.error(f"{module_name!r} has no attribute {attr!r}")
    if not callable(app):
        parser.error(f"{args.app} is not a WSGI callable")

    def ready(server) -> None:
        shown = "127.0.0.1" if host in ("0.0.0.0", "") else (f"[{host}]" if ":" in host else host)
        scheme = "https" if tls else "http"
        print(f"turbo-gevent: serving {args.app} at {scheme}://{shown}:{server.server_port}", flush=True)

    try:
        serve(app, args.bind, grace=args.grace, ready=ready, header_timeout=args.header_timeout, **tls)
    except OSError as exc:
        print(f"turbo-gevent: cannot listen on {args.bind}: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
