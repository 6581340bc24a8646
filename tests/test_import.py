"""Bulk import (`flask --app identity import`): the same result as a one-at-a-time replay
through POST /identify, correct merges into existing customers, rejects, exit statuses,
re-runs, interruptions, and live traffic at the same time."""

import csv
import json
import os
import random
import signal
import subprocess
import sys
import threading
from datetime import UTC, datetime, timedelta

import psycopg2
import pytest
from conftest import identify, replay_links, rows, wait_for

from identity import create_app
from identity.config import PROJECT_ROOT
from identity.customers.audit import find_violations

T0 = datetime(2019, 3, 1, 12, 0, tzinfo=UTC)


def write_csv(path, orders: list[dict]) -> str:
    with open(path, "w", newline="") as file:
        out = csv.DictWriter(file, ["email", "phoneNumber", "createdAt", "note"])
        out.writeheader()
        for order in orders:
            out.writerow({"note": "ignored", **order})
    return str(path)


def run_import(runner, path: str, *options: str):
    return runner.invoke(args=["import", path, *options])


def random_history(seed: int, count: int = 80) -> list[dict]:
    """Orders over small pools of values, so that repeats, new values, merges and bridges
    all happen; many orders share a createdAt; some values are spelt differently."""
    rng = random.Random(seed)
    orders = []
    for _ in range(count):
        email = f"e{rng.randrange(14)}@x.io"
        phone = str(100 + rng.randrange(12))
        shape = rng.random()
        order = {
            "email": "" if shape < 0.2 else email.upper() if shape < 0.3 else email,
            "phoneNumber": ""
            if 0.8 < shape
            else f"{phone[0]}-{phone[1:]}"
            if shape < 0.4
            else phone,
            "createdAt": (T0 + timedelta(minutes=rng.randrange(30))).isoformat(),
        }
        orders.append(order)
    return orders


def normalised(order: dict) -> tuple:
    email = order["email"].strip().lower() or None
    phone = order["phoneNumber"].replace("-", "") or None
    return email, phone


def answers(client, orders: list[dict]) -> dict:
    """The GET /identify answer for every value of the orders."""
    result = {}
    for email, phone in map(normalised, orders):
        for name, value in (("email", email), ("phoneNumber", phone)):
            if value is not None and (name, value) not in result:
                response = client.get("/identify", query_string={name: value})
                assert response.status_code == 200
                result[(name, value)] = response.get_json()["contact"]
    return result


def created_at(db) -> dict[int, datetime]:
    with db.cursor() as cur:
        cur.execute("SELECT id, createdAt FROM contact")
        return dict(cur.fetchall())


def canonical(db) -> set[tuple]:
    """The rows and their links without ids: (email, phone, createdAt, precedence,
    primary's email, phone and createdAt). Ids may differ after an interruption, since
    an aborted batch still uses up sequence numbers."""
    with db.cursor() as cur:
        cur.execute(
            """SELECT row.email, row.phoneNumber, row.createdAt, row.linkPrecedence,
                      p.email, p.phoneNumber, p.createdAt
                 FROM contact AS row JOIN contact AS p ON p.id = COALESCE(row.linkedId, row.id)"""
        )
        return set(cur.fetchall())


def truncate(db) -> None:
    with db.cursor() as cur:
        cur.execute("TRUNCATE contact RESTART IDENTITY CASCADE")


def primary_of(db, name: str, value: str) -> set[int]:
    column = "email" if name == "email" else "phoneNumber"
    with db.cursor() as cur:
        cur.execute(
            f"SELECT DISTINCT COALESCE(linkedId, id) FROM contact WHERE {column} = %s "
            "AND deletedAt IS NULL",
            (value,),
        )
        return {row[0] for row in cur.fetchall()}


def assert_orders_each_in_one_customer(db, orders: list[dict]) -> None:
    for email, phone in map(normalised, orders):
        primaries = set()
        if email:
            primaries |= primary_of(db, "email", email)
        if phone:
            primaries |= primary_of(db, "phone", phone)
        assert len(primaries) == 1, (email, phone, primaries)


@pytest.mark.parametrize(
    "seed, batch_size, shuffled",
    [(0, 7, False), (1, 7, False), (2, 13, False), (3, 1, False), (4, 1000, True), (5, 1000, True)],
)
def test_import_into_an_empty_database_equals_a_one_at_a_time_replay(
    client, runner, db, tmp_path, seed, batch_size, shuffled
):
    """SPEC §11: same rows, customers, primaries and answers as POST /identify one at a
    time in createdAt order (file order among equal times), rows carrying their order's
    createdAt. A shuffled file in one batch is sorted in memory."""
    orders = random_history(seed)
    in_time_order = sorted(orders, key=lambda order: order["createdAt"])
    file_orders = random.Random(seed).sample(orders, len(orders)) if shuffled else in_time_order
    if shuffled:  # equal times keep file order: replay in the order of the file
        in_time_order = sorted(file_orders, key=lambda order: order["createdAt"])
    result = run_import(
        runner, write_csv(tmp_path / "orders.csv", file_orders), "--batch-size", str(batch_size)
    )
    assert result.exit_code == 0, result.output
    imported_rows, imported_answers, imported_times = (
        rows(db),
        answers(client, orders),
        created_at(db),
    )

    truncate(db)
    for order in in_time_order:
        identify(client, {name: order[name] for name in ("email", "phoneNumber") if order[name]})
    assert imported_rows == rows(db)
    assert imported_answers == answers(client, orders)
    first_order_of = {}
    for order in in_time_order:
        first_order_of.setdefault(normalised(order), order["createdAt"])
    for row_id, email, phone, _, _ in imported_rows:
        assert imported_times[row_id] == datetime.fromisoformat(first_order_of[(email, phone)])


def test_an_older_order_becomes_the_primary_of_an_existing_customer(client, runner, db, tmp_path):
    """SPEC §11 / §6.3 by createdAt: an imported order older than a stored customer's
    primary makes its row the primary; bridges merge into the oldest; an order that brings
    nothing new inserts nothing, however old; the history records the demotions."""
    identify(client, {"email": "a@x.io", "phoneNumber": "100"})  # row 1, today
    identify(client, {"email": "b@x.io", "phoneNumber": "200"})  # row 2, today
    orders = [
        {"email": "c@x.io", "phoneNumber": "100", "createdAt": "2019-01-01T00:00:00"},
        {"email": "a@x.io", "phoneNumber": "200", "createdAt": "2020-01-01T00:00:00Z"},
        {"email": "b@x.io", "phoneNumber": "", "createdAt": "2018-01-01T00:00:00"},
    ]
    result = run_import(runner, write_csv(tmp_path / "orders.csv", orders))
    assert result.exit_code == 0, result.output
    assert rows(db) == [
        (1, "a@x.io", "100", 3, "secondary"),
        (2, "b@x.io", "200", 3, "secondary"),
        (3, "c@x.io", "100", None, "primary"),
    ]
    assert created_at(db)[3] == datetime(2019, 1, 1, tzinfo=UTC)
    assert find_violations(db) == []
    assert replay_links(db) == {1: 3, 2: 3, 3: None}
    assert identify(client, {"email": "b@x.io"})["primaryContactId"] == 3
    assert "new rows              1" in result.output and "merges                2" in result.output


def test_bad_rows_go_to_the_rejects_file_with_line_numbers_and_the_api_s_errors(
    client, runner, db, tmp_path
):
    """SPEC §11: a bad row is listed with its line number and the code and message that
    POST /identify gives for it; the import goes on; exit status 1."""
    path = tmp_path / "orders.csv"
    path.write_text(
        "email,phoneNumber,createdAt\n"
        "good@x.io,100,2020-01-01\n"
        "not-an-email,100,2020-01-02\n"
        ",,2020-01-03\n"
        "null,,2020-01-04\n"
        "ok@x.io,12ab,2020-01-05\n"
        "late@x.io,,yesterday\n"
        "fine@x.io,,\n"
    )
    result = run_import(runner, str(path), "--rejects", str(tmp_path / "bad.ndjson"))
    assert result.exit_code == 1, result.output
    rejects = [json.loads(line) for line in (tmp_path / "bad.ndjson").read_text().splitlines()]
    assert [(r["line"], r["code"]) for r in rejects] == [
        (3, "invalid_field"),
        (4, "missing_identifier"),
        (5, "blocked_values"),
        (6, "invalid_field"),
        (7, "invalid_field"),
    ]
    for reject, body in zip(
        rejects[:4],
        [
            {"email": "not-an-email", "phoneNumber": "100"},
            {},
            {"email": "null"},
            {"email": "ok@x.io", "phoneNumber": "12ab"},
        ],
        strict=True,
    ):
        error = client.post("/identify", json=body).get_json()["error"]
        assert (reject["code"], reject["message"], reject.get("fields")) == (
            error["code"],
            error["message"],
            error.get("fields"),
        )
    assert rejects[4]["fields"] == {"createdAt": ["must be an ISO 8601 date and time"]}
    assert [row[1] for row in rows(db)] == ["good@x.io", "fine@x.io"]
    assert "rejected              5 orders" in result.output


def test_ndjson_gzip_and_standard_input(runner, db, tmp_path):
    """SPEC §11 formats: NDJSON with integer phone numbers, gzip, `-` for standard input;
    a line that is not JSON or not an object is rejected."""
    import gzip

    lines = [
        json.dumps({"email": "a@x.io", "phoneNumber": 100, "createdAt": "2020-01-01T00:00:00"}),
        "{not json",
        "[1, 2]",
        json.dumps({"phoneNumber": "100", "createdAt": "2020-01-02T00:00:00+01:00", "x": 1}),
    ]
    path = tmp_path / "orders.ndjson.gz"
    with gzip.open(path, "wt") as file:
        file.write("\n".join(lines) + "\n")
    rejects = tmp_path / "r.ndjson"
    result = run_import(runner, str(path), "--rejects", str(rejects))
    assert result.exit_code == 1, result.output
    assert [json.loads(line)["code"] for line in rejects.read_text().splitlines()] == [
        "malformed_json",
        "not_an_object",
    ]
    assert rows(db) == [(1, "a@x.io", "100", None, "primary")]
    result = runner.invoke(args=["import", "-", "--rejects", str(rejects)], input=lines[0] + "\n")
    assert result.exit_code == 0, result.output
    assert rows(db) == [(1, "a@x.io", "100", None, "primary")]


def test_exit_status_two_when_the_import_cannot_run(runner, database_url, tmp_path):
    """SPEC §11: 2 for no such file and for no database."""
    assert run_import(runner, str(tmp_path / "missing.csv")).exit_code == 2
    path = write_csv(
        tmp_path / "orders.csv", [{"email": "a@x.io", "phoneNumber": "", "createdAt": ""}]
    )
    unreachable = create_app(
        {"DATABASE_URL": "postgresql://postgres@127.0.0.1:1/none", "REQUEST_DEADLINE_S": 1}
    )
    result = unreachable.test_cli_runner().invoke(args=["import", path])
    assert result.exit_code == 2
    assert "cannot reach the database" in result.output


def test_running_the_same_file_again_changes_nothing(runner, db, tmp_path):
    """SPEC §11: a re-run inserts, updates and records nothing; exit 0."""
    path = write_csv(tmp_path / "orders.csv", random_history(7))
    assert run_import(runner, path, "--batch-size", "9").exit_code == 0

    def everything():
        with db.cursor() as cur:
            cur.execute("SELECT *, xmin::text FROM contact ORDER BY id")
            contacts = cur.fetchall()
            cur.execute("SELECT count(*) FROM contact_event")
            return contacts, cur.fetchone()

    before = everything()
    result = run_import(runner, path, "--batch-size", "9")
    assert result.exit_code == 0
    assert everything() == before
    assert "new rows              0" in result.output


def rows_created_by(orders: list[dict]) -> int:
    """Rows that these orders, in this order, create in an empty database: one for each
    order that brings a value never seen before (SPEC §5)."""
    seen, created = set(), 0
    for email, phone in map(normalised, orders):
        values = {("email", email), ("phone", phone)} - {("email", None), ("phone", None)}
        created += not values <= seen
        seen |= values
    return created


def _import_process(database_url: str, *options: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "flask", "--app", "identity", "import", "-", *options],
        env={**os.environ, "DATABASE_URL": database_url},
        cwd=PROJECT_ROOT,
        stdin=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )


def _import_waits_for_a_lock(db) -> bool:
    with db.cursor() as cur:
        cur.execute(
            "SELECT count(*) FROM pg_stat_activity "
            "WHERE application_name = 'identity-import' AND wait_event_type = 'Lock'"
        )
        return cur.fetchone()[0] > 0


def _row_count(db) -> int:
    with db.cursor() as cur:
        cur.execute("SELECT count(*) FROM contact")
        return cur.fetchone()[0]


def test_an_import_killed_in_the_middle_of_a_batch_completes_when_run_again(
    runner, db, database_url, tmp_path
):
    """SPEC §11: killed in the middle of a batch (its transaction open: values and
    primaries locked, ids taken, its rows on their way in), §6 still holds and nothing of
    the batch is stored; the same file run again ends equal to an uninterrupted import."""
    orders = sorted(random_history(11, 60), key=lambda order: order["createdAt"]) + [
        {
            "email": f"late{n}@x.io",
            "phoneNumber": str(100 + n % 12),
            "createdAt": f"2021-01-01T00:00:{n:02}",
        }
        for n in range(60)
    ]
    path = write_csv(tmp_path / "orders.csv", orders)
    lines = open(path).read().splitlines(keepends=True)
    process = _import_process(database_url, "--batch-size", "20", "--rejects", str(tmp_path / "r"))
    process.stdin.write("".join(lines[:61]))  # the header and three batches
    process.stdin.flush()
    committed = rows_created_by(orders[:60])
    wait_for(lambda: len(rows(db)) == committed, "three batches to commit")
    blocker = psycopg2.connect(database_url)
    with blocker.cursor() as cur:
        # The next batch takes its locks and ids, then waits to write its rows.
        cur.execute("LOCK TABLE contact IN SHARE MODE")
        process.stdin.write("".join(lines[61:]))
        process.stdin.flush()
        wait_for(lambda: _import_waits_for_a_lock(db), "the import to block mid-batch")
        process.send_signal(signal.SIGKILL)
        process.wait()
    blocker.rollback()
    blocker.close()
    assert len(rows(db)) == committed
    assert find_violations(db) == []

    assert run_import(runner, path, "--batch-size", "20").exit_code == 0
    resumed = canonical(db)
    truncate(db)
    assert run_import(runner, path, "--batch-size", "20").exit_code == 0
    assert resumed == canonical(db)


def test_live_checkouts_during_an_import_keep_the_invariants(app, runner, db, tmp_path):
    """SPEC §11: live traffic may run at the same time: afterwards §6 holds (the audit),
    and every order's and every checkout's values are in one customer."""
    orders = sorted(random_history(21, 600), key=lambda order: order["createdAt"])
    path = write_csv(tmp_path / "orders.csv", orders)
    done = threading.Event()
    checkouts: list[dict] = []
    failures: list[int] = []

    def shop(seed: int) -> None:
        rng, client = random.Random(seed), app.test_client()
        while not done.is_set():
            body = {
                "email": f"e{rng.randrange(16)}@x.io",
                "phoneNumber": str(100 + rng.randrange(14)),
            }
            response = client.post("/identify", json=body)
            if response.status_code != 200:
                failures.append(response.status_code)
            checkouts.append({"email": body["email"], "phoneNumber": body["phoneNumber"]})

    shoppers = [threading.Thread(target=shop, args=(seed,)) for seed in range(3)]
    for shopper in shoppers:
        shopper.start()
    try:
        wait_for(lambda: len(checkouts) >= 5, "live checkouts to start")
        result = run_import(runner, path, "--batch-size", "25")
    finally:
        done.set()
        for shopper in shoppers:
            shopper.join()
    assert result.exit_code == 0, result.output
    assert failures == []
    assert find_violations(db) == []
    assert_orders_each_in_one_customer(db, orders + checkouts)


def test_ctrl_c_stops_after_the_current_batch_and_says_how_to_resume(
    runner, db, database_url, tmp_path
):
    """SPEC §11: Ctrl-C finishes the batch in hand, then stops with exit 2 and the way to
    resume; running the command again completes the import."""
    orders = sorted(random_history(12, 100), key=lambda order: order["createdAt"])
    path = write_csv(tmp_path / "orders.csv", orders)
    lines = open(path).read().splitlines(keepends=True)
    process = _import_process(database_url, "--batch-size", "20", "--rejects", str(tmp_path / "r"))
    process.stdin.write("".join(lines[:41]))  # the header and two batches
    process.stdin.flush()
    wait_for(lambda: len(rows(db)) == rows_created_by(orders[:40]), "two batches to commit")
    process.send_signal(signal.SIGINT)
    process.stdin.write("".join(lines[41:]))
    process.stdin.close()
    assert process.wait(30) == 2
    assert "Run the same command again to finish" in process.stderr.read()
    # The signal came after the second batch committed: the import stopped there, or,
    # if it was already waiting for the third, after the third.
    assert len(rows(db)) in (rows_created_by(orders[:40]), rows_created_by(orders[:60]))

    assert run_import(runner, path, "--batch-size", "20").exit_code == 0
    assert len(rows(db)) == rows_created_by(orders)
    assert find_violations(db) == []


def test_an_unsorted_file_still_leaves_every_invariant_and_says_so(runner, db, tmp_path):
    """docs/import.md: orders older than an earlier batch are imported with the rules for
    a non-empty database (SPEC §6, every order's values in one customer) and counted."""
    orders = random_history(31, 90)  # file order, not time order
    path = write_csv(tmp_path / "orders.csv", orders)
    result = run_import(runner, path, "--batch-size", "10")
    assert result.exit_code == 0, result.output
    assert "the file is not sorted by createdAt" in result.output
    assert find_violations(db) == []
    assert_orders_each_in_one_customer(db, orders)
