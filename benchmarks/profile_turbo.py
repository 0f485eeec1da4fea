"""Where turbo_gevent's server spends its time and memory at 10k connections.

Starts the ``turbo`` server of :mod:`run` and the same load generator, then:

1. samples the server with ``py-spy record`` while the clients connect
   (the handshake path);
2. samples it again during a run of broadcasts to every client (the fan-out
   path);
3. with ``--memory``, restarts the server under ``PYTHONTRACEMALLOC`` and
   lists the Python allocation sites that grew while the clients connected.

and writes a Markdown summary (own and total time per function, then
turbo_gevent's functions) to ``benchmarks/results/profile-<timestamp>.md``,
beside py-spy's collapsed stacks (``-connect.txt``, ``-broadcast.txt``, for
speedscope or flamegraph.pl). py-spy needs the right to read another
process's memory (root, or ``ptrace_scope`` 0)::

    python benchmarks/profile_turbo.py [--clients 10000] [--memory]
"""

from __future__ import annotations

import argparse
import collections
import datetime
import os
import re
import shutil
import subprocess
import sys
import time

import run
from run import Clients, Server, log

_FRAME = re.compile(r"^(?P<func>.*?) \((?P<file>[^:()]+)(?::(?P<line>\d+))?\)$")


def short(path: str) -> str:
    """A source path shortened to its package: ``turbo_gevent/hub.py``, ``gevent/_socketcommon.py``."""
    for marker in ("site-packages/", run.ROOT + "/", run.HERE + "/"):
        if marker in path:
            return path.split(marker, 1)[1]
    if "/lib/python3" in path:
        return path.split("/lib/python3", 1)[1].split("/", 1)[-1]
    return path


def summarize(raw: str, top: int = 25) -> tuple[int, list, list]:
    """``(samples, by own time, by total time)`` from py-spy's raw (collapsed) output.

    Rows are ``(function, file, own samples, total samples)``.
    """
    own: collections.Counter = collections.Counter()
    total: collections.Counter = collections.Counter()
    samples = 0
    for line in raw.splitlines():
        stack, _, count = line.rpartition(" ")
        if not count.isdigit():
            continue
        n = int(count)
        samples += n
        frames = []
        for frame in stack.split(";"):
            m = _FRAME.match(frame.strip())
            frames.append((m["func"], short(m["file"])) if m else (frame.strip(), ""))
        if frames:
            own[frames[-1]] += n
        for key in set(frames):
            total[key] += n
    rows = {key: (key[0], key[1], own[key], total[key]) for key in total}
    by_own = sorted(rows.values(), key=lambda r: -r[2])[:top]
    ours = sorted((r for r in rows.values() if r[1].startswith("turbo_gevent/")), key=lambda r: -r[3])
    return samples, by_own, ours


def record(pid: int, seconds: float, out: str, rate: int):
    """Start py-spy on ``pid`` for ``seconds``; its collapsed stacks go to ``out``.txt."""
    raw_path = out + ".txt"
    cmd = ["py-spy", "record", "--pid", str(pid), "--duration", str(max(1, round(seconds))),
           "--rate", str(rate), "--nonblocking"]
    raw = subprocess.Popen(cmd + ["--format", "raw", "--output", raw_path],
                           stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    return raw, raw_path


def finish(proc, path: str) -> str:
    _, err = proc.communicate(timeout=120)
    if proc.returncode != 0 or not os.path.exists(path):
        raise RuntimeError(f"py-spy failed: {err.strip()[-500:]}")
    with open(path) as f:
        return f.read()


def table(samples: int, by_own: list, ours: list) -> list[str]:
    out = [f"{samples} samples.\n", "Own time (the function itself, not what it calls), all code:\n",
           "| function | file | own % | total % |", "|---|---|---:|---:|"]
    for func, file, o, t in by_own:
        out.append(f"| `{func}` | {file} | {o / samples:.1%} | {t / samples:.1%} |")
    out += ["", "turbo_gevent's functions by total time (with what they call):\n",
            "| function | file | own % | total % |", "|---|---|---:|---:|"]
    for func, file, o, t in ours:
        out.append(f"| `{func}` | {file} | {o / samples:.1%} | {t / samples:.1%} |")
    out.append("")
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--clients", type=int, default=10000)
    parser.add_argument("--broadcasts", type=int, default=40)
    parser.add_argument("--interval", type=float, default=0.25)
    parser.add_argument("--rate", type=int, default=250, help="py-spy samples per second")
    parser.add_argument("--memory", action="store_true", help="also list allocation sites (tracemalloc)")
    parser.add_argument("--out", default=os.path.join(run.HERE, "results"))
    args = parser.parse_args()
    if shutil.which("py-spy") is None:
        log("py-spy is not installed: pip install py-spy")
        return 1
    cpus = sorted(os.sched_getaffinity(0))
    cores = (cpus[0], cpus[1]) if len(cpus) >= 2 else (None, None)
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    base = os.path.join(args.out, f"profile-{stamp}")
    os.makedirs(args.out, exist_ok=True)
    lines = [f"# Profile of turbo_gevent at {args.clients} connections, {stamp}\n",
             f"{run.machine_line(cores)}; {run.code_version()}. py-spy at {args.rate} Hz.\n"]

    server = Server("turbo", cores[0], None)
    clients = Clients(args.clients, 25, cores[1])
    try:
        spy, path = record(server.pid, 3 + args.clients / 2000, base + "-connect", args.rate)
        time.sleep(1.0)
        t = time.monotonic()
        clients.connect(server, args.clients)
        log(f"{args.clients} clients connected in {time.monotonic() - t:.1f}s")
        lines += [f"## Connecting {args.clients} clients\n"] + table(*summarize(finish(spy, path)))
        seconds = args.broadcasts * args.interval
        spy, path = record(server.pid, seconds, base + "-broadcast", args.rate)
        time.sleep(0.5)
        sample = run.measure(server, clients, system="turbo", scenario="profile", size=args.clients, rnd=0,
                             count=args.broadcasts, interval=args.interval, warmup=0)
        log(f"broadcasting: {run.brief(sample)}")
        lines += [f"## Broadcasting to {args.clients} clients ({args.broadcasts} broadcasts, one every "
                  f"{args.interval:g} s; samples include the idle time between them)\n",
                  f"Under the profiler: {run.brief(sample)}.\n"] + table(*summarize(finish(spy, path)))
    finally:
        clients.close()
        clients.stop()
        server.stop()

    if args.memory:
        os.environ["PYTHONTRACEMALLOC"] = "8"
        server = Server("turbo", cores[0], None)
        clients = Clients(args.clients, 25, cores[1])
        try:
            clients.connect(server, 200)  # past first-use allocations
            server.get("memory?mark=1", timeout=120)
            clients.connect(server, args.clients)
            time.sleep(1.0)
            memory = server.get("memory?top=20", timeout=300)
            n = args.clients - 200
            lines += [f"## Python allocations per connection ({n} connections, tracemalloc)\n",
                      f"{memory['total_kib'] / n:.2f} KiB per connection traced by tracemalloc in all "
                      "(C allocations outside Python's allocator, such as greenlet stacks and kernel "
                      "socket buffers, are not counted).\n",
                      "| bytes per connection | allocated at (innermost first) |", "|---:|---|"]
            for entry in memory["top"]:
                where = " ← ".join(short(w) for w in reversed(entry["where"][-4:]))
                lines.append(f"| {entry['kib'] * 1024 / n:.0f} | {where} |")
            lines.append("")
        finally:
            del os.environ["PYTHONTRACEMALLOC"]
            clients.close()
            clients.stop()
            server.stop()

    text = "\n".join(lines)
    with open(base + ".md", "w") as f:
        f.write(text)
    print(text)
    log(f"written to {os.path.relpath(base + '.md')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
