"""`make bench`: the service under a realistic checkout mix, next to PostgreSQL's ceiling.

    python tests/bench.py [--seed 1] [--concurrency 16] [--seconds 30] [--scale]

Starts the service as `make run` does (embedded, durable PostgreSQL unless DATABASE_URL
is set; `python wsgi.py`), preloads 10,000 checkouts, then drives it over HTTP/1.1
keep-alive from an asyncio load generator with a seeded request sequence: the same seed
sends the same requests. Measures the service with WORKERS=1 and with the default number
of workers, one after the other on the same database. Reports throughput and latency, the
service's CPU time per request (supervisor and workers), the load generator's own CPU,
and pgbench's throughput for the minimal database work of one request on the same
database at the same concurrency, and the service's ratio to it. --scale measures latency
at 10 k and 1 M rows and for one customer of 5,000 rows instead.
"""

import argparse
import asyncio
import contextlib
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field

import psycopg2
from servers import PROJECT_ROOT, ServerProcess  # puts the project on sys.path

from identity.config import default_workers
from identity.database.migrations import migrate
from identity.dev.embedded import EmbeddedPostgres, find_bin_dir

PRELOAD_CHECKOUTS = 10_000
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

    def preload(self, count: int) -> list[dict]:
        """Checkouts that make every customer known with all its values."""
        bodies = []
        for n in range(count):
            customer = self.customers[n % len(self.customers)]
            bodies.append(
                {
                    "email": self.random.choice(customer.emails),
                    "phoneNumber": self.random.choice(customer.phones),
                }
            )
        return bodies

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
        return [self.checkout() for _ in range(count)]


def http_request(body: dict, port: int) -> bytes:
    payload = json.dumps(body).encode()
    return (
        f"POST /identify HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(payload)}\r\n\r\n"
    ).encode() + payload


# --- The load generator -----------------------------------------------------------------


@dataclass
class Result:
    latencies: list[float]
    errors: int
    wall: float
    client_cpu: float
    service_cpu: float

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
        }
        print(
            f"{label:<28} {figures['requests']:>7} req  {figures['errors']:>3} err  "
            f"{figures['throughput']:>7.0f} req/s  p50 {figures['p50_ms']:5.2f}  "
            f"p90 {figures['p90_ms']:5.2f}  p99 {figures['p99_ms']:6.2f}  "
            f"max {figures['max_ms']:6.1f} ms  "
            f"client CPU {figures['client_cpu_pct']:3.0f}%  "
            f"service CPU {figures['service_cpu_pct']:3.0f}% "
            f"= {figures['service_cpu_ms']:.3f} ms/req",
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
    latencies, errors = asyncio.run(_drive(service.port, requests, concurrency, seconds))
    return Result(
        latencies,
        errors,
        time.perf_counter() - wall,
        time.process_time() - cpu,
        service.cpu_seconds() - service_cpu,
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


# The minimal work of one request: the recursive-CTE look-up by e-mail or phone, and an
# insert for one request in six; pgbench's simple protocol plans every statement.
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
        RESOLVE_CUSTOMER.replace("$1", "'c' || :k || '.0@shop.test'")
        .replace("$2", "(700000000 + :k * 4)::text")
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
            "2",
            "-T",
            str(seconds),
            "-f",
            script.name,
            database_url,
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    os.unlink(script.name)
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


def framework_floor(args) -> None:
    with ServerProcess(program=["-c", FLOOR_APP], THREADS=args.threads) as floor:
        request = http_request({"email": "a@x.io"}, floor.port)
        drive(floor, [request] * 200_000, args.concurrency, 5).report(
            f"Flask+waitress floor, c{args.concurrency}"
        )


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
            figures = drive(service, single, 1, args.single_seconds).report(
                f"mixed c1, {rows:,} rows"
            )
            p50s[rows] = figures["p50_ms"]
            mixed = _requests(workload.checkouts(args.seconds * 6000), service.port)
            drive(service, mixed, args.concurrency, args.seconds).report(
                f"mixed c{args.concurrency}, {rows:,} rows"
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


def _mixed_run(args, database_url: str) -> dict:
    """Preload, then the mix at WORKERS=1 and at the default, then PostgreSQL's ceiling."""
    workload = Workload(args.seed)
    figures = {}
    for workers in (1, args.workers):
        with _service(database_url, args.threads, workers) as service:
            if not figures:
                preload = _requests(workload.preload(PRELOAD_CHECKOUTS), service.port)
                drive(service, preload, args.concurrency).report("preload (10,000 checkouts)")
            mixed = _requests(workload.checkouts(args.seconds * 6000), service.port)
            figures[workers] = drive(service, mixed, args.concurrency, args.seconds).report(
                f"WORKERS={workers}, concurrency {args.concurrency}"
            )
            single = _requests(workload.checkouts(args.single_seconds * 3000), service.port)
            drive(service, single, 1, args.single_seconds).report(
                f"WORKERS={workers}, concurrency 1"
            )
    ceiling = pgbench_ceiling(database_url, args.concurrency, args.pgbench_seconds, CUSTOMERS)
    print(
        f"{'pgbench ceiling':<28} {ceiling:>7.0f} tps "
        f"(same database, concurrency {args.concurrency})"
    )
    for workers, result in figures.items():
        print(
            f"{f'WORKERS={workers} / ceiling':<28} {result['throughput'] / ceiling:>7.0%}",
            flush=True,
        )
    return figures


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--seconds", type=int, default=30)
    parser.add_argument("--single-seconds", type=int, default=10)
    parser.add_argument("--pgbench-seconds", type=int, default=15)
    parser.add_argument("--threads", type=int, default=int(os.environ.get("THREADS", 8)))
    parser.add_argument(
        "--workers", type=int, default=int(os.environ.get("WORKERS", default_workers()))
    )
    parser.add_argument("--scale", action="store_true", help="latency at 10 k and 1 M rows")
    args = parser.parse_args()

    database_url, server = _database()
    try:
        migrate(database_url, PROJECT_ROOT / "sql")
        print(
            f"benchmark: seed {args.seed}, {os.cpu_count()} CPUs, default WORKERS={args.workers}, "
            f"THREADS={args.threads} per worker"
        )
        if args.scale:
            _scale_run(args, database_url)
        else:
            _mixed_run(args, database_url)
            framework_floor(args)
    finally:
        if server:
            server.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
