"""`make bench-import`: the bulk import against a one-at-a-time replay through the API.

    python tests/bench_import.py [--orders 1000000] [--seed 1] [--runs 1] [--replay 3000]
                                 [--shuffle]

Generates a realistic file of orders, sorted by createdAt unless --shuffle (repeat buyers,
customers with several e-mails and phones, shared family phones, bridges between
customers, spelling variants, 0.3 % bad rows), then, on a fresh embedded durable
PostgreSQL (or DATABASE_URL):

1. imports it into an empty database (`flask --app identity import`, a child process whose
   peak memory is measured);
2. replays the first --replay orders through POST /identify, one at a time in createdAt
   order, as a shop without the import would (the API's rate for the same orders);
3. fills the table with a million rows whose customers the file's orders meet again,
   older than them, and imports the file into it.

Prints orders/s for each, the ratio to the API's rate, and the import's peak RSS.
"""

import argparse
import csv
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psycopg2
from bench import (  # also puts the project on sys.path
    Workload,
    _fill,
    _requests,
    _service,
    drive,
)
from servers import PROJECT_ROOT

from identity.database.migrations import migrate
from identity.dev.embedded import EmbeddedPostgres

START = datetime(2020, 1, 1, tzinfo=UTC)


def generate(path: str, orders: int, seed: int) -> None:
    """Orders of customers shaped as bench.py's (customer k's values by one formula), so
    the filled table of step 3 holds the same customers."""
    rng = random.Random(seed)
    customers: list[tuple[int, int, int]] = []  # (k, e-mails, phones)
    moment = START
    with open(path, "w", newline="") as file:
        out = csv.writer(file)
        out.writerow(["orderId", "email", "phoneNumber", "createdAt"])
        for number in range(orders):
            moment += timedelta(milliseconds=rng.randint(0, 300))
            out.writerow([number, *_order(rng, customers), moment.isoformat()])


def shuffle_orders(path: str, seed: int) -> None:
    """The same orders in random file order (the import sorts them itself)."""
    with open(path) as file:
        header, *orders = file.readlines()
    random.Random(seed).shuffle(orders)
    with open(path, "w") as file:
        file.write(header)
        file.writelines(orders)


def _order(rng: random.Random, customers: list) -> tuple[str, str]:
    roll = rng.random()
    if roll < 0.003:  # a bad row
        return rng.choice([("not-an-email", ""), ("", "12ab"), ("", ""), ("a@b", "(-)")])
    if not customers or roll < 0.35:  # a new customer
        customers.append((len(customers), rng.choice([1, 1, 1, 2, 3]), rng.choice([1, 1, 2, 3])))
        k, emails, phones = customers[-1]
    else:  # a repeat buyer, recent customers more often
        k, emails, phones = customers[-1 - int(len(customers) * rng.random() ** 3)]
    values = Workload.identifiers(k, emails, phones)
    email, phone = rng.choice(values.emails), rng.choice(values.phones)
    shape = rng.random()
    if shape < 0.01 and k > 0:  # a family sharing a phone: links two customers
        phone = Workload.identifiers(k - 1, 1, 1).phones[0]
    elif shape < 0.02:  # a bridge between two customers
        other = rng.randrange(len(customers))
        email = Workload.identifiers(other, 1, 1).emails[0]
    elif shape < 0.15:
        email = ""  # phone only
    elif shape < 0.25:
        phone = ""  # e-mail only
    elif shape < 0.35:  # typed differently
        email, phone = email.upper(), f"{phone[:3]}-{phone[3:6]} {phone[6:]}"
    return email, phone


def _database_cpu(server) -> float:
    """CPU seconds used so far by the embedded server's processes (0 without one): the
    postmaster, its live children, and the children that exited (the import's backend)."""
    if server is None:
        return 0.0
    postmaster = int((server.data_dir / "postmaster.pid").read_text().split()[0])
    total = 0.0
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            fields = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(entry) == postmaster:
            total += sum(int(value) for value in fields[11:15])  # utime stime cutime cstime
        elif int(fields[1]) == postmaster:
            total += int(fields[11]) + int(fields[12])
    return total / os.sysconf("SC_CLK_TCK")


def run_import(database_url: str, path: str, server) -> dict:
    """Seconds, orders/s, peak RSS (MiB) and CPU seconds (import, database) of
    `flask --app identity import path`."""
    env = {**os.environ, "DATABASE_URL": database_url}
    database_cpu = _database_cpu(server)
    load = os.getloadavg()[0]
    started = time.perf_counter()
    child = subprocess.Popen(
        [sys.executable, "-m", "flask", "--app", "identity", "import", path],
        env=env,
        cwd=PROJECT_ROOT,
        stdout=subprocess.PIPE,
        text=True,
    )
    output = child.stdout.read()
    _, status, usage = os.wait4(child.pid, 0)
    seconds = time.perf_counter() - started
    print("    " + output.strip().replace("\n", "\n    "), flush=True)
    if os.waitstatus_to_exitcode(status) not in (0, 1):
        raise RuntimeError("the import failed")
    read = int(output.split()[1].replace(",", ""))
    figures = {
        "seconds": seconds,
        "rate": read / seconds,
        "rss": usage.ru_maxrss / 1024,
        "import_cpu": usage.ru_utime + usage.ru_stime,
        "database_cpu": _database_cpu(server) - database_cpu,
        "load": (load + os.getloadavg()[0]) / 2,
    }
    print(
        f"    {figures['rate']:,.0f} orders/s; CPU: import {figures['import_cpu']:.1f} s, "
        f"database {figures['database_cpu']:.1f} s; peak RSS {figures['rss']:.0f} MiB; "
        f"load average {figures['load']:.1f} on {os.cpu_count()} CPUs",
        flush=True,
    )
    return figures


def replay(database_url: str, path: str, count: int) -> float:
    """Orders/s of POST /identify, one at a time, for the file's first `count` orders."""
    with open(path, newline="") as file:
        reader = csv.DictReader(file)
        bodies = []
        for row in reader:
            body = {name: row[name] for name in ("email", "phoneNumber") if row[name]}
            bodies.append(body)
            if len(bodies) == count:
                break
    with _service(database_url, threads=8) as service:
        result = drive(service, _requests(bodies, service.port), concurrency=1)
    return len(result.latencies) / result.wall


def _truncate(database_url: str) -> None:
    conn = psycopg2.connect(database_url)
    conn.autocommit = True
    with conn.cursor() as cur:
        cur.execute("TRUNCATE contact RESTART IDENTITY CASCADE")
    conn.close()


def one_run(database_url: str, path: str, server, args) -> dict:
    _truncate(database_url)
    print("  import into an empty database", flush=True)
    empty = run_import(database_url, path, server)
    _truncate(database_url)
    api_rate = replay(database_url, path, args.replay)
    print(f"  API replay, one at a time: {api_rate:,.0f} orders/s ({args.replay:,} orders)")
    _fill(database_url, args.existing_rows)
    print(f"  import into a database of {args.existing_rows:,} rows", flush=True)
    full = run_import(database_url, path, server)
    return {
        "empty_rate": empty["rate"],
        "api_rate": api_rate,
        "ratio": empty["rate"] / api_rate,
        "full_rate": full["rate"],
        "rss": max(empty["rss"], full["rss"]),
        "cpu_per_order": 1e6 * (empty["import_cpu"] + empty["database_cpu"]) / args.orders,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--orders", type=int, default=1_000_000)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--runs", type=int, default=1)
    parser.add_argument("--replay", type=int, default=3000, help="orders sent through the API")
    parser.add_argument("--existing-rows", type=int, default=1_000_000)
    parser.add_argument("--shuffle", action="store_true", help="orders in random file order")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as folder:
        path = os.path.join(folder, "orders.csv")
        started = time.perf_counter()
        generate(path, args.orders, args.seed)
        if args.shuffle:
            shuffle_orders(path, args.seed)
        print(
            f"generated {args.orders:,} orders ({os.path.getsize(path) / 2**20:.0f} MiB) "
            f"in {time.perf_counter() - started:.0f} s; {os.cpu_count()} CPUs",
            flush=True,
        )
        server = None
        database_url = os.environ.get("DATABASE_URL")
        if not database_url:
            server = EmbeddedPostgres(durable=True)
            database_url = server.start()
        try:
            migrate(database_url, PROJECT_ROOT / "sql")
            runs = []
            for number in range(args.runs):
                print(f"run {number + 1} of {args.runs}", flush=True)
                runs.append(one_run(database_url, path, server, args))
        finally:
            if server:
                server.close()
    print(f"\n{'median of ' + str(len(runs)) + ' run(s)':<40} {'median':>10}   runs")
    for key, label, unit in (
        ("empty_rate", "import into an empty database", "orders/s"),
        ("api_rate", "API replay, one at a time", "orders/s"),
        ("ratio", "import / API", "x"),
        ("full_rate", f"import into {args.existing_rows:,} rows", "orders/s"),
        ("rss", "peak RSS of the import", "MiB"),
        ("cpu_per_order", "CPU per order, import + database (empty)", "µs"),
    ):
        values = [run[key] for run in runs]
        shown = ", ".join(f"{value:,.1f}" for value in values)
        print(f"{label:<40} {statistics.median(values):>10,.1f} {unit:<9} {shown}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
