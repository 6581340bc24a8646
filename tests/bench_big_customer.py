"""One customer of 30,000 rows: time and size of POST /identify, the look-ups and the
console's page, and where the time of a checkout goes (make bench-big).

In-process (Flask's test client, no HTTP server), on a fresh embedded PostgreSQL or on
DATABASE_URL. The customer has the shape that grows without bound in practice: a hub
phone number shared by every row, each row with its own e-mail, and one history event
per row. Prints medians of REPEAT runs and the body sizes.
"""

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

import psycopg2

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from identity import create_app  # noqa: E402
from identity.config import PROJECT_ROOT  # noqa: E402
from identity.customers import linking, repository  # noqa: E402
from identity.customers.model import consolidate  # noqa: E402
from identity.database.connections import close_pool, connection_parameters  # noqa: E402
from identity.database.migrations import migrate  # noqa: E402
from identity.dev.embedded import EmbeddedPostgres  # noqa: E402
from identity.web.schemas import identify_response  # noqa: E402

HUB_PHONE = "555000555"

# The customer, with the history a checkout per row would have written.
FILL = """
TRUNCATE contact RESTART IDENTITY CASCADE;
INSERT INTO contact (email, phoneNumber, linkPrecedence)
VALUES ('big0@shop.test', %(phone)s, 'primary');
INSERT INTO contact (email, phoneNumber, linkedId, linkPrecedence)
SELECT 'big' || n || '@shop.test', %(phone)s, 1, 'secondary'
  FROM generate_series(1, %(rows)s - 1) AS n;
INSERT INTO contact_event (kind, contactId, primaryId, email, phoneNumber)
SELECT CASE WHEN id = 1 THEN 'customer_created' ELSE 'secondary_added' END, id, 1, email,
       phoneNumber
  FROM contact ORDER BY id;
ANALYZE contact;
ANALYZE contact_event;
"""


def fill(database_url: str, rows: int) -> None:
    conn = psycopg2.connect(database_url)
    conn.autocommit = True
    with conn.cursor() as cur:
        cur.execute(FILL, {"phone": HUB_PHONE, "rows": rows})
    conn.close()


def measure(label: str, call, repeat: int) -> None:
    """Wall time (best and median: on a shared machine the best is the closest to an idle
    one), this process's CPU time (the service's Python; PostgreSQL runs apart), size."""
    walls, cpus, size = [], [], 0
    for _ in range(repeat):
        started, started_cpu = time.perf_counter(), time.process_time()
        response = call()
        walls.append(time.perf_counter() - started)
        cpus.append(time.process_time() - started_cpu)
        assert response.status_code in (200, 303), (label, response.status_code)
        size = len(response.get_data())
    print(
        f"{label:<46} {min(walls) * 1000:7.0f} {statistics.median(walls) * 1000:7.0f} ms"
        f" {statistics.median(cpus) * 1000:7.0f} ms {size / 1024:8.1f} KiB",
        flush=True,
    )


def parts_of_a_checkout(database_url: str, repeat: int) -> None:
    """The read of a checkout that brings nothing new, split into its parts."""
    app = create_app({"DATABASE_URL": database_url})
    conn = psycopg2.connect(database_url, **connection_parameters(app.config))
    conn.autocommit = True
    parts: dict[str, list[float]] = {}

    def timed(name, work):
        started = time.perf_counter()
        result = work()
        parts.setdefault(name, []).append(time.perf_counter() - started)
        return result

    def executed_in_postgresql():
        with conn.cursor() as cur:
            cur.execute(
                "EXPLAIN (ANALYZE, FORMAT JSON) " + repository.RESOLVE_CUSTOMER,
                {"email": "big0@shop.test", "phone_number": None},
            )
            return cur.fetchone()[0][0]["Execution Time"]

    server_ms = [executed_in_postgresql() for _ in range(repeat)]
    for _ in range(repeat):
        rows = timed(
            "SQL: the customer's rows (find_customer)",
            lambda: repository.find_customer(conn, "big0@shop.test", None),
        )
        found = timed("Python: linking.customers", lambda rows=rows: linking.customers(rows))
        customer = timed(
            "Python: consolidate (SPEC §3)", lambda found=found: consolidate(found[0].rows)
        )
        timed(
            "Python: marshmallow dump + JSON",
            lambda customer=customer: app.json.dumps(
                identify_response.dump({"contact": customer})
            ),
        )
    conn.close()
    print(f"  {'PostgreSQL: executing it (EXPLAIN ANALYZE)':<50} {min(server_ms):7.0f} ms best")
    for name, times in parts.items():
        print(f"  {name:<50} {min(times) * 1000:7.0f} ms best", flush=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rows", type=int, default=30_000)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    server = None
    database_url = os.environ.get("DATABASE_URL")
    if not database_url:
        server = EmbeddedPostgres()
        database_url = server.start()
    try:
        migrate(database_url, PROJECT_ROOT / "sql")
        fill(database_url, args.rows)
        print(f"one customer of {args.rows:,} rows, {args.rows:,} history events")
        print(f"{'':<46} {'best':>7} {'median':>7} wall  {'CPU':>4} here  {'body':>8}")
        app = create_app({"DATABASE_URL": database_url, "POOL_SIZE": 2})
        client = app.test_client()
        last = args.rows
        new_emails = iter(range(10**9))
        measure(
            "POST /identify, nothing new",
            lambda: client.post("/identify", json={"email": "big0@shop.test"}),
            args.repeat,
        )
        measure(
            "POST /identify, a new e-mail (inserts a row)",
            lambda: client.post(
                "/identify",
                json={"email": f"new{next(new_emails)}@shop.test", "phoneNumber": HUB_PHONE},
            ),
            args.repeat,
        )
        measure(
            "GET /identify?email=",
            lambda: client.get("/identify?email=big0@shop.test"),
            args.repeat,
        )
        measure(
            "GET /identify?phoneNumber= (all rows match)",
            lambda: client.get(f"/identify?phoneNumber={HUB_PHONE}"),
            args.repeat,
        )
        measure("GET /contacts/{id}", lambda: client.get(f"/contacts/{last}"), args.repeat)
        measure(
            "GET /contacts/{id}/history",
            lambda: client.get(f"/contacts/{last}/history"),
            args.repeat,
        )
        measure(
            "console: customer page, first page",
            lambda: client.get("/console/contacts/1"),
            args.repeat,
        )
        measure(
            "console: customer page of the newest row",
            lambda: client.get(f"/console/contacts/{last}"),
            args.repeat,
        )
        close_pool(app)
        print("where the time of `POST /identify, nothing new` goes:")
        parts_of_a_checkout(database_url, args.repeat)
    finally:
        if server:
            server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
