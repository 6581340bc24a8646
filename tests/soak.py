"""`make soak`: a steady mixed load for a long time, watching for what grows.

    python tests/soak.py [--minutes 30] [--interval 30] [--rate 150] [--out bench-results]

Starts the service as `make run` does (embedded, durable PostgreSQL unless DATABASE_URL
is set; `python wsgi.py`, logging a JSON line per request to a scratch file), a webhook
receiver on loopback and the deliverer (`flask --app identity deliver`) posting to it, and
a feed consumer that long-polls GET /events. Then, for --minutes, it sends --rate requests
a second over 8 keep-alive connections: 80 % checkouts of bench.py's seeded mix, 20 %
look-ups (GET /identify) of known customers.

Every --interval seconds (30; shorter runs sample more often) it records each process's
memory (RSS) and open files (supervisor, workers, deliverer), the service's database
connections, the dead rows of every table (pg_stat_user_tables.n_dead_tup), and the
interval's p50/p99. Writes soak.txt, soak.json and soak.png (the samples over time) to
--out, and exits 1 when, after the warm-up (the first sixth of the run: five minutes of
thirty), a process's memory or open files grew by more than 10 %, the p99 drifted by more
than 50 % (median of the warm run's second half against its first half), a worker was
replaced, or the consumer or the deliverer fell behind.
"""

import argparse
import asyncio
import collections
import http.client
import http.server
import json
import os
import secrets
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from urllib.parse import quote, urlencode

import psycopg2
from bench import Workload, _database, _read_response, _Tee, http_request
from servers import PROJECT_ROOT, ServerProcess

from identity.database.migrations import migrate

CONNECTIONS = 8
LOOKUP_SHARE = 0.2
GROWTH_LIMIT = 0.10
P99_DRIFT_LIMIT = 0.50
# Open files are few (tens): a growth must also be more than this many to count.
FILES_SLACK = 2
# pg_stat_activity's connections of the service and of the deliverer.
DATABASE_CONNECTIONS = """
SELECT count(*) FILTER (WHERE application_name = 'identity'),
       count(*) FILTER (WHERE backend_type = 'client backend')
  FROM pg_stat_activity
"""
DEAD_ROWS = (
    "SELECT coalesce(sum(n_dead_tup), 0), coalesce(sum(n_live_tup), 0) FROM pg_stat_user_tables"
)


# --- What runs beside the load ------------------------------------------------------------


class Receiver(http.server.ThreadingHTTPServer):
    """The webhook subscriber: answers 204 to every delivery and counts its events."""

    daemon_threads = True

    def __init__(self):
        self.ids: set[int] = set()
        receiver = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers["Content-Length"]))
                receiver.ids.update(event["id"] for event in json.loads(body)["events"])
                self.send_response(204)
                self.end_headers()

            def log_message(self, *args):
                pass

        super().__init__(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.serve_forever, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/hook"


class FeedConsumer(threading.Thread):
    """Follows the feed with long polls, as a downstream system would."""

    def __init__(self, port: int):
        super().__init__(daemon=True)
        self.port, self.errors, self.stopping = port, 0, False
        self.ids: list[int] = []
        self.cursor = None
        self.start()

    def run(self):
        connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=60)
        while not self.stopping:
            query = {"wait": 10, "limit": 1000, **({"after": self.cursor} if self.cursor else {})}
            try:
                connection.request("GET", f"/events?{urlencode(query)}")
                answer = connection.getresponse()
                page = json.loads(answer.read())
            except (OSError, http.client.HTTPException, ValueError):
                self.errors += 1
                connection.close()
                time.sleep(1)
                continue
            if answer.status != 200:
                self.errors += 1
                time.sleep(1)
                continue
            self.ids += [event["id"] for event in page["events"]]
            self.cursor = page["next"]


def start_deliverer(database_url: str, receiver: Receiver, log) -> subprocess.Popen:
    env = {
        **os.environ,
        "DATABASE_URL": database_url,
        "WEBHOOK_URL": receiver.url,
        # Made up for this run only: the receiver does not check signatures.
        "WEBHOOK_SECRET": secrets.token_hex(16),
        "WEBHOOK_SUBSCRIBER": "soak",
        "LOG_LEVEL": "WARNING",
    }
    return subprocess.Popen(
        [sys.executable, "-m", "flask", "--app", "identity", "deliver"],
        env=env,
        cwd=PROJECT_ROOT,
        stderr=log,
    )


# --- The load -----------------------------------------------------------------------------


def lookup_request(body: dict, port: int) -> bytes:
    query = "&".join(f"{name}={quote(value)}" for name, value in body.items())
    return f"GET /identify?{query} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\r\n".encode()


class Load:
    """CONNECTIONS keep-alive connections sending `rate` requests a second between them,
    in a thread of its own; `take()` hands over the latencies since the last call."""

    def __init__(self, port: int, workload: Workload, rate: float):
        self.port, self.workload, self.rate = port, workload, rate
        self.latencies: list[float] = []
        self.answered: collections.deque = collections.deque(maxlen=10_000)
        self.statuses: dict[int, int] = {}
        self.stopping = False
        self.thread = threading.Thread(target=lambda: asyncio.run(self._run()), daemon=True)
        self.thread.start()

    def _next_request(self) -> tuple[bytes, dict | None]:
        """The next request, and the checkout it sends (None for a look-up)."""
        if self.answered and self.workload.random.random() < LOOKUP_SHARE:
            # A value of a checkout already answered: its customer exists.
            checkout = self.workload.random.choice(self.answered)
            name, value = self.workload.random.choice(list(checkout.items()))
            return lookup_request({name: value}, self.port), None
        checkout = self.workload.checkout()
        return http_request(checkout, self.port), checkout

    async def _connection(self, offset: float):
        reader, writer = await asyncio.open_connection("127.0.0.1", self.port)
        every = CONNECTIONS / self.rate
        next_send = time.perf_counter() + offset
        while not self.stopping:
            pause = next_send - time.perf_counter()
            if pause > 0:
                await asyncio.sleep(pause)
            next_send = max(next_send + every, time.perf_counter() - every)
            started = time.perf_counter()
            request, checkout = self._next_request()
            writer.write(request)
            status = await _read_response(reader)
            if checkout and status == 200:
                self.answered.append(checkout)
            self.latencies.append(time.perf_counter() - started)
            self.statuses[status] = self.statuses.get(status, 0) + 1
        writer.close()

    async def _run(self):
        every = CONNECTIONS / self.rate
        await asyncio.gather(
            *(self._connection(n * every / CONNECTIONS) for n in range(CONNECTIONS))
        )

    def take(self) -> list[float]:
        taken, self.latencies = self.latencies, []
        return taken

    def stop(self) -> None:
        self.stopping = True
        self.thread.join(30)


# --- Samples ------------------------------------------------------------------------------


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def open_files(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000 if ordered else 0.0


def sample(started: float, service: ServerProcess, deliverer, conn, load: Load) -> dict:
    processes = {"supervisor": service.pid, "deliverer": deliverer.pid}
    for n, pid in enumerate(sorted(service.worker_pids()), 1):
        processes[f"worker {n}"] = pid
    with conn.cursor() as cur:
        cur.execute(DATABASE_CONNECTIONS)
        service_connections, all_connections = cur.fetchone()
        cur.execute(DEAD_ROWS)
        dead_rows, live_rows = cur.fetchone()
    latencies = load.take()
    return {
        "minute": (time.monotonic() - started) / 60,
        "pids": processes,
        "rss_mb": {name: rss_mb(pid) for name, pid in processes.items()},
        "open_files": {name: open_files(pid) for name, pid in processes.items()},
        "service_connections": service_connections,
        "database_connections": all_connections,
        "dead_rows": int(dead_rows),
        "live_rows": int(live_rows),
        "requests": len(latencies),
        "p50_ms": percentile(latencies, 0.50),
        "p99_ms": percentile(latencies, 0.99),
    }


def print_sample(point: dict) -> None:
    memory = " ".join(f"{name} {mb:.0f}" for name, mb in point["rss_mb"].items())
    files = " ".join(str(count) for count in point["open_files"].values())
    print(
        f"{point['minute']:5.1f} min  {point['requests']:>6} req  p50 {point['p50_ms']:6.1f}  "
        f"p99 {point['p99_ms']:7.1f} ms  RSS MB: {memory}  files: {files}  "
        f"db conns {point['service_connections']}/{point['database_connections']}  "
        f"dead rows {point['dead_rows']:,} of {point['live_rows']:,} live",
        flush=True,
    )


# --- The verdict and the picture ----------------------------------------------------------


def growth_failures(warm: list[dict]) -> list[str]:
    """Memory and open files of every process: last sample against the first warm one."""
    failures = []
    first, last = warm[0], warm[-1]
    for name in first["rss_mb"]:
        if name not in last["rss_mb"]:
            continue
        before, after = first["rss_mb"][name], last["rss_mb"][name]
        if after > before * (1 + GROWTH_LIMIT):
            failures.append(f"{name}: memory grew {before:.1f} -> {after:.1f} MB")
        before, after = first["open_files"][name], last["open_files"][name]
        if after > before * (1 + GROWTH_LIMIT) and after - before > FILES_SLACK:
            failures.append(f"{name}: open files grew {before} -> {after}")
    return failures


def p99_drift(warm: list[dict]) -> tuple[float, float]:
    half = len(warm) // 2
    return (
        statistics.median(point["p99_ms"] for point in warm[:half]),
        statistics.median(point["p99_ms"] for point in warm[half:]),
    )


def verdict(
    points: list[dict], warm_up_min: float, consumer, receiver, ids: list[int]
) -> list[str]:
    warm = [point for point in points if point["minute"] >= warm_up_min]
    if len(warm) < 2:
        return ["too few samples after the warm-up"]
    failures = growth_failures(warm)
    if any(point["pids"] != warm[0]["pids"] for point in warm):
        failures.append("a process was replaced during the run")
    before, after = p99_drift(warm)
    print(f"p99 median, first and second half of the warm run: {before:.1f} -> {after:.1f} ms")
    if after > before * (1 + P99_DRIFT_LIMIT):
        failures.append(f"p99 drifted {before:.1f} -> {after:.1f} ms")
    print(
        f"events: {len(ids):,} in the feed, the consumer read {len(consumer.ids):,} "
        f"({consumer.errors} errors), the receiver got {len(receiver.ids):,} distinct"
    )
    if consumer.ids != ids:
        failures.append(
            f"the feed consumer read {len(consumer.ids):,} events, not the feed's {len(ids):,}"
        )
    if receiver.ids != set(ids):
        failures.append(f"the deliverer delivered {len(receiver.ids):,} of {len(ids):,} events")
    return failures


def draw(points: list[dict], warm_up_min: float, path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")  # files only, no display
    from matplotlib import pyplot

    minutes = [point["minute"] for point in points]
    fig, axes = pyplot.subplots(2, 2, figsize=(13, 8))
    (memory, files), (database, latency) = axes
    for name in points[0]["rss_mb"]:
        memory.plot(minutes, [p["rss_mb"].get(name) for p in points], "o-", ms=3, label=name)
        files.plot(minutes, [p["open_files"].get(name) for p in points], "o-", ms=3, label=name)
    memory.set_ylabel("resident memory (MB)")
    files.set_ylabel("open files")
    database.plot(
        minutes,
        [p["service_connections"] for p in points],
        "o-C0",
        ms=3,
        label="service connections",
    )
    database.plot(
        minutes,
        [p["database_connections"] for p in points],
        "s--C1",
        ms=3,
        label="all client connections",
    )
    database.set_ylabel("database connections")
    dead = database.twinx()
    dead.plot(minutes, [p["dead_rows"] for p in points], "^:C2", ms=3, label="dead rows (right)")
    dead.set_ylabel("dead rows (n_dead_tup, all tables)")
    dead.legend(loc="lower right", fontsize=8)
    latency.plot(minutes, [p["p50_ms"] for p in points], "o-C0", ms=3, label="p50")
    latency.plot(minutes, [p["p99_ms"] for p in points], "v--C0", ms=3, label="p99")
    latency.set_ylabel("latency of the interval (ms)")
    latency.set_yscale("log")
    for axis in (memory, files, database, latency):
        axis.axvline(warm_up_min, color="grey", linestyle=":", label="end of warm-up")
        axis.set_xlabel("minutes")
        axis.set_ylim(bottom=0) if axis is not latency else None
        axis.grid(True, alpha=0.3)
        axis.legend(fontsize=8, loc="upper left")
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    pyplot.close(fig)


# --- The run ------------------------------------------------------------------------------


def feed_ids(port: int) -> list[int]:
    """The ids of every event of the feed, read from the start without waiting."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    ids: list[int] = []
    cursor = None
    while True:
        query = {"limit": 1000, **({"after": cursor} if cursor else {})}
        connection.request("GET", f"/events?{urlencode(query)}")
        page = json.loads(connection.getresponse().read())
        if not page["events"]:
            connection.close()
            return ids
        ids += [event["id"] for event in page["events"]]
        cursor = page["next"]


def wait_until_caught_up(port: int, consumer, receiver, seconds: float = 60) -> list[int]:
    """The feed's event ids once the consumer and the receiver have them all (or time's up)."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        ids = feed_ids(port)
        if len(consumer.ids) >= len(ids) and receiver.ids >= set(ids):
            return ids
        time.sleep(0.5)
    return feed_ids(port)


def soak(args, database_url: str) -> list[str]:
    workload = Workload(args.seed)
    receiver = Receiver()
    conn = psycopg2.connect(database_url)
    conn.autocommit = True
    with (
        tempfile.TemporaryFile() as log,
        ServerProcess(database_url, stderr=log, LOG_LEVEL="INFO") as service,
    ):
        service.wait_for_workers(service.workers)
        deliverer = start_deliverer(database_url, receiver, log)
        consumer = FeedConsumer(service.port)
        load = Load(service.port, workload, args.rate)
        started = time.monotonic()
        points = []
        try:
            while time.monotonic() - started < args.minutes * 60:
                time.sleep(max(0.0, started + (len(points) + 1) * args.interval - time.monotonic()))
                points.append(sample(started, service, deliverer, conn, load))
                print_sample(points[-1])
        finally:
            load.stop()
        ids = wait_until_caught_up(service.port, consumer, receiver)
        consumer.stopping = True
        deliverer.terminate()
        deliverer.wait(30)
    conn.close()
    statuses = ", ".join(f"{status}: {count:,}" for status, count in sorted(load.statuses.items()))
    print(f"answers by status: {statuses}")
    failures = verdict(points, args.warm_up, consumer, receiver, ids)
    if set(load.statuses) - {200}:
        failures.append(f"answers other than 200: {statuses}")
    (args.out / "soak.json").write_text(json.dumps(points, indent=1))
    draw(
        points,
        args.warm_up,
        args.out / "soak.png",
        f"soak: {args.minutes} min at {args.rate:.0f} req/s, {os.cpu_count()} CPUs, "
        f"{time.strftime('%Y-%m-%d %H:%M')}",
    )
    return failures


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=30)
    parser.add_argument(
        "--interval", type=float, help="seconds between samples (30; less for short runs)"
    )
    parser.add_argument("--rate", type=float, default=150, help="requests a second")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--out", type=Path, default=PROJECT_ROOT / "bench-results")
    args = parser.parse_args()
    # Thirty samples (ten seconds apart at least), and the first sixth of the run is the warm-up.
    args.interval = args.interval or min(30.0, max(10.0, args.minutes * 60 / 30))
    args.warm_up = args.minutes / 6
    args.out.mkdir(parents=True, exist_ok=True)
    sys.stdout = _Tee(sys.stdout, args.out / "soak.txt")
    print(
        f"soak: {args.minutes} min, a sample every {args.interval:.0f} s, warm-up "
        f"{args.warm_up:.1f} min, {args.rate:.0f} req/s over {CONNECTIONS} connections; "
        f"load average {os.getloadavg()[0]:.1f} at start"
    )
    database_url, server = _database()
    try:
        migrate(database_url, PROJECT_ROOT / "sql")
        failures = soak(args, database_url)
    finally:
        if server:
            server.close()
    for failure in failures:
        print(f"FAIL: {failure}")
    print("soak passed" if not failures else f"soak failed ({len(failures)})")
    print(f"report, samples and picture: {args.out}/soak.txt, soak.json, soak.png")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
