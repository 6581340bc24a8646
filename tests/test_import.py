"""Bulk import (`flask --app identity import`): the same result as a one-at-a-time replay
through POST /identify, correct merges into existing customers, rejects, exit statuses,
re-runs, interruptions, and live traffic at the same time."""

import csv
import json
import os
import random
import re
import signal
import subprocess
import sys
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psycopg2
import pytest
from conftest import identify, replay_links, rows, wait_for

from identity import create_app
from identity.config import PROJECT_ROOT
from identity.customers.audit import find_orphans, find_violations
from identity.customers.repository import value_lock_keys

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
    [
        (0, 7, False), (1, 7, False), (2, 13, False), (3, 1, False),
        (4, 1000, True), (5, 1000, True), (6, 7, True), (7, 1, True), (8, 13, True),
    ],
)
def test_import_into_an_empty_database_equals_a_one_at_a_time_replay(
    client, runner, db, tmp_path, seed, batch_size, shuffled
):
    """SPEC §11: same rows, customers, primaries and answers as POST /identify one at a
    time in createdAt order (file order among equal times), rows carrying their order's
    createdAt. A shuffled file is sorted by the import, across batches too."""
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


def _import_process(database_url: str, path: str, *options: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "flask", "--app", "identity", "import", path, *options],
        env={**os.environ, "DATABASE_URL": database_url},
        cwd=PROJECT_ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )


def _import_waits_for(db, lock: str) -> bool:
    """Whether the import's connection waits for a lock of this kind ('advisory': a
    value's lock, 'relation': a table's)."""
    with db.cursor() as cur:
        cur.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'identity-import' "
            "AND wait_event_type = 'Lock' AND wait_event = %s",
            (lock,),
        )
        return cur.fetchone()[0] > 0


def _hold_value_lock(database_url: str, email: str):
    """A session holding /identify's lock on an e-mail: an import batch with it waits."""
    holder = psycopg2.connect(database_url)
    holder.autocommit = True
    with holder.cursor() as cur:
        cur.execute("SELECT pg_advisory_lock(%s)", (value_lock_keys(email, None)[0],))
    return holder


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
    holder = _hold_value_lock(database_url, "late0@x.io")  # in the fourth batch
    process = _import_process(
        database_url, path, "--batch-size", "20", "--rejects", str(tmp_path / "r")
    )
    committed = rows_created_by(orders[:60])
    wait_for(lambda: _import_waits_for(db, "advisory"), "the fourth batch to wait")
    assert len(rows(db)) == committed
    with holder.cursor() as cur:
        # The fourth batch takes its locks and ids, then waits to write its rows.
        cur.execute("BEGIN; LOCK TABLE contact IN SHARE MODE")
        cur.execute("SELECT pg_advisory_unlock_all()")
        wait_for(lambda: _import_waits_for(db, "relation"), "the import to block mid-batch")
        process.send_signal(signal.SIGKILL)
        process.wait()
        cur.execute("ROLLBACK")
    holder.close()
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
    orders[40]["email"] = "third@x.io"  # a value no batch before the third holds
    path = write_csv(tmp_path / "orders.csv", orders)
    holder = _hold_value_lock(database_url, "third@x.io")
    process = _import_process(
        database_url, path, "--batch-size", "20", "--rejects", str(tmp_path / "r")
    )
    wait_for(lambda: _import_waits_for(db, "advisory"), "the third batch to wait")
    assert len(rows(db)) == rows_created_by(orders[:40])
    process.send_signal(signal.SIGINT)
    holder.close()  # the third batch goes on, and is the last
    assert process.wait(30) == 2
    assert "Run the same command again to finish" in process.stderr.read()
    assert len(rows(db)) == rows_created_by(orders[:60])

    assert run_import(runner, path, "--batch-size", "20").exit_code == 0
    assert len(rows(db)) == rows_created_by(orders)
    assert find_violations(db) == []


def make_orphans(client, db) -> None:
    """tests/test_orphans.py's situation: row 1 (a, 1) is soft-deleted; its rows 2 (a, 2)
    and 3 (b, 2) share phone 2, row 4 (c, 1) shares nothing with them any more; row 5
    (d, 9) is a customer of its own."""
    for body in (
        {"email": "a@x.io", "phoneNumber": "1"},
        {"email": "a@x.io", "phoneNumber": "2"},
        {"email": "b@x.io", "phoneNumber": "2"},
        {"email": "c@x.io", "phoneNumber": "1"},
        {"email": "d@x.io", "phoneNumber": "9"},
    ):
        identify(client, body)
    with db.cursor() as cur:
        cur.execute("UPDATE contact SET deletedAt = now() WHERE id = 1")


@pytest.mark.parametrize(
    "orders",
    [
        [{"email": "b@x.io", "phoneNumber": "5"}],  # a new value for orphans
        [{"email": "c@x.io", "phoneNumber": "2"}],  # bridges two groups of orphans
        [{"email": "b@x.io", "phoneNumber": "9"}],  # bridges orphans and a customer
        [{"email": "", "phoneNumber": "1"}],  # brings nothing new: writes nothing
        [
            {"email": "e@x.io", "phoneNumber": "1"},
            {"email": "b@x.io", "phoneNumber": ""},
            {"email": "a@x.io", "phoneNumber": "9"},
            {"email": "f@x.io", "phoneNumber": "2"},
        ],
    ],
)
def test_values_held_only_by_orphans_are_linked_as_identify_links_them(
    client, runner, db, tmp_path, orders
):
    """SPEC §2 and §6.2: a value held only by live rows of a soft-deleted primary belongs
    to the customer /identify presents for it, not to a new one. The import ends with the
    rows, links and answers of the same orders sent to POST /identify one at a time."""
    make_orphans(client, db)
    orders = [{**order, "createdAt": ""} for order in orders]  # the time of the import
    result = run_import(runner, write_csv(tmp_path / "orders.csv", orders))
    assert result.exit_code == 0, result.output
    imported_rows, imported_answers = rows(db), answers(client, orders)
    assert find_violations(db) == []
    assert replay_links(db) == {row[0]: row[3] for row in imported_rows if row[0] != 1} | {1: None}

    truncate(db)
    make_orphans(client, db)
    for order in orders:
        identify(client, {name: value for name, value in order.items() if value})
    assert imported_rows == rows(db)
    assert imported_answers == answers(client, orders)


def test_an_old_order_of_an_orphan_becomes_its_customers_primary(client, runner, db, tmp_path):
    """SPEC §11 into a database with customers, §6.3 by createdAt: an order older than the
    orphans it joins makes its row the primary of all of them; nothing is left orphaned."""
    make_orphans(client, db)
    orders = [{"email": "z@x.io", "phoneNumber": "2", "createdAt": "2019-01-01"}]
    assert run_import(runner, write_csv(tmp_path / "orders.csv", orders)).exit_code == 0
    assert rows(db)[1:] == [
        (2, "a@x.io", "2", 6, "secondary"),
        (3, "b@x.io", "2", 6, "secondary"),
        (4, "c@x.io", "1", None, "primary"),
        (5, "d@x.io", "9", None, "primary"),
        (6, "z@x.io", "2", None, "primary"),
    ]
    assert find_violations(db) == [] and find_orphans(db) == []
    response = client.get("/identify", query_string={"email": "b@x.io"})
    assert response.status_code == 200
    assert response.get_json()["contact"]["primaryContactId"] == 6


def test_the_rejects_file_is_never_written_through_a_symbolic_link(runner, db, tmp_path):
    """A link planted where the rejects go must not make the import overwrite its target:
    the import refuses (exit 2, imports nothing) and the target is untouched."""
    target = tmp_path / "precious"
    target.write_text("keep me\n")
    (tmp_path / "orders.csv.rejects.ndjson").symlink_to(target)
    order = {"email": "a@x.io", "phoneNumber": "", "createdAt": ""}
    path = write_csv(tmp_path / "orders.csv", [order])
    result = run_import(runner, path)
    assert result.exit_code == 2
    assert "is a symbolic link: not followed" in result.output
    assert target.read_text() == "keep me\n"
    assert rows(db) == []


def test_the_rejects_file_is_private_and_rewritten(runner, db, tmp_path):
    """Readable by its owner only, emptied by each run, and never another user's file or
    a second name of another file (a hard link)."""
    rejects = tmp_path / "bad.ndjson"
    rejects.write_text("an earlier run\n" * 10)
    rejects.chmod(0o644)
    order = {"email": "nope", "phoneNumber": "", "createdAt": ""}
    path = write_csv(tmp_path / "orders.csv", [order])
    assert run_import(runner, path, "--rejects", str(rejects)).exit_code == 1
    assert [json.loads(line)["line"] for line in rejects.read_text().splitlines()] == [2]
    assert rejects.stat().st_mode & 0o777 == 0o600
    os.link(rejects, tmp_path / "second-name")
    result = run_import(runner, path, "--rejects", str(rejects))
    assert result.exit_code == 2 and "not a regular file of this user" in result.output


def test_a_csv_field_over_the_limit_is_a_reject_and_the_import_goes_on(runner, db, tmp_path):
    """A field over 131,072 characters (the csv module's limit), on one line or spread
    over several inside quotes, rejects its line; the orders before and after a long
    line are imported."""
    path = tmp_path / "orders.csv"
    path.write_text(
        "email,phoneNumber,createdAt\n"
        "a@x.io,100,2020-01-01\n"
        f"{'b' * 200_000}@x.io,200,2020-01-02\n"
        "c@x.io,300,2020-01-03\n"
        f'"{("d" * 1000 + chr(10)) * 150}",400,2020-01-04\n'
    )
    result = run_import(runner, str(path), "--rejects", str(tmp_path / "bad.ndjson"))
    assert result.exit_code == 1, result.output
    rejects = [json.loads(line) for line in (tmp_path / "bad.ndjson").read_text().splitlines()]
    assert rejects[:2] == [
        {
            "line": 3,
            "code": "line_too_long",
            "message": "the line is longer than 131,072 characters",
        },
        {
            "line": 5,
            "code": "malformed_csv",
            "message": "the line is not valid CSV, or a field is longer than 131,072 characters",
        },
    ]
    assert [row[1] for row in rows(db)] == ["a@x.io", "c@x.io"]


def test_a_truncated_gzip_file_imports_what_it_could_and_says_so(runner, db, tmp_path):
    """A .gz cut short: the orders read before the cut are imported, the rejects are
    written, and the import ends with exit status 2 and a clear message."""
    import gzip

    lines = ["email,phoneNumber,createdAt", "bad,,2020-01-01"] + [
        f"u{n}@x.io,{1000 + n},2020-01-02T00:{n // 60 % 60:02}:{n % 60:02}" for n in range(3000)
    ]
    whole = gzip.compress(("\n".join(lines) + "\n").encode())
    path = tmp_path / "orders.csv.gz"
    path.write_bytes(whole[: len(whole) * 2 // 3])
    result = run_import(runner, str(path), "--rejects", str(tmp_path / "bad.ndjson"))
    assert result.exit_code == 2
    assert "the compressed data is truncated" in result.output
    assert "the orders before it were imported" in result.output
    assert 0 < len(rows(db)) < 3000
    assert json.loads((tmp_path / "bad.ndjson").read_text())["line"] == 2


def _peak_memory_kib(process: subprocess.Popen) -> int:
    """The process's own peak resident memory (VmHWM), read until it exits. Not its
    rusage: a child started by vfork and exec reports its parent's peak as its own, and
    this test's parent is the whole test run."""
    peak = 0
    while process.poll() is None:
        try:
            status = Path(f"/proc/{process.pid}/status").read_text()
        except (FileNotFoundError, ProcessLookupError):
            break
        found = re.search(r"^VmHWM:\s+(\d+) kB", status, re.MULTILINE)
        peak = max(peak, int(found.group(1))) if found else peak
        time.sleep(0.01)
    process.wait()
    return peak


def test_an_ndjson_line_over_the_limit_is_a_reject_and_memory_stays_bounded(
    db, database_url, tmp_path
):
    """One line of 256 MiB in a .gz of 300 KB is rejected without being held whole: the
    import process stays under 200 MiB."""
    import gzip

    spaces = gzip.compress(b" " * (1 << 20))  # a gzip file may hold many members
    path = tmp_path / "orders.ndjson.gz"
    path.write_bytes(
        gzip.compress(b'{"email": "a@x.io", "createdAt": "2020-01-01"}\n{"email": "')
        + spaces * 256
        + gzip.compress(b'"}\n{"email": "b@x.io", "createdAt": "2020-01-02"}\n')
    )
    assert path.stat().st_size < 1 << 20
    process = subprocess.Popen(
        [sys.executable, "-m", "flask", "--app", "identity", "import", str(path)],
        env={**os.environ, "DATABASE_URL": database_url},
        cwd=PROJECT_ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    peak_kib = _peak_memory_kib(process)
    assert process.returncode == 1
    assert 0 < peak_kib < 200 * 1024  # the line alone would be 256 MiB
    rejects = (tmp_path / "orders.ndjson.gz.rejects.ndjson").read_text().splitlines()
    assert [json.loads(line)["code"] for line in rejects] == ["line_too_long"]
    assert [row[1] for row in rows(db)] == ["a@x.io", "b@x.io"]
