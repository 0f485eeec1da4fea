"""Fan-out benchmark: turbo_gevent against a floor and against other stacks.

One command runs every scenario for every system, alternating the systems
over several rounds, and prints a Markdown report that is also written to
``benchmarks/results/<timestamp>.md``::

    python benchmarks/run.py            # the full comparison (about 15 minutes)
    python benchmarks/run.py --smoke    # 200 clients, a few seconds a system

Systems (``--systems``): ``floor`` (a minimal gevent server, see
``servers/floor.py``), ``turbo`` (turbo_gevent, in-process hub),
``turbo-redis`` (turbo_gevent with a RedisBroker), ``turbo-flask``
(turbo-flask on flask-sock, gunicorn gevent worker) and ``websockets``
(the websockets package's ``broadcast()`` on asyncio).

Scenarios (``--scenarios``):

``fanout``
    clients connect in steps to each of ``--sizes``; at each size, after
    ``--warmup`` discarded broadcasts, ``--count`` broadcasts of one
    300-byte fragment every ``--interval`` seconds. Per-recipient delivery
    latency (p50/p95/p99, from the probe clients), the time until the last
    recipient had it, messages lost, server CPU per delivered message, RSS,
    and RSS per idle connection at the largest size.
``saturation``
    broadcasts per second to ``--saturation-clients`` clients, raised step by
    step until p95 passes 100 ms, the server falls behind its schedule or a
    message is lost; the last rate that passed.
``slow``
    ``--slow-count`` broadcasts at ``--slow-rate`` per second to 1000 healthy
    clients, without and then with one more client that never reads (4 KiB
    receive buffer): the healthy clients' p95 and max, and when the server
    dropped the slow one.

The server runs on one core and the load generator (``loadgen.py``) on
another, both pinned; the load generator's CPU is reported so that it can be
seen not to be the bottleneck.
"""

from __future__ import annotations

import argparse
import datetime
import http.client
import json
import math
import os
import platform
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from typing import Any

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, HERE)
sys.path.insert(0, ROOT)

from payload import SIZE, frame_length  # noqa: E402

SYSTEMS = ("floor", "turbo", "turbo-redis", "turbo-flask", "websockets", "floor-hash")
LABELS = {
    "floor": "floor (raw gevent)",
    "turbo": "turbo_gevent",
    "turbo-redis": "turbo_gevent + Redis",
    "turbo-flask": "turbo-flask",
    "websockets": "websockets broadcast()",
    "floor-hash": "floor, set order",
}
SECRET = "benchmark-secret"
FRAME = frame_length(SIZE)
BULK_PER_PROCESS = 6000


def log(*args: Any) -> None:
    print(*args, file=sys.stderr, flush=True)


# -- processes -------------------------------------------------------------


def pinned(core: int | None) -> list[str]:
    if core is None:
        return []
    if shutil.which("taskset"):
        return ["taskset", "-c", str(core)]
    return []


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def percentile(values: list[float], q: float) -> float:
    if not values:
        return math.nan
    values = sorted(values)
    k = (len(values) - 1) * q
    lo, hi = math.floor(k), math.ceil(k)
    return values[lo] + (values[hi] - values[lo]) * (k - lo)


CHILDREN: list[subprocess.Popen] = []  # killed if the runner is interrupted


def spawn(cmd: list[str], **kwargs: Any) -> subprocess.Popen:
    proc = subprocess.Popen(cmd, **kwargs)
    CHILDREN.append(proc)
    return proc


def kill_children() -> None:
    for proc in CHILDREN:
        if proc.poll() is None:
            try:
                if proc.pid == os.getpgid(proc.pid):
                    os.killpg(proc.pid, signal.SIGKILL)
                else:
                    proc.kill()
            except OSError:
                pass


class Redis:
    """A throwaway redis-server on the server's core."""

    def __init__(self, core: int | None) -> None:
        self.port = free_port()
        self.dir = tempfile.mkdtemp(prefix="bench-redis-")
        self.proc = spawn(
            pinned(core) + ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1",
                            "--save", "", "--appendonly", "no", "--dir", self.dir],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1) as s:
                    s.sendall(b"PING\r\n")
                    if s.recv(16).startswith(b"+PONG"):
                        break
            except OSError:
                time.sleep(0.05)
        else:
            raise RuntimeError("redis-server did not start")
        self.url = f"redis://127.0.0.1:{self.port}/0"

    def cpu(self) -> float:
        return proc_cpu(self.proc.pid)

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(10)
        shutil.rmtree(self.dir, ignore_errors=True)


def process_times() -> dict[int, float]:
    """CPU seconds of every user-space process now (kernel threads left out), by pid."""
    tick = os.sysconf("SC_CLK_TCK")
    times = {}
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if fields[1] == "2" or name == "2":  # a kernel thread
            continue
        times[int(name)] = (int(fields[11]) + int(fields[12])) / tick
    return times


def command_line(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read().replace(b"\0", b" ").decode(errors="replace").strip()[:80]
    except OSError:
        return f"pid {pid}"


def others_cpu(before: dict[int, float], after: dict[int, float], ours: set[int]) -> float:
    """CPU seconds that processes other than ``ours`` used between two :func:`process_times`."""
    return sum(t - before.get(pid, 0.0) for pid, t in after.items() if pid not in ours)


def machine_steal() -> float:
    with open("/proc/stat") as f:
        fields = [int(x) for x in f.readline().split()[1:]]
    return fields[7] / os.sysconf("SC_CLK_TCK") if len(fields) > 7 else 0.0


def proc_cpu(pid: int) -> float:
    """User + system CPU seconds of a process, from /proc/PID/stat."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class Server:
    """One benchmarked server process and its control endpoint."""

    def __init__(self, system: str, core: int | None, redis: Redis | None, send_timeout: float = 10.0) -> None:
        self.system = system
        self.port = free_port()
        py = sys.executable
        servers = os.path.join(HERE, "servers")
        path = "/"
        if system in ("floor", "floor-hash"):
            cmd = [py, os.path.join(servers, "floor.py"), "--port", str(self.port)]
            if system == "floor-hash":
                cmd += ["--order", "hash"]
        elif system in ("turbo", "turbo-redis"):
            from turbo_gevent.tokens import StreamSigner

            cmd = [py, os.path.join(servers, "turbo.py"), "--port", str(self.port), "--secret", SECRET,
                   "--send-timeout", str(send_timeout)]
            if system == "turbo-redis":
                cmd += ["--redis", redis.url]
            path = "/turbo-stream?stream=" + StreamSigner(SECRET).sign("bench")
        elif system == "turbo-flask":
            cmd = [py, "-m", "gunicorn", "-k", "gevent", "-w", "1", "--worker-connections", "20000",
                   "--backlog", "1024", "-b", f"127.0.0.1:{self.port}", "--chdir", servers,
                   "--log-level", "warning", "turbo_flask_app:app"]
            path = "/turbo-stream"
        elif system == "websockets":
            cmd = [py, os.path.join(servers, "websockets_asyncio.py"), "--port", str(self.port)]
        else:
            raise ValueError(f"unknown system {system!r}")
        self.path = path
        self.stderr = tempfile.TemporaryFile()
        self.proc = spawn(pinned(core) + cmd, stdout=self.stderr, stderr=self.stderr,
                                     cwd=servers, start_new_session=True)
        deadline = time.monotonic() + 30
        while True:
            try:
                self.first = self.stats()
                break
            except OSError:
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"{system} did not start:\n{self.output()}")
                time.sleep(0.1)
        self.pid = self.first["pid"]

    def output(self) -> str:
        self.stderr.seek(0)
        return self.stderr.read().decode(errors="replace")[-3000:]

    def get(self, what: str, timeout: float = 30.0) -> dict:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)
        try:
            conn.request("GET", "/_bench/" + what)
            response = conn.getresponse()
            body = json.loads(response.read())
            if response.status != 200:
                raise RuntimeError(f"{what}: {response.status} {body}")
            return body
        finally:
            conn.close()

    def stats(self) -> dict:
        return self.get("stats")

    def broadcast(self, count: int, interval: float, seq: int, size: int = SIZE) -> None:
        self.get(f"broadcast?count={count}&interval={interval}&seq={seq}&size={size}")

    def wait_idle(self, scheduled: float, late: float) -> dict:
        """The stats once a run scheduled to take ``scheduled`` seconds is over.

        Asks only after the schedule, then every 0.1 s, so that the control
        requests add next to nothing to the CPU measured; gives up ``late``
        seconds past the schedule.
        """
        started = time.monotonic()
        time.sleep(scheduled)
        while True:
            stats = self.stats()
            if not stats["busy"] or time.monotonic() - started > scheduled + late:
                return stats
            time.sleep(0.1)

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        self.stderr.close()


class Worker:
    """One load generator process, driven over its stdin/stdout."""

    def __init__(self, role: str, source: str, core: int | None) -> None:
        self.role = role
        self.proc = spawn(
            pinned(core) + [sys.executable, os.path.join(HERE, "loadgen.py"), "--role", role, "--source", source],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, bufsize=1,
        )
        self.clients = 0

    def send(self, **msg: Any) -> None:
        self.proc.stdin.write(json.dumps(msg) + "\n")
        self.proc.stdin.flush()

    def receive(self) -> dict:
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError(f"load generator ({self.role}) exited")
        return json.loads(line)

    def call(self, **msg: Any) -> dict:
        self.send(**msg)
        return self.receive()

    def cpu(self) -> float:
        return proc_cpu(self.proc.pid)

    def stop(self) -> None:
        try:
            self.send(cmd="quit")
        except OSError:
            pass
        try:
            self.proc.wait(5)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


class Clients:
    """Bulk and probe load generators; probes every ``stride``-th connection."""

    def __init__(self, max_clients: int, stride: int, core: int | None) -> None:
        n_bulk = max(1, math.ceil(max_clients / BULK_PER_PROCESS))
        self.bulk = [Worker("bulk", f"127.0.0.{2 + i}", core) for i in range(n_bulk)]
        self.probe = Worker("probe", "127.0.0.100", core)
        self.workers = self.bulk + [self.probe]
        self.stride = stride
        self.total = 0
        self.chunks = 0
        self.failures: list = []

    def connect(self, server: Server, size: int) -> int:
        """Grow to ``size`` open clients; returns how many are open."""
        where = dict(host="127.0.0.1", port=server.port, path=server.path)
        while self.total < size:
            n = min(self.stride, size - self.total)
            bulk = self.bulk[self.chunks % len(self.bulk)]
            self.chunks += 1
            calls = [(self.probe, 1)] + ([(bulk, n - 1)] if n > 1 else [])
            for worker, k in calls:
                worker.send(cmd="connect", n=k, **where)
            for worker, k in calls:
                answer = worker.receive()
                if answer["failed"]:
                    self.failures.extend(answer["errors"])
                worker.clients = answer["open"]
            self.total += n
        return sum(w.clients for w in self.workers)

    def call_all(self, **msg: Any) -> list[dict]:
        for worker in self.workers:
            worker.send(**msg)
        return [worker.receive() for worker in self.workers]

    def mark(self, frame: int) -> None:
        self.call_all(cmd="mark", frame=frame)

    def batch(self, seconds: float) -> None:
        for worker in self.bulk:
            worker.call(cmd="batch", seconds=seconds)

    def report(self, first: int, count: int, frame: int, probes: bool = True) -> list[dict]:
        workers = self.workers if probes else self.bulk
        for worker in workers:
            worker.send(cmd="report", frame=frame, first=first, count=count)
        return [worker.receive() for worker in workers]

    def wait_delivered(self, first: int, count: int, frame: int, quiet: float = 1.0, limit: float = 30.0) -> None:
        """Until the bulk clients miss nothing, or nothing arrived for ``quiet`` seconds."""
        last_missing, last_change = None, time.monotonic()
        deadline = time.monotonic() + limit
        while time.monotonic() < deadline:
            missing = sum(r["missing"] for r in self.report(first, count, frame, probes=False))
            if missing == 0:
                return
            if missing != last_missing:
                last_missing, last_change = missing, time.monotonic()
            elif time.monotonic() - last_change > quiet:
                return
            time.sleep(0.05)

    def cpu(self) -> float:
        return sum(w.cpu() for w in self.workers)

    def close(self) -> None:
        self.call_all(cmd="close")
        for worker in self.workers:
            worker.clients = 0
        self.total = 0
        self.chunks = 0

    def stop(self) -> None:
        for worker in self.workers:
            worker.stop()


# -- measuring ---------------------------------------------------------------


@dataclass
class Sample:
    """What one measured run of broadcasts gave."""

    system: str
    scenario: str
    clients: int
    round: int
    count: int
    latencies: list[float] = field(default_factory=list)
    last: list[float] = field(default_factory=list)
    lost: int = 0
    delivered: int = 0
    server_cpu: float = 0.0
    extra_cpu: float = 0.0  # redis-server, for the Redis variant
    loadgen_cpu: float = 0.0
    elapsed: float = 0.0
    rss_kib: int = 0
    rss_idle_kib: int = 0
    rss_start_kib: int = 0
    fanout_s: float = 0.0
    errors: int = 0
    closed_by_server: int = 0
    slow_drop_s: float | None = None
    dropped_slow: int | None = None
    rate: float = 0.0
    target_rate: float = 0.0
    first_sent: float | None = None
    stuck: bool = False  # the server had not finished the run when it was given up
    foreign_cpu: float = 0.0  # CPU seconds other processes of the machine used during the run
    steal: float = 0.0  # CPU seconds the hypervisor took from the machine during the run
    foreign_top: str = ""  # the busiest of those other processes
    fanouts: list = field(default_factory=list)  # seconds inside the broadcast call, per broadcast
    per_broadcast: list = field(default_factory=list)  # (seq, sent, probe min, median, max, last)
    stall_s: float | None = None  # when the slow client's buffers were full, after the first broadcast

    @property
    def cpu_per_msg_us(self) -> float:
        return self.server_cpu / self.delivered * 1e6 if self.delivered else math.nan


SEQ = [0]


def measure(server: Server, clients: Clients, *, system: str, scenario: str, size: int, rnd: int,
            count: int, interval: float, warmup: int, redis: Redis | None = None,
            fragment: int = SIZE, late: float = 60.0) -> Sample:
    """Warm up, then ``count`` broadcasts; what the probes and the bulk clients saw.

    ``late``: seconds past the schedule after which a run that has not
    finished (a server stuck on one client) is given up.
    """
    frame = frame_length(fragment)
    if warmup:
        first = SEQ[0]
        SEQ[0] += warmup
        clients.mark(frame)
        server.broadcast(warmup, interval, first, fragment)
        server.wait_idle((warmup - 1) * interval, late)
        clients.wait_delivered(first, warmup, frame)
    first = SEQ[0]
    SEQ[0] += count
    clients.mark(frame)
    stats0 = server.stats()
    cpu0 = clients.cpu()
    redis0 = redis.cpu() if redis else 0.0
    others0, steal0 = process_times(), machine_steal()
    t0 = time.monotonic()
    server.broadcast(count, interval, first, fragment)
    stats1 = server.wait_idle((count - 1) * interval, late)
    elapsed = time.monotonic() - t0
    clients.wait_delivered(first, count, frame)
    reports = clients.report(first, count, frame)
    stats2 = server.stats()
    sample = Sample(system, scenario, size, rnd, count)
    sample.loadgen_cpu = clients.cpu() - cpu0
    sample.steal = machine_steal() - steal0
    sample.elapsed = elapsed
    sample.server_cpu = stats2["cpu"] - stats0["cpu"]
    sample.extra_cpu = (redis.cpu() - redis0) if redis else 0.0
    # Whatever else ran on the machine meanwhile: load this benchmark did not make.
    ours = {os.getpid(), server.pid, server.proc.pid} | {w.proc.pid for w in clients.workers}
    if redis is not None:
        ours.add(redis.proc.pid)
    others1 = process_times()
    sample.foreign_cpu = others_cpu(others0, others1, ours)
    busiest = max(((t - others0.get(pid, 0.0), pid) for pid, t in others1.items() if pid not in ours), default=None)
    if busiest is not None and busiest[0] > 0.05:
        sample.foreign_top = command_line(busiest[1])
    sample.fanouts = stats1.get("fanouts", [])
    sample.rss_kib = stats2["rss_kib"]
    sample.fanout_s = stats1.get("fanout_s", 0.0)
    sample.errors = stats1.get("errors", 0)
    sample.stuck = stats1["busy"]
    sample.rate = count / stats1["elapsed"] if stats1.get("elapsed") and not sample.stuck else math.nan
    healthy = 0
    sent_at: dict[int, float] = {}
    worst: dict[int, float] = {}
    by_seq: dict[int, list] = {}
    for report in reports:
        sample.lost += report["missing"]
        sample.closed_by_server += report["closed_by_server"]
        healthy += report["clients"]
        for seq, sent, latency in report.get("records", ()):
            sample.latencies.append(latency)
            sent_at[seq] = sent
            by_seq.setdefault(seq, []).append(latency)
            if latency > worst.get(seq, -1.0):
                worst[seq] = latency
        if report["slow_reset_at"] is not None and report["slow_opened_at"] is not None:
            sample.slow_drop_s = report["slow_reset_at"]
    sample.delivered = healthy * count - sample.lost
    bulk_done = [r["completions"] for r in reports if r["role"] == "bulk" and r["clients"]]
    for i in range(count):
        seq = first + i
        if seq not in sent_at:
            continue
        last = worst.get(seq, 0.0)
        for done in bulk_done:
            if i < len(done):
                last = max(last, done[i] - sent_at[seq])
            else:
                last = math.inf
        sample.last.append(last)
        mine = sorted(x for x in by_seq.get(seq, ()))
        if mine:
            sample.per_broadcast.append((seq, sent_at[seq], mine[0], mine[len(mine) // 2], mine[-1], last))
    if sample.slow_drop_s is not None and sent_at:
        sample.slow_drop_s -= min(sent_at.values())
    sample.first_sent = min(sent_at.values()) if sent_at else None
    extra = stats2.get("extra") or {}
    if "dropped_slow" in extra:
        sample.dropped_slow = extra["dropped_slow"]
    return sample


# -- scenarios ---------------------------------------------------------------


def run_fanout(system: str, args, rnd: int, cores, redis) -> list[Sample]:
    sizes = sorted(args.sizes if system != "turbo-redis" else args.redis_sizes)
    server = Server(system, cores[0], redis)
    clients = Clients(max(sizes), args.stride, cores[1])
    samples = []
    try:
        rss_start = server.stats()["rss_kib"]
        for size in sizes:
            t = time.monotonic()
            open_now = clients.connect(server, size)
            time.sleep(0.5)
            stats = server.stats()
            log(f"  {system}: {open_now}/{size} clients open in {time.monotonic() - t:.1f}s"
                f" (server counts {stats['connections']}), RSS {stats['rss_kib'] / 1024:.0f} MiB")
            if open_now < size:
                log(f"  {system}: only {open_now} of {size} connected: {clients.failures[:3]}")
                if open_now < 0.99 * size:
                    samples.append(Sample(system, "fanout", size, rnd, 0, lost=-1, rss_kib=stats["rss_kib"],
                                          rss_start_kib=rss_start, rss_idle_kib=stats["rss_kib"]))
                    break
            for attempt in range(args.retries + 1):
                sample = measure(server, clients, system=system, scenario="fanout", size=size, rnd=rnd,
                                 count=args.count, interval=args.interval, warmup=args.warmup, redis=redis)
                other = sample.foreign_cpu / max(sample.elapsed, 1e-9)
                if other <= args.max_other or attempt == args.retries:
                    break
                log(f"  {system} @ {size}: other processes took {other:.0%} of a core ({sample.foreign_top}); again")
            sample.rss_start_kib = rss_start
            sample.rss_idle_kib = stats["rss_kib"]
            samples.append(sample)
            log(f"  {system} @ {size}: {brief(sample)}")
    finally:
        clients.close()
        clients.stop()
        server.stop()
    return samples


def run_idle(system: str, args, rnd: int, cores, redis) -> list[Sample]:
    """RSS of a fresh server before any client, and with ``max(--sizes)`` idle clients."""
    size = max(args.sizes)
    server = Server(system, cores[0], redis)
    clients = Clients(size, args.stride, cores[1])
    try:
        time.sleep(0.5)
        before = server.stats()["rss_kib"]
        open_now = clients.connect(server, size)
        time.sleep(1.0)
        after = server.stats()["rss_kib"]
        log(f"  {system}: {open_now} idle clients, RSS {before / 1024:.0f} → {after / 1024:.0f} MiB,"
            f" {(after - before) / max(open_now, 1):.1f} KiB each")
        return [Sample(system, "idle", open_now, rnd, 0, rss_start_kib=before, rss_idle_kib=after, rss_kib=after,
                       lost=0 if open_now >= size else -1)]
    finally:
        clients.close()
        clients.stop()
        server.stop()


def run_saturation(system: str, args, rnd: int, cores, redis) -> list[Sample]:
    """Double the rate until a step fails, then halve the gap a few times."""
    server = Server(system, cores[0], redis)
    clients = Clients(args.saturation_clients, args.stride, cores[1])
    samples = []

    def step(rate: float) -> bool:
        count = max(30, int(rate * args.saturation_seconds))
        sample = measure(server, clients, system=system, scenario="saturation", size=args.saturation_clients,
                         rnd=rnd, count=count, interval=1.0 / rate, warmup=0, redis=redis, late=10.0)
        sample.target_rate = rate
        samples.append(sample)
        log(f"  {system} @ {rate:.0f}/s: achieved {sample.rate:.0f}/s, p95 {percentile(sample.latencies, .95) * 1000:.1f} ms,"
            f" lost {sample.lost}, loadgen CPU {sample.loadgen_cpu / sample.elapsed:.0%}")
        time.sleep(0.3)
        return ok_step(sample)

    try:
        clients.connect(server, args.saturation_clients)
        clients.batch(args.saturation_batch)
        time.sleep(0.3)
        measure(server, clients, system=system, scenario="warmup", size=args.saturation_clients, rnd=rnd,
                count=max(args.warmup, 10), interval=0.05, warmup=0)
        low, high = 0.0, None
        rate = args.saturation_start
        while rate <= args.saturation_max:
            if not step(rate):
                high = rate
                break
            low = rate
            rate *= 2
        for _ in range(args.saturation_bisect if high else 0):
            rate = (low + high) / 2 if low else high / 2
            if step(rate):
                low = rate
            else:
                high = rate
    finally:
        clients.close()
        clients.stop()
        server.stop()
    return samples


def kernel_absorbs(rcvbuf: int) -> int:
    """Bytes the kernel takes for a peer that never reads (its receive buffer + our send buffer)."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        with socket.socket() as client:
            client.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
            client.connect(listener.getsockname())
            server, _ = listener.accept()
            with server:
                server.setblocking(False)
                total, chunk = 0, b"x" * 4096
                while True:
                    try:
                        n = server.send(chunk)
                    except BlockingIOError:
                        return total
                    total += n
                    if n < len(chunk):
                        return total


def run_slow(system: str, args, rnd: int, cores, redis) -> list[Sample]:
    samples = []
    frame = frame_length(args.slow_size)
    stall_after = math.ceil(kernel_absorbs(4096) / frame)  # broadcasts until its buffers are full
    for with_slow in (False, True):
        server = Server(system, cores[0], redis, send_timeout=args.send_timeout)
        clients = Clients(args.slow_clients, args.stride, cores[1])
        try:
            if with_slow:
                clients.probe.call(cmd="slow", rcvbuf=4096, host="127.0.0.1", port=server.port, path=server.path)
            clients.connect(server, args.slow_clients)
            time.sleep(0.3)
            sample = measure(server, clients, system=system, scenario="slow" if with_slow else "healthy",
                             size=args.slow_clients, rnd=rnd, count=args.slow_count,
                             interval=1.0 / args.slow_rate, warmup=args.warmup, fragment=args.slow_size, late=10.0)
            sample.stall_s = stall_after / args.slow_rate
            samples.append(sample)
            drop = ""
            if with_slow:
                drop = (", slow client never dropped" if sample.slow_drop_s is None else
                        f", slow client reset {sample.slow_drop_s:.1f} s after the first broadcast"
                        f" (its buffers full after ≈{sample.stall_s:.1f} s)")
            log(f"  {system} {'with' if with_slow else 'without'} a slow client: {brief(sample)}{drop}")
        finally:
            clients.close()
            clients.stop()
            server.stop()
    return samples


def brief(s: Sample) -> str:
    return (f"p50 {percentile(s.latencies, .5) * 1000:.1f} ms, p95 {percentile(s.latencies, .95) * 1000:.1f} ms,"
            f" last {percentile(s.last, .5) * 1000:.1f} ms, lost {s.lost}, {s.cpu_per_msg_us:.1f} µs CPU/msg,"
            f" loadgen CPU {s.loadgen_cpu / max(s.elapsed, 1e-9):.0%}")


# -- the report ----------------------------------------------------------------


def ms(value: float) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    if math.isinf(value):
        return "∞"
    return f"{value * 1000:.1f}"


def ratio(value: float, floor: float) -> str:
    if not floor or math.isnan(value) or math.isnan(floor) or math.isinf(value):
        return ""
    return f" ({value / floor:.2f}×)"


def group(samples: list[Sample], **where) -> list[Sample]:
    return [s for s in samples if all(getattr(s, k) == v for k, v in where.items())]


def median_of(samples: list[Sample], values, q: float) -> float:
    """The median over the rounds of each round's ``q`` percentile of ``values(sample)``."""
    per_round = [percentile(values(s), q) for s in samples if values(s)]
    return statistics.median(per_round) if per_round else math.nan


def pooled(samples: list[Sample]) -> dict:
    """Round-robust figures: percentiles are the median over the rounds of each round's own."""
    last = [x for s in samples for x in s.last]
    cpu = [s.cpu_per_msg_us for s in samples if s.delivered]
    lat = lambda s: s.latencies  # noqa: E731
    return {
        "p50": median_of(samples, lat, .5), "p95": median_of(samples, lat, .95), "p99": median_of(samples, lat, .99),
        "last_p50": median_of(samples, lambda s: s.last, .5), "last_max": max(last) if last else math.nan,
        "max": max((x for s in samples for x in s.latencies), default=math.nan),
        "foreign": max((s.foreign_cpu / s.elapsed for s in samples if s.elapsed), default=0.0),
        "steal": max((s.steal / s.elapsed for s in samples if s.elapsed), default=0.0),
        "lost": sum(s.lost for s in samples if s.lost > 0),
        "sent": sum(s.delivered + max(s.lost, 0) for s in samples),
        "cpu": statistics.median(cpu) if cpu else math.nan,
        "cpu_min": min(cpu) if cpu else math.nan, "cpu_max": max(cpu) if cpu else math.nan,
        "p95_rounds": [percentile(s.latencies, .95) for s in samples],
        "rss": max(s.rss_kib for s in samples) if samples else 0,
        "loadgen": max((s.loadgen_cpu / s.elapsed for s in samples if s.elapsed), default=math.nan),
        "broadcasts": sum(s.count for s in samples),
        "failed": any(s.lost < 0 for s in samples),
        "fanout_ms": statistics.median([s.fanout_s / s.count * 1000 for s in samples if s.count]) if samples else math.nan,
    }


def report(samples: list[Sample], args, machine: str, took: float) -> str:
    out = []
    now = datetime.datetime.now().strftime("%Y-%m-%d %H:%M")
    out.append(f"# Fan-out benchmark, {now}\n")
    out.append(f"{machine}; {code_version()}. Command: `{' '.join(['python', 'benchmarks/run.py'] + sys.argv[1:])}`, "
               f"{args.rounds} round(s), systems alternating, {took / 60:.1f} min.\n")
    fan = group(samples, scenario="fanout")
    if fan:
        out.append(f"## Fan-out: one {SIZE}-byte fragment every {args.interval:g} s\n")
        out.append(f"{args.count} measured broadcasts per run after {args.warmup} discarded. "
                   "Latency is per recipient (send time in the payload to arrival at a probe client); "
                   "*last* is the time until the last of all clients had a broadcast (median, and worst of all "
                   "rounds). Percentiles and CPU are the median over the rounds of each round's figure; CPU is "
                   "the server process's own user+system time per delivered message. Ratios to the floor in "
                   "brackets. RSS at the end of the run. *Load gen.* is the load generator's CPU (of its one core); "
                   "*other* the CPU that other processes of the machine used meanwhile (of one core, worst round): "
                   "a run that shares the machine is noisier.\n")
        out.append("| clients | system | p50 ms | p95 ms | p99 ms | last p50 ms | last max ms | lost | CPU µs/msg | RSS MiB | load gen. | other |")
        out.append("|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
        sizes = sorted({s.clients for s in fan})
        for size in sizes:
            floor = pooled(group(fan, system="floor", clients=size))
            for system in args.systems:
                got = group(fan, system=system, clients=size)
                if not got:
                    continue
                p = pooled(got)
                if p["failed"]:
                    out.append(f"| {size} | {LABELS[system]} | could not connect {size} clients | | | | | | | {p['rss'] / 1024:.0f} | |")
                    continue
                vs = system != "floor"
                out.append(
                    f"| {size} | {LABELS[system]} | {ms(p['p50'])} | {ms(p['p95'])}{ratio(p['p95'], floor['p95']) if vs else ''} | "
                    f"{ms(p['p99'])} | {ms(p['last_p50'])} | {ms(p['last_max'])} | {p['lost']}/{p['sent']} | "
                    f"{p['cpu']:.1f}{ratio(p['cpu'], floor['cpu']) if vs else ''} | {p['rss'] / 1024:.0f} | {p['loadgen']:.0%} | "
                    f"{p['foreign']:.0%} |")
        out.append("")
    if fan:
        spread = []
        for size in sizes:
            for system in args.systems:
                got = group(fan, system=system, clients=size)
                if len(got) > 1 and not pooled(got)["failed"]:
                    rounds = ", ".join(ms(x) for x in pooled(got)["p95_rounds"])
                    cpus = ", ".join(f"{s.cpu_per_msg_us:.1f}" for s in got)
                    other = ", ".join(f"{s.foreign_cpu / s.elapsed:.0%}" for s in got if s.elapsed)
                    spread.append(f"| {size} | {LABELS[system]} | {rounds} | {cpus} | {other} |")
        if spread:
            out.append("### Round to round\n")
            out.append("| clients | system | p95 ms per round | CPU µs/msg per round | other load per round |")
            out.append("|---:|---|---|---|---|")
            out.extend(spread)
            out.append("")
        redis = group(fan, system="turbo-redis")
        if redis:
            out.append("### Redis broker vs in-process hub\n")
            out.append("| clients | p50 in-process ms | p50 Redis ms | Redis adds ms | redis-server CPU µs/broadcast (10 ms ticks) |")
            out.append("|---:|---:|---:|---:|---:|")
            for size in sorted({s.clients for s in redis}):
                a = pooled(group(fan, system="turbo", clients=size))
                b = pooled(group(redis, clients=size))
                rs = group(redis, clients=size)
                per_b = statistics.median([s.extra_cpu / s.count * 1e6 for s in rs if s.count])
                out.append(f"| {size} | {ms(a['p50'])} | {ms(b['p50'])} | {ms(b['p50'] - a['p50'])} | {per_b:.0f} |")
            out.append("")
    idle = group(samples, scenario="idle")
    if idle:
        out.append("## Memory per idle connection\n")
        out.append("A fresh server, then every client connected and left idle (no broadcast yet): "
                   "(RSS idle − RSS before the first client) ÷ clients, from the server's /proc/self/status.\n")
        out.append("| system | clients | RSS before MiB | RSS idle MiB | KiB per connection |")
        out.append("|---|---:|---:|---:|---:|")
        for system in args.systems:
            for s in group(idle, system=system):
                per = (s.rss_idle_kib - s.rss_start_kib) / s.clients if s.clients else math.nan
                out.append(f"| {LABELS[system]} | {s.clients} | {s.rss_start_kib / 1024:.0f} | "
                           f"{s.rss_idle_kib / 1024:.0f} | {per:.1f} |")
        out.append("")
    sat = group(samples, scenario="saturation")
    if sat:
        n = sat[0].clients
        out.append(f"## Saturation: broadcasts per second to {n} clients\n")
        out.append("The rate was raised step by step; a step passes when p95 ≤ 100 ms, nothing is lost and the "
                   "server keeps at least 90% of the asked rate. *Sustained* is the last step that passed (the "
                   "achieved rate); *first failing step* shows why the next one did not.\n")
        out.append("| system | sustained broadcasts/s | = messages/s | p95 there ms | CPU µs/msg there | first failing step | loadgen CPU max |")
        out.append("|---|---:|---:|---:|---:|---|---:|")
        for system in args.systems:
            got = group(sat, system=system)
            if not got:
                continue
            passed = [s for s in got if ok_step(s)]
            failing = next((s for s in got if not ok_step(s)), None)
            best = passed[-1] if passed else None
            fail = "none" if failing is None else (
                f"asked {failing.target_rate:.0f}/s: got {failing.rate:.0f}/s, p95 {ms(percentile(failing.latencies, .95))} ms, lost {failing.lost}")
            lg = max(s.loadgen_cpu / s.elapsed for s in got if s.elapsed)
            if best:
                out.append(f"| {LABELS[system]} | {best.rate:.0f} | {best.rate * n:,.0f} | {ms(percentile(best.latencies, .95))} | "
                           f"{best.cpu_per_msg_us:.1f} | {fail} | {lg:.0%} |")
            else:
                out.append(f"| {LABELS[system]} | < {got[0].target_rate:.0f} | | | | {fail} | {lg:.0%} |")
        out.append("")
    slow = [s for s in samples if s.scenario in ("healthy", "slow")]
    if slow:
        s0 = slow[0]
        out.append(f"## One client that stops reading, among {s0.clients} healthy ones\n")
        out.append(f"{s0.count} broadcasts of a {args.slow_size // 1024} KiB fragment at {args.slow_rate:g}/s, run "
                   "without and then with one more client that has a 4 KiB receive buffer and never reads. "
                   "Latency of the healthy clients only. The kernel takes about "
                   f"{s0.stall_s * args.slow_rate:.0f} such messages for a peer that does not read (its receive "
                   "buffer and the server's send buffer), so only from "
                   f"≈{s0.stall_s:.1f} s on does the server itself have to hold or drop what the slow client "
                   f"cannot take; turbo_gevent's send_timeout is {args.send_timeout:g} s. A run that had not finished "
                   "10 s after its schedule was given up (*stuck*).\n")
        out.append("| system | healthy p95 ms alone | with the slow client | change | max ms alone | max with | healthy lost with | slow client reset after |")
        out.append("|---|---:|---:|---:|---:|---:|---:|---|")
        for system in args.systems:
            a = group(slow, system=system, scenario="healthy")
            b = group(slow, system=system, scenario="slow")
            if not a or not b:
                continue
            pa, pb = pooled(a), pooled(b)
            maxa = max((x for s in a for x in s.latencies), default=math.nan)
            maxb = max((x for s in b for x in s.latencies), default=math.nan)
            drop = ", ".join(describe_drop(s) for s in b)
            if any(s.stuck for s in b):
                drop += "; broadcasts stuck"
            change = f"{(pb['p95'] / pa['p95'] - 1) * 100:+.0f}%" if pa["p95"] and not math.isnan(pb["p95"]) else "–"
            if pb["lost"]:
                change = "(of what arrived)"
            out.append(f"| {LABELS[system]} | {ms(pa['p95'])} | {ms(pb['p95'])} | {change} | {ms(maxa)} | {ms(maxb)} | "
                       f"{pb['lost']}/{pb['sent']} | {drop} |")
        out.append("")
    out.append(targets(samples, args))
    return "\n".join(out)


def describe_drop(s: Sample) -> str:
    if s.slow_drop_s is None:
        return "never"
    return f"{s.slow_drop_s:.1f} s ({s.slow_drop_s - s.stall_s:.1f} s after its buffers were full)"


def ok_step(s: Sample) -> bool:
    return percentile(s.latencies, .95) <= 0.1 and s.lost == 0 and s.rate >= 0.9 * s.target_rate


def targets(samples: list[Sample], args) -> str:
    """turbo_gevent against the targets, as far as this run measured them."""
    lines = ["## turbo_gevent against its targets\n", "| target | measured | met |", "|---|---|---|"]
    fan = group(samples, scenario="fanout")
    sizes = sorted({s.clients for s in fan})

    def row(what, measured, met):
        lines.append(f"| {what} | {measured} | {'yes' if met else 'no'} |")

    if fan and group(fan, system="turbo") and group(fan, system="floor"):
        big = max(s.clients for s in group(fan, system="turbo"))
        t, f = pooled(group(fan, system="turbo", clients=big)), pooled(group(fan, system="floor", clients=big))
        if not t["failed"] and not f["failed"]:
            r = t["p95"] / f["p95"]
            row(f"p95 at {big} within 1.25× the floor's, nothing lost",
                f"{ms(t['p95'])} vs {ms(f['p95'])} ms = {r:.2f}×, lost {t['lost']}", r <= 1.25 and t["lost"] == 0)
            r = t["cpu"] / f["cpu"]
            row(f"server CPU per message within 1.1× the floor's (at {big})",
                f"{t['cpu']:.1f} vs {f['cpu']:.1f} µs = {r:.2f}×", r <= 1.1)
            conns = big if t["lost"] == 0 else 0
            row("10k connections in one process", f"{big} connected and served", big >= 10000 and conns)
    idle = group(samples, scenario="idle", system="turbo")
    if idle:
        n = idle[0].clients
        per = (idle[0].rss_idle_kib - idle[0].rss_start_kib) / n
        row(f"≤ 12 KiB RSS per idle connection (at {n})", f"{per:.1f} KiB", per <= 12)
    slow = [s for s in samples if s.scenario in ("healthy", "slow") and s.system == "turbo"]
    if slow:
        a, b = pooled([s for s in slow if s.scenario == "healthy"]), pooled([s for s in slow if s.scenario == "slow"])
        maxb = max((x for s in slow if s.scenario == "slow" for x in s.latencies), default=math.nan)
        stalled = [s for s in slow if s.scenario == "slow"]
        change = pb = b["p95"] / a["p95"] - 1
        row("a non-reading client raises the others' p95 by ≤ 10%",
            f"{ms(a['p95'])} → {ms(b['p95'])} ms ({change * 100:+.0f}%)", pb <= 0.10)
        row("… their max stays < 1 s", f"{ms(maxb)} ms", maxb < 1)
        # The stall is estimated from the buffer sizes, to a broadcast or so.
        row(f"… and it is dropped within send_timeout ({args.send_timeout:g} s) of its buffers filling",
            ", ".join(describe_drop(s) for s in stalled),
            all(s.slow_drop_s is not None and s.slow_drop_s - s.stall_s <= args.send_timeout + 1.0 for s in stalled))
    redis = group(fan, system="turbo-redis")
    if redis:
        size = min(s.clients for s in redis)
        a, b = pooled(group(fan, system="turbo", clients=size)), pooled(group(redis, clients=size))
        add = b["p50"] - a["p50"]
        row(f"Redis adds ≤ 5 ms to p50 at {size}", f"{ms(add)} ms ({ms(a['p50'])} → {ms(b['p50'])})", add <= 0.005)
    return "\n".join(lines) + "\n"


# -- main ------------------------------------------------------------------------


def code_version() -> str:
    """The commit of the code measured, and whether turbo_gevent/ differed from it."""
    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True,
                              text=True, timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--", "turbo_gevent"], cwd=ROOT,
                               capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "turbo_gevent from an unknown commit"
    if not head:
        return "turbo_gevent from an unknown commit"
    return f"turbo_gevent at {head}" + (" with uncommitted changes" if dirty else "")


def machine_line(cores) -> str:
    cpu = "unknown CPU"
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    pin = (f"server pinned to CPU {cores[0]}, load generator to CPU {cores[1]}" if cores[0] is not None
           else "not pinned (fewer than 2 CPUs)")
    return (f"{cpu}, {os.cpu_count()} CPUs, {mem:.0f} GiB, Linux {platform.release()}, "
            f"Python {platform.python_version()}; {pin}")


def available(system: str) -> str | None:
    """Why a system cannot run here, or None."""
    import importlib.util

    needs = {
        "turbo-redis": ["redis"],
        "turbo-flask": ["turbo_flask", "flask_sock", "gunicorn"],
        "websockets": ["websockets"],
        "turbo": ["turbo_gevent"],
    }.get(system, [])
    for module in needs:
        if importlib.util.find_spec(module) is None:
            return f"{module} is not installed (pip install -r benchmarks/requirements.txt)"
    if system == "turbo-redis" and shutil.which("redis-server") is None:
        return "redis-server is not installed"
    return None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Fan-out benchmark of turbo_gevent and other stacks.")
    parser.add_argument("--smoke", action="store_true", help="200 clients, a few seconds a system (CI)")
    parser.add_argument("--systems", nargs="+", choices=SYSTEMS, default=list(SYSTEMS[:5]),
                        help="floor-hash (the floor sending in set order) is left out unless named")
    parser.add_argument("--scenarios", nargs="+", choices=("fanout", "idle", "saturation", "slow"),
                        help="default: all; with --smoke all but idle")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--sizes", type=int, nargs="+", default=[1000, 5000, 10000])
    parser.add_argument("--redis-sizes", type=int, nargs="+", default=[1000],
                        help="client counts for turbo-redis (the hub's cost is compared at 1k)")
    parser.add_argument("--count", type=int, default=30, help="measured broadcasts per run")
    parser.add_argument("--warmup", type=int, default=3, help="discarded broadcasts before each run")
    parser.add_argument("--interval", type=float, default=0.5, help="seconds between fan-out broadcasts")
    parser.add_argument("--stride", type=int, default=25, help="every n-th connection is a probe")
    parser.add_argument("--saturation-clients", type=int, default=1000)
    parser.add_argument("--saturation-start", type=float, default=25.0, help="first rate, doubled until a step fails")
    parser.add_argument("--saturation-bisect", type=int, default=2, help="steps between the last pass and the failure")
    parser.add_argument("--saturation-max", type=float, default=5000.0)
    parser.add_argument("--saturation-seconds", type=float, default=1.5, help="length of one step")
    parser.add_argument("--saturation-batch", type=float, default=0.02,
                        help="seconds a bulk load generator waits after a wake-up, to read in bulk")
    parser.add_argument("--saturation-rounds", type=int, default=1)
    parser.add_argument("--slow-clients", type=int, default=1000)
    parser.add_argument("--slow-count", type=int, default=400)
    parser.add_argument("--slow-rate", type=float, default=20.0)
    parser.add_argument("--slow-size", type=int, default=16384,
                        help="fragment bytes, large enough that the kernel's buffers fill within the run")
    parser.add_argument("--slow-rounds", type=int, default=1)
    parser.add_argument("--slow-systems", nargs="+", choices=SYSTEMS, default=["turbo", "turbo-flask"])
    parser.add_argument("--send-timeout", type=float, default=10.0, help="turbo_gevent's send_timeout")
    parser.add_argument("--max-other", type=float, default=0.25,
                        help="repeat a fan-out run when other processes used more than this share of a core")
    parser.add_argument("--retries", type=int, default=2, help="repeats of a fan-out run disturbed by others")
    parser.add_argument("--out", default=os.path.join(HERE, "results"), help="folder for the report")
    parser.add_argument("--raw", action="store_true", help="also write every run's figures, per broadcast, as JSON")
    args = parser.parse_args(argv)
    if args.scenarios is None:
        args.scenarios = ["fanout", "saturation", "slow"] if args.smoke else ["fanout", "idle", "saturation", "slow"]
    if args.smoke:
        args.sizes, args.redis_sizes = [200], [200]
        args.rounds, args.count, args.warmup, args.interval, args.stride = 1, 10, 2, 0.1, 5
        args.saturation_clients, args.saturation_start, args.saturation_bisect = 200, 100.0, 0
        args.saturation_max, args.saturation_seconds = 200.0, 0.5
        args.slow_clients, args.slow_count, args.slow_rate, args.send_timeout = 200, 300, 100.0, 1.0
        args.slow_systems = ["turbo"]
    cpus = sorted(os.sched_getaffinity(0))
    cores = (cpus[0], cpus[1]) if len(cpus) >= 2 else (None, None)
    if cores[1] is not None:
        os.sched_setaffinity(0, {cores[1]})  # this runner stays off the server's core
    skipped = {}
    for system in list(args.systems):
        why = available(system)
        if why:
            skipped[system] = why
            args.systems.remove(system)
            log(f"skipping {system}: {why}")
    started = time.monotonic()
    samples: list[Sample] = []
    redis = Redis(cores[0]) if "turbo-redis" in args.systems else None
    try:
        plan = []
        if "fanout" in args.scenarios:
            for rnd in range(args.rounds):
                order = args.systems[rnd % len(args.systems):] + args.systems[:rnd % len(args.systems)]
                plan += [(run_fanout, s, rnd) for s in order]
        if "idle" in args.scenarios:
            plan += [(run_idle, s, 0) for s in args.systems if s != "turbo-redis"]
        if "saturation" in args.scenarios:
            for rnd in range(args.saturation_rounds):
                plan += [(run_saturation, s, rnd) for s in args.systems]
        if "slow" in args.scenarios:
            for rnd in range(args.slow_rounds):
                plan += [(run_slow, s, rnd) for s in args.systems if s in args.slow_systems]
        for i, (scenario, system, rnd) in enumerate(plan):
            log(f"[{i + 1}/{len(plan)}] {scenario.__name__[4:]} {system}, round {rnd + 1}"
                f" ({(time.monotonic() - started) / 60:.1f} min)")
            samples += scenario(system, args, rnd, cores, redis)
    finally:
        if redis is not None:
            redis.stop()
    text = report(samples, args, machine_line(cores), time.monotonic() - started)
    if skipped:
        text += "\nSkipped: " + "; ".join(f"{k} ({v})" for k, v in skipped.items()) + "\n"
    print(text)
    os.makedirs(args.out, exist_ok=True)
    name = datetime.datetime.now().strftime("%Y%m%d-%H%M%S") + ("-smoke" if args.smoke else "") + ".md"
    path = os.path.join(args.out, name)
    with open(path + ".tmp", "w") as f:
        f.write(text)
    os.replace(path + ".tmp", path)
    if args.raw:
        import dataclasses

        with open(path[:-3] + ".json", "w") as f:
            json.dump([{k: v for k, v in dataclasses.asdict(s).items() if k not in ("latencies", "last")}
                       for s in samples], f)
    log(f"written to {os.path.relpath(path)}")
    return 0


INTERRUPTED = []


def _interrupted(signum, frame) -> None:
    INTERRUPTED.append(signum)
    kill_children()  # first, so that nothing waits on a child any more
    raise KeyboardInterrupt


if __name__ == "__main__":
    signal.signal(signal.SIGINT, _interrupted)
    signal.signal(signal.SIGTERM, _interrupted)
    try:
        sys.exit(main())
    except BaseException:
        if not INTERRUPTED:
            raise
        kill_children()
        log("interrupted")
        sys.exit(130)
