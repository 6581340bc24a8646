"""`make bench`: the service under a realistic checkout mix, next to PostgreSQL's ceiling.

    python tests/bench.py [--seed 1] [--concurrency 1,4,16,64] [--workers 1,2,4]
                          [--seconds 15] [--out bench-results] [--scale]

Starts the service as `make run` does (embedded, durable PostgreSQL unless DATABASE_URL
is set; `python wsgi.py`), preloads every customer's values, then drives it over HTTP/1.1
keep-alive from an asyncio load generator with a seeded request sequence: the same seed
sends the same requests. Measures the default number of workers at each concurrency of
the curve, and, with --workers, each of those WORKERS values at --at-concurrency (16).
Reports throughput and latency, the service's CPU time per request (supervisor and
workers), the load generator's own CPU, how busy the whole machine was, pgbench's
throughput for the minimal database work of one request on the same database at the same
concurrency (the ceiling), and a Flask + waitress app that answers a constant (the
floor). Writes the report (bench.txt), its figures (bench.json) and a picture of them
(bench.png) to --out. --scale measures latency at 10 k and 1 M rows and for one customer
of 5,000 rows instead.
"""

import argparse
import asyncio
import contextlib
import copy
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import psycopg2
from servers import (  # puts the project on sys.path
    PROJECT_ROOT,
    ServerProcess,
    connections_per_worker,
)

from identity.config import default_workers
from identity.database.migrations import migrate
from identity.dev.embedded import EmbeddedPostgres, find_bin_dir

CUSTOMERS = 4_000


# --- The workload -----------------------------------------------------------------------


@dataclass
class Customer:
    emails: list[str] = field(default_factory=list)
    phones: list[str] = field(default_factory=list)


class Workload:
    """Customers with 1-3 e-mails and 1-3 phones, and checkouts drawn from them."""

    def __init__(self, seed: int, customers: int = CUSTOMERS, shape=None):
        self.random = random.Random(seed)
        self.fresh = 0
        shape = shape or (lambda k: (self.random.randint(1, 3), self.random.randint(1, 3)))
        self.customers = [self.identifiers(k, *shape(k)) for k in range(customers)]

    @staticmethod
    def identifiers(k: int, emails: int, phones: int) -> Customer:
        """Customer k's values; the same formula fills the table directly in --scale."""
        return Customer(
            [f"c{k}.{j}@shop.test" for j in range(emails)],
            [str(700_000_000 + k * 4 + j) for j in range(phones)],
        )

    def _fresh_value(self, kind: str) -> str:
        self.fresh += 1
        return f"n{self.fresh}@shop.test" if kind == "email" else str(600_000_000_000 + self.fresh)

    def preload(self) -> list[dict]:
        """Checkouts that make every customer known with all its values, as one customer:
        its first e-mail with each of its phones, then each other e-mail with its first
        phone, so that every checkout after the first shares a value with what is stored.
        Customers take turns (first checkouts of all, then second ones, and so on), so that
        no two checkouts of one customer are in flight at once."""
        per_customer = [
            [{"email": customer.emails[0], "phoneNumber": phone} for phone in customer.phones]
            + [{"email": email, "phoneNumber": customer.phones[0]} for email in customer.emails[1:]]
            for customer in self.customers
        ]
        return [
            checkouts[turn]
            for turn in range(max(map(len, per_customer)))
            for checkouts in per_customer
            if turn < len(checkouts)
        ]

    def checkout(self) -> dict:
        """One checkout of the measured mix."""
        roll = self.random.random()
        customer = self.random.choice(self.customers)
        email, phone = self.random.choice(customer.emails), self.random.choice(customer.phones)
        if roll < 0.05:  # a new customer
            fresh = Customer([self._fresh_value("email")], [self._fresh_value("phone")])
            self.customers.append(fresh)
            return {"email": fresh.emails[0], "phoneNumber": fresh.phones[0]}
        if roll < 0.15:  # a new value for a known customer
            if self.random.random() < 0.5:
                email = self._fresh_value("email")
                customer.emails.append(email)
            else:
                phone = self._fresh_value("phone")
                customer.phones.append(phone)
            return {"email": email, "phoneNumber": phone}
        if roll < 0.17:  # a bridge between two customers: they become one
            other = self.random.choice(self.customers)
            if other is not customer:
                customer.emails += other.emails
                customer.phones += other.phones
                other.emails, other.phones = customer.emails, customer.phones
            return {"email": email, "phoneNumber": self.random.choice(other.phones)}
        shape = self.random.random()  # a repeat, in one of several shapes
        if shape < 0.4:
            return {"email": email, "phoneNumber": phone}
        if shape < 0.65:
            return {"email": email}
        if shape < 0.9:
            return {"phoneNumber": phone}
        return {"email": email.upper(), "phoneNumber": f"{phone[:3]}-{phone[3:]}"}

    def checkouts(self, count: int) -> list[dict]:
        """The next `count` checkouts of the mix. A measurement that stops at a deadline
        sends only the first ones: keep(sent) then forgets the rest."""
        self._before_draw = copy.deepcopy((self.random, self.fresh, self.customers))
        return [self.checkout() for _ in range(count)]

    def keep(self, sent: int) -> None:
        """Forget every checkout of the last draw after the first `sent` (once per draw).
        An unsent new value or bridge never reached the database: left in the customers,
        a later "repeat" of it would be a write, and later phases would measure a mix that
        writes and merges far more than this one. A sent checkout counts whatever its
        answer; the report shows any that was not a 200."""
        self.random, self.fresh, self.customers = self._before_draw
        del self._before_draw
        for _ in range(sent):
            self.checkout()


def http_request(body: dict, port: int) -> bytes:
    payload = json.dumps(body).encode()
    return (
        f"POST /identify HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(payload)}\r\n\r\n"
    ).encode() + payload


# --- The load generator -----------------------------------------------------------------


def machine_cpu_times() -> tuple[int, int]:
    """(busy, total) jiffies of every CPU of the machine since boot, from /proc/stat."""
    values = [int(value) for value in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = values[3] + values[4]  # idle and iowait
    return sum(values) - idle, sum(values)


@dataclass
class Result:
    latencies: list[float]
    errors: int
    wall: float
    client_cpu: float
    service_cpu: float
    machine_busy: float = 0.0  # share of the whole machine's CPU time, every process

    def report(self, label: str) -> dict:
        ordered = sorted(self.latencies)
        pick = lambda q: ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000  # noqa: E731
        figures = {
            "requests": len(ordered),
            "errors": self.errors,
            "throughput": len(ordered) / self.wall,
            "p50_ms": pick(0.50),
            "p90_ms": pick(0.90),
            "p99_ms": pick(0.99),
            "max_ms": ordered[-1] * 1000,
            "client_cpu_pct": 100 * self.client_cpu / self.wall,
            "service_cpu_pct": 100 * self.service_cpu / self.wall,
            "service_cpu_ms": 1000 * self.service_cpu / max(1, len(ordered)),
            "machine_busy_pct": 100 * self.machine_busy,
        }
        print(
            f"{label:<28} {figures['requests']:>7} req  {figures['errors']:>3} err  "
            f"{figures['throughput']:>7.0f} req/s  p50 {figures['p50_ms']:5.2f}  "
            f"p90 {figures['p90_ms']:5.2f}  p99 {figures['p99_ms']:6.2f}  "
            f"max {figures['max_ms']:6.1f} ms  "
            f"client CPU {figures['client_cpu_pct']:3.0f}%  "
            f"service CPU {figures['service_cpu_pct']:3.0f}% "
            f"= {figures['service_cpu_ms']:.3f} ms/req  "
            f"machine {figures['machine_busy_pct']:3.0f}% busy",
            flush=True,
        )
        return figures


async def _read_response(reader: asyncio.StreamReader) -> int:
    head = await reader.readuntil(b"\r\n\r\n")
    status = int(head[9:12])
    length = 0
    for line in head.split(b"\r\n"):
        if line[:15].lower() == b"content-length:":
            length = int(line[15:])
    await reader.readexactly(length)
    return status


async def _drive(port: int, requests: list[bytes], concurrency: int, seconds: float | None):
    """Send the requests in order over `concurrency` connections, until done or time is up."""
    latencies, errors, next_index = [], 0, 0
    deadline = time.perf_counter() + seconds if seconds else float("inf")

    async def connection():
        nonlocal errors, next_index
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        while next_index < len(requests) and time.perf_counter() < deadline:
            request = requests[next_index]
            next_index += 1
            started = time.perf_counter()
            writer.write(request)
            status = await _read_response(reader)
            latencies.append(time.perf_counter() - started)
            errors += status != 200
        writer.close()

    await asyncio.gather(*(connection() for _ in range(concurrency)))
    return latencies, errors


def drive(service, requests: list[bytes], concurrency: int, seconds: float | None = None) -> Result:
    cpu, service_cpu, wall = time.process_time(), service.cpu_seconds(), time.perf_counter()
    busy, total = machine_cpu_times()
    latencies, errors = asyncio.run(_drive(service.port, requests, concurrency, seconds))
    busy_after, total_after = machine_cpu_times()
    return Result(
        latencies,
        errors,
        time.perf_counter() - wall,
        time.process_time() - cpu,
        service.cpu_seconds() - service_cpu,
        (busy_after - busy) / max(1, total_after - total),
    )


# --- The service and PostgreSQL's ceiling -----------------------------------------------


@contextlib.contextmanager
def _service(database_url: str, threads: int, workers: int | None = None):
    """`python wsgi.py` as `make run` serves it, logging one JSON line per request (to a
    scratch file, as production logs go somewhere)."""
    settings = {"THREADS": threads, "LOG_LEVEL": "INFO"}
    if workers:
        settings["WORKERS"] = workers
    with (
        tempfile.TemporaryFile() as log,
        ServerProcess(database_url, stderr=log, **settings) as server,
    ):
        server.wait_for_workers(server.workers)
        yield server


def _requests(bodies: list[dict], port: int) -> list[bytes]:
    return [http_request(body, port) for body in bodies]


# The minimal work of one request: the look-up by e-mail and phone as the service sends it
# (customer_rows, in the simple protocol like psycopg2), and an insert for one request in
# six.
PGBENCH_SCRIPT = """
\\set k random(0, {customers} - 1)
\\set r random(1, 6)
{resolve};
\\if :r = 1
INSERT INTO contact (email, phoneNumber, linkPrecedence) VALUES ('pgbench' || :k || '.' || random() || '@shop.test', NULL, 'primary');
\\endif
"""  # noqa: E501 (the script as measured: one INSERT per line)


def pgbench_ceiling(database_url: str, concurrency: int, seconds: int, customers: int) -> float:
    from identity.customers.repository import RESOLVE_CUSTOMER

    resolve = " ".join(
        RESOLVE_CUSTOMER.replace("%(email)s", "'c' || :k || '.0@shop.test'")
        .replace("%(phone_number)s", "(700000000 + :k * 4)::text")
        .split()
    )
    with tempfile.NamedTemporaryFile("w", suffix=".sql", delete=False) as script:
        script.write(PGBENCH_SCRIPT.format(customers=customers, resolve=resolve))
    output = subprocess.run(
        [
            str(find_bin_dir() / "pgbench"),
            "-n",
            "-M",
            "simple",
            "-c",
            str(concurrency),
            "-j",
            str(min(2, concurrency)),
            "-T",
            str(seconds),
            "-f",
            script.name,
            database_url,
        ],
        capture_output=True,
        text=True,
    )
    os.unlink(script.name)
    if output.returncode != 0:
        raise SystemExit(f"pgbench failed: {output.stderr.strip()[-500:]}")
    output = output.stdout
    tps = next(line for line in output.splitlines() if line.startswith("tps"))
    return float(tps.split()[2])


# A Flask app on waitress that answers a constant: what the framework costs by itself.
FLOOR_APP = """
import logging, os, flask, waitress
logging.basicConfig(level=logging.ERROR)
app = flask.Flask("floor")
ANSWER = {"contact": {"primaryContactId": 1, "emails": ["a@x.io"], "phoneNumbers": ["1"],
                      "secondaryContactIds": []}}
app.post("/identify")(lambda: ANSWER)
waitress.serve(
    app, host="127.0.0.1", port=int(os.environ["PORT"]), threads=int(os.environ["THREADS"])
)
"""


def framework_floor(threads: int, concurrencies: list[int], seconds: int) -> dict[int, dict]:
    figures = {}
    with ServerProcess(program=["-c", FLOOR_APP], THREADS=threads) as floor:
        request = http_request({"email": "a@x.io"}, floor.port)
        for concurrency in concurrencies:
            figures[concurrency] = drive(floor, [request] * 200_000, concurrency, seconds).report(
                f"Flask+waitress floor, c{concurrency}"
            )
    return figures


# --scale: the table filled directly, customer k shaped by a formula the workload shares.
def _scale_shape(k: int) -> tuple[int, int]:
    return 1 + k % 3, 1 + (k // 3) % 3  # e-mails, phones: 3 rows a customer on average


FILL_PRIMARIES = """
INSERT INTO contact (email, phoneNumber, linkPrecedence, createdAt)
SELECT 'c' || k || '.0@shop.test', (700000000 + k * 4)::text, 'primary',
       timestamptz '2024-01-01' + k * interval '1 ms'
  FROM generate_series(0, %(customers)s - 1) AS k
"""
FILL_SECONDARY_EMAILS = """
INSERT INTO contact (email, phoneNumber, linkedId, linkPrecedence, createdAt)
SELECT 'c' || k || '.' || j || '@shop.test', (700000000 + k * 4)::text, k + 1, 'secondary',
       timestamptz '2025-01-01' + k * interval '1 ms'
  FROM generate_series(0, %(customers)s - 1) AS k, generate_series(1, 2) AS j
 WHERE j < 1 + k %% 3
"""
FILL_SECONDARY_PHONES = """
INSERT INTO contact (email, phoneNumber, linkedId, linkPrecedence, createdAt)
SELECT 'c' || k || '.0@shop.test', (700000000 + k * 4 + j)::text, k + 1, 'secondary',
       timestamptz '2025-06-01' + k * interval '1 ms'
  FROM generate_series(0, %(customers)s - 1) AS k, generate_series(1, 2) AS j
 WHERE j < 1 + (k / 3) %% 3
"""


def _fill(database_url: str, rows: int) -> int:
    """Empty the table and fill it with about `rows` rows; returns the customer count."""
    customers = rows // 3
    conn = psycopg2.connect(database_url)
    conn.autocommit = True
    with conn.cursor() as cur:
        cur.execute("TRUNCATE contact RESTART IDENTITY CASCADE")
        for statement in (FILL_PRIMARIES, FILL_SECONDARY_EMAILS, FILL_SECONDARY_PHONES):
            cur.execute(statement, {"customers": customers})
        cur.execute("VACUUM ANALYZE contact")
        cur.execute("SELECT count(*) FROM contact")
        print(f"table filled: {cur.fetchone()[0]:,} rows, {customers:,} customers", flush=True)
    conn.close()
    return customers


def _fill_big_customer(database_url: str, rows: int) -> None:
    conn = psycopg2.connect(database_url)
    conn.autocommit = True
    with conn.cursor() as cur:
        cur.execute(
            "INSERT INTO contact (email, phoneNumber, linkPrecedence) "
            "VALUES ('big0@shop.test', '555000555', 'primary') RETURNING id"
        )
        primary_id = cur.fetchone()[0]
        cur.execute(
            """INSERT INTO contact (email, phoneNumber, linkedId, linkPrecedence)
               SELECT 'big' || n || '@shop.test', '555000555', %s, 'secondary'
                 FROM generate_series(1, %s - 1) AS n""",
            (primary_id, rows),
        )
        cur.execute("ANALYZE contact")
    conn.close()


def _scale_run(args, database_url: str) -> None:
    p50s = {}
    for rows in (10_000, 1_000_000):
        customers = _fill(database_url, rows)
        workload = Workload(args.seed, customers, shape=_scale_shape)
        with _service(database_url, args.threads) as service:
            single = _requests(workload.checkouts(args.single_seconds * 3000), service.port)
            result = drive(service, single, 1, args.single_seconds)
            workload.keep(len(result.latencies))
            p50s[rows] = result.report(f"mixed c1, {rows:,} rows")["p50_ms"]
            mixed = _requests(workload.checkouts(args.seconds * 6000), service.port)
            drive(service, mixed, args.at_concurrency, args.seconds).report(
                f"mixed c{args.at_concurrency}, {rows:,} rows"
            )
    print(f"{'p50 at 1 M / p50 at 10 k':<28} {p50s[1_000_000] / p50s[10_000]:>7.2f}x")
    _fill_big_customer(database_url, 5_000)
    with _service(database_url, args.threads) as service:
        request = http_request({"email": "big0@shop.test"}, service.port)
        drive(service, [request] * 200, 1).report("one customer of 5,000 rows")
        # By the phone all 5,000 rows share: the planner's cost estimate for this look-up
        # passes jit_above_cost, so on a PostgreSQL with JIT it shows whether the
        # service's connections keep JIT off.
        request = http_request({"phoneNumber": "555000555"}, service.port)
        drive(service, [request] * 50, 1).report("the same, by the shared phone")


def _database():
    """DATABASE_URL, or a fresh embedded durable PostgreSQL; returns (url, server or None)."""
    if os.environ.get("DATABASE_URL"):
        return os.environ["DATABASE_URL"], None
    server = EmbeddedPostgres(durable=True)
    return server.start(), server


def preload_and_analyze(service, workload: Workload, database_url: str, concurrency: int) -> None:
    """Store every customer with all its values (Workload.preload), then give the table
    the statistics that autovacuum keeps on a database that has lived; a fresh one gets
    them a minute or two after it fills (sql/013_customer_rows.sql says why the look-up
    cares)."""
    checkouts = _requests(workload.preload(), service.port)
    drive(service, checkouts, concurrency).report(f"preload ({len(checkouts):,} checkouts)")
    with contextlib.closing(psycopg2.connect(database_url)) as conn, conn.cursor() as cur:
        conn.autocommit = True
        cur.execute("ANALYZE contact")


def _measure(service, workload: Workload, concurrency: int, seconds: int, label: str) -> dict:
    spread = connections_per_worker(service, concurrency)
    # More requests than the fastest server sends in that time; the rest are never sent.
    bodies = workload.checkouts(seconds * 6000)
    result = drive(service, _requests(bodies, service.port), concurrency, seconds)
    workload.keep(len(result.latencies))
    figures = result.report(label)
    print(f"{'':<28} {concurrency} connections opened at once, per worker: {spread}", flush=True)
    return {**figures, "connections_per_worker": spread}


def _seconds_at(args, concurrency: int) -> int:
    return args.single_seconds if concurrency == 1 else args.seconds


def _mixed_run(args, database_url: str) -> dict:
    """Preload; the concurrency curve at the default WORKERS; the WORKERS curve if asked;
    PostgreSQL's ceiling and the framework's floor at the same concurrencies."""
    workload = Workload(args.seed)
    figures: dict = {"concurrency": {}, "workers": {}, "ceiling": {}, "floor": {}}
    with _service(database_url, args.threads, args.default_workers) as service:
        preload_and_analyze(service, workload, database_url, concurrency=16)
        for concurrency in args.concurrency:
            figures["concurrency"][concurrency] = _measure(
                service,
                workload,
                concurrency,
                _seconds_at(args, concurrency),
                f"WORKERS={args.default_workers}, c{concurrency}",
            )
    for workers in args.workers:
        with _service(database_url, args.threads, workers) as service:
            figures["workers"][workers] = _measure(
                service,
                workload,
                args.at_concurrency,
                args.seconds,
                f"WORKERS={workers}, c{args.at_concurrency}",
            )
    compared = sorted(set(args.concurrency) | ({args.at_concurrency} if args.workers else set()))
    for concurrency in compared:
        ceiling = pgbench_ceiling(database_url, concurrency, args.pgbench_seconds, CUSTOMERS)
        figures["ceiling"][concurrency] = ceiling
        print(
            f"{f'pgbench ceiling, c{concurrency}':<28} {ceiling:>7.0f} tps (same database)",
            flush=True,
        )
    figures["floor"] = framework_floor(args.threads, compared, args.floor_seconds)
    for concurrency, result in figures["concurrency"].items():
        share = result["throughput"] / figures["ceiling"][concurrency]
        print(f"{f'c{concurrency} / ceiling':<28} {share:>7.0%}", flush=True)
    for workers, result in figures["workers"].items():
        share = result["throughput"] / figures["ceiling"][args.at_concurrency]
        print(f"{f'WORKERS={workers} / ceiling':<28} {share:>7.0%}", flush=True)
    return figures


def draw(figures: dict, path: Path, title: str) -> None:
    """Throughput and p50/p99 against concurrency (and WORKERS), with ceiling and floor."""
    import matplotlib

    matplotlib.use("Agg")  # files only, no display
    from matplotlib import pyplot

    columns = [("concurrency", "concurrency (connections)")]
    if figures["workers"]:
        columns.append(("workers", f"WORKERS (at concurrency {figures['at_concurrency']})"))
    fig, axes = pyplot.subplots(2, len(columns), figsize=(6.5 * len(columns), 8), squeeze=False)
    for column, (key, label) in enumerate(columns):
        xs = sorted(figures[key])
        points = [figures[key][x] for x in xs]
        ceiling = [
            figures["ceiling"][x if key == "concurrency" else figures["at_concurrency"]] for x in xs
        ]
        floor = [
            figures["floor"][x if key == "concurrency" else figures["at_concurrency"]] for x in xs
        ]
        top, bottom = axes[0][column], axes[1][column]
        top.plot(xs, [p["throughput"] for p in points], "o-C0", label="service (req/s)")
        top.plot(xs, ceiling, "s--C1", label="PostgreSQL ceiling, pgbench (tps)")
        top.plot(
            xs,
            [f["throughput"] for f in floor],
            "^:C2",
            label="Flask+waitress constant answer (req/s)",
        )
        top.set_ylabel("per second")
        bottom.plot(xs, [p["p50_ms"] for p in points], "o-C0", label="service p50")
        bottom.plot(xs, [p["p99_ms"] for p in points], "v--C0", label="service p99")
        bottom.plot(xs, [f["p50_ms"] for f in floor], "^-C2", label="constant answer p50")
        bottom.plot(xs, [f["p99_ms"] for f in floor], "^:C2", label="constant answer p99")
        bottom.set_yscale("log")
        bottom.set_ylabel("latency (ms)")
        for axis in (top, bottom):
            axis.set_xscale("log", base=2)
            axis.set_xticks(xs, [str(x) for x in xs])
            axis.set_xlabel(label)
            axis.grid(True, which="both", alpha=0.3)
            axis.legend(fontsize=8)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    pyplot.close(fig)


class _Tee:
    """Standard output, copied to the report file."""

    def __init__(self, stream, path: Path):
        self.stream, self.file = stream, open(path, "w")

    def write(self, text: str) -> int:
        self.file.write(text)
        return self.stream.write(text)

    def flush(self) -> None:
        self.file.flush()
        self.stream.flush()


def _numbers(text: str) -> list[int]:
    return [int(part) for part in text.split(",") if part.strip()]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument(
        "--concurrency",
        type=_numbers,
        default=[1, 4, 16, 64],
        help="the concurrency curve, at the default WORKERS",
    )
    parser.add_argument(
        "--workers",
        type=_numbers,
        default=[],
        help="a WORKERS sweep at --at-concurrency, e.g. 1,2,4,8,16",
    )
    parser.add_argument("--at-concurrency", type=int, default=16)
    parser.add_argument("--seconds", type=int, default=15)
    parser.add_argument("--single-seconds", type=int, default=10)
    parser.add_argument("--pgbench-seconds", type=int, default=10)
    parser.add_argument("--floor-seconds", type=int, default=5)
    parser.add_argument("--threads", type=int, default=int(os.environ.get("THREADS", 2)))
    parser.add_argument("--out", type=Path, default=PROJECT_ROOT / "bench-results")
    parser.add_argument("--scale", action="store_true", help="latency at 10 k and 1 M rows")
    args = parser.parse_args()
    args.default_workers = int(os.environ.get("WORKERS", default_workers()))

    args.out.mkdir(parents=True, exist_ok=True)
    name = "bench-scale" if args.scale else "bench"
    sys.stdout = _Tee(sys.stdout, args.out / f"{name}.txt")
    database_url, server = _database()
    try:
        migrate(database_url, PROJECT_ROOT / "sql")
        title = (
            f"seed {args.seed}, {os.cpu_count()} CPUs, default WORKERS={args.default_workers}, "
            f"THREADS={args.threads} per worker, {time.strftime('%Y-%m-%d %H:%M')}"
        )
        print(f"benchmark: {title}; load average {os.getloadavg()[0]:.1f} at start")
        if args.scale:
            _scale_run(args, database_url)
        else:
            figures = _mixed_run(args, database_url)
            figures["at_concurrency"] = args.at_concurrency
            (args.out / "bench.json").write_text(json.dumps(figures, indent=1))
            draw(figures, args.out / "bench.png", title)
            print(f"report, figures and picture: {args.out}/bench.txt, bench.json, bench.png")
    finally:
        if server:
            server.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
