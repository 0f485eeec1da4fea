"""The control endpoint every benchmarked server answers, whatever its stack.

Two GET requests on the server's own port, beside the WebSocket path:

``/_bench/stats``
    JSON: ``pid``, ``cpu`` (user + system seconds of this process, from
    ``getrusage``), ``rss_kib`` (resident memory now, from ``/proc``),
    ``connections``, ``busy`` (a broadcast run is in progress), and the last
    run's ``count``, ``elapsed``, ``fanout_s`` (seconds spent inside the
    broadcast calls), ``fanouts`` (the same, per broadcast) and ``errors``.

``/_bench/memory?mark=1`` then ``/_bench/memory?top=N``
    With ``PYTHONTRACEMALLOC=N`` in the server's environment: a snapshot,
    then the N allocation sites (with tracebacks) that grew most since it.

``/_bench/broadcast?count=N&interval=S&seq=FIRST&size=BYTES``
    Starts a run in the background and answers at once: ``count`` broadcasts,
    one every ``interval`` seconds on a fixed schedule (a late broadcast does
    not push the later ones back), numbered from ``seq``. Each one is
    :func:`payload.fragment` built just before the system's own broadcast
    call, so its ``data-t`` is the send time.

The run is a greenlet under gevent and a task under asyncio; both use
:class:`Control`, which does the bookkeeping without I/O.
"""

from __future__ import annotations

import json
import os
import resource
import sys
import time
from typing import Any, Callable
from urllib.parse import parse_qs, urlsplit

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from payload import SIZE, fragment  # noqa: E402

PREFIX = "/_bench/"


def rss_kib() -> int:
    """Resident set size of this process now, in KiB."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


class Control:
    """Bookkeeping of the control endpoint.

    Arguments:
        broadcast: ``broadcast(fragment)`` sends one message to every client.
        connections: ``connections()`` the number of open WebSockets.
        extra: ``extra()`` a dict of the system's own counters, or ``None``.
    """

    def __init__(
        self,
        broadcast: Callable[[str], Any],
        connections: Callable[[], int],
        extra: Callable[[], dict] | None = None,
    ) -> None:
        self.broadcast = broadcast
        self.connections = connections
        self.extra = extra
        self.busy = False
        self.last: dict[str, Any] = {}

    def answer(self, target: str) -> tuple[int, dict, dict | None]:
        """``(status, body, run)`` for a request target; ``run`` holds the
        arguments of a broadcast run the caller must start with :meth:`steps`."""
        parts = urlsplit(target)
        query = {k: v[-1] for k, v in parse_qs(parts.query).items()}
        name = parts.path[len(PREFIX):]
        if name == "stats":
            return 200, self.stats(), None
        if name == "memory":
            return 200, self.memory(query.get("mark") is not None, int(query.get("top", 25))), None
        if name == "broadcast":
            if self.busy:
                return 409, {"error": "a run is in progress"}, None
            run = {
                "count": int(query.get("count", 1)),
                "interval": float(query.get("interval", 1.0)),
                "seq": int(query.get("seq", 0)),
                "size": int(query.get("size", SIZE)),
            }
            self.busy = True
            return 200, {"started": run}, run
        return 404, {"error": f"unknown control {name!r}"}, None

    def stats(self) -> dict:
        body = {
            "pid": os.getpid(),
            "cpu": cpu_seconds(),
            "rss_kib": rss_kib(),
            "connections": self.connections(),
            "busy": self.busy,
            **self.last,
        }
        if self.extra is not None:
            body["extra"] = self.extra()
        return body

    def memory(self, mark: bool, top: int) -> dict:
        """Where memory went since the mark, by source line (needs PYTHONTRACEMALLOC)."""
        import gc
        import tracemalloc

        if not tracemalloc.is_tracing():
            return {"error": "start the server with PYTHONTRACEMALLOC=N"}
        gc.collect()
        snapshot = tracemalloc.take_snapshot().filter_traces(
            [tracemalloc.Filter(False, tracemalloc.__file__)]
        )
        if mark or getattr(self, "_mark", None) is None:
            self._mark = snapshot
            return {"marked": True}
        diff = snapshot.compare_to(self._mark, "traceback")
        return {
            "total_kib": sum(d.size_diff for d in diff) / 1024,
            "top": [
                {"kib": d.size_diff / 1024, "count": d.count_diff,
                 "where": [f"{f.filename}:{f.lineno}" for f in d.traceback]}
                for d in diff[:top]
            ],
        }

    def steps(self, run: dict):
        """A generator for one run: yields seconds to sleep, broadcasts between."""
        count, interval, seq, size = run["count"], run["interval"], run["seq"], run["size"]
        start = time.monotonic()
        fanouts = []
        errors = 0
        try:
            for i in range(count):
                # Always yield, even when late: the server's other work runs
                # between broadcasts as it would in production.
                yield max(0.0, start + i * interval - time.monotonic())
                t0 = time.perf_counter()
                try:
                    self.broadcast(fragment(seq + i, size))
                except Exception as exc:  # report, keep the schedule
                    errors += 1
                    self.last["error"] = repr(exc)
                fanouts.append(time.perf_counter() - t0)
        finally:
            self.last.update(
                count=count, elapsed=time.monotonic() - start, fanout_s=sum(fanouts),
                fanouts=fanouts, errors=errors
            )
            self.busy = False


def run_blocking(control: Control, run: dict) -> None:
    """Drive :meth:`Control.steps` with ``time.sleep`` (a greenlet under gevent)."""
    for delay in control.steps(run):
        time.sleep(delay)


def http_response(status: int, body: dict) -> bytes:
    data = json.dumps(body).encode()
    reason = {200: "OK", 404: "Not Found", 409: "Conflict"}.get(status, "Error")
    return (
        f"HTTP/1.1 {status} {reason}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(data)}\r\nConnection: close\r\n\r\n"
    ).encode() + data


def wsgi_control(control: Control, spawn: Callable[..., Any]) -> Callable:
    """A WSGI app answering the control endpoint; broadcast runs go to ``spawn``."""

    def app(environ, start_response):
        target = environ.get("PATH_INFO", "")
        if environ.get("QUERY_STRING"):
            target += "?" + environ["QUERY_STRING"]
        if not target.startswith(PREFIX):
            start_response("404 Not Found", [("Content-Type", "text/plain")])
            return [b"not found\n"]
        status, body, run = control.answer(target)
        if run is not None:
            spawn(run_blocking, control, run)
        data = json.dumps(body).encode()
        start_response(f"{status} -", [("Content-Type", "application/json"), ("Content-Length", str(len(data)))])
        return [data]

    return app


def raise_nofile() -> int:
    """Raise this process's open-file limit to the hard limit; returns it."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return hard
