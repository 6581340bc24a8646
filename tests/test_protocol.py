"""The write protocol's steps (docs/design.md, the write path in detail), each held by a test
that fails when the step is taken out: one connection holds a lock, another is seen waiting on
it in pg_locks, and the test then checks what happens next. Synchronised on state, never on
time. The mutation each test was seen to fail on is named in its docstring."""

import threading
import time

import psycopg2
import pytest
from conftest import identify, wait_for

from identity.customers import corrections, repository
from identity.customers.reconcile import CustomerChanged
from identity.database import transaction
from identity.database.pool import ConnectTimeout, Pool, ServiceConnection

# Row 2 is the oldest primary; row 1 a younger primary with a secondary, row 3.
TWO_CUSTOMERS = """
INSERT INTO contact (id, email, phoneNumber, linkedId, linkPrecedence, createdAt)
OVERRIDING SYSTEM VALUE VALUES
    (2, 'b@x.io', '2', NULL, 'primary', '2024-01-01'),
    (1, 'a@x.io', '1', NULL, 'primary', '2024-01-02'),
    (3, 'a@x.io', '3', 1, 'secondary', '2024-01-03');
SELECT setval(pg_get_serial_sequence('contact', 'id'), 3)
"""
# What a checkout that bridges the two customers (b@x.io with phone 1) writes.
MERGE_1_INTO_2 = {
    "request": {"email": "b@x.io", "phone_number": "1", "request_id": "merge"},
    "relinks": {},
    "demotion": {"survivor_id": 2, "loser_ids": [1]},
    "linked_id": 2,
    "insert": False,
}


@pytest.fixture
def connections(db, database_url):
    """Three autocommit connections of the service's kind; closed holders first."""
    opened = [psycopg2.connect(database_url) for _ in range(3)]
    for conn in opened:
        conn.autocommit = True
    yield opened
    for conn in opened:
        conn.close()


@pytest.fixture
def two_customers(db):
    with db.cursor() as cur:
        cur.execute(TWO_CUSTOMERS)


def rollback(conn) -> None:
    with conn.cursor() as cur:
        transaction.rollback(cur)


def waiting_for_lock(db, pid: int | None = None, root_id: int | None = None) -> bool:
    """Whether a backend (pid, or any) waits for an advisory lock (a root's, if given)."""
    with db.cursor() as cur:
        cur.execute(
            "SELECT classid::int, objid::int, objsubid FROM pg_locks"
            " WHERE locktype = 'advisory' AND NOT granted AND (%s::int IS NULL OR pid = %s)",
            (pid, pid),
        )
        waits = cur.fetchall()
    if root_id is None:
        return bool(waits)
    return (repository.ROOT_LOCK_SPACE, root_id, 2) in waits  # objsubid 2: the two-key form


def in_thread(work) -> tuple[threading.Thread, list]:
    """Run work() in a thread; its result or exception lands in the returned list."""
    outcome: list = []

    def run():
        try:
            outcome.append(work())
        except Exception as error:  # handed to the test, which asserts on it
            outcome.append(error)

    thread = threading.Thread(target=run)
    thread.start()
    return thread, outcome


def test_a_checkout_waiting_for_a_value_holds_no_root(db, connections, two_customers):
    """(a) Value locks, then root locks. An import holds its values' locks and then
    waits for its primaries' (identity/importing/loader.py): a checkout that took a root
    first and then waited for a value the import holds would close a cycle (a deadlock).
    Mutation: LOCK_ROOTS before LOCK_VALUE_KEYS in repository.LOCK_ALL."""
    holder, checkout, _ = connections
    repository.lock_all(holder, repository.value_lock_keys("new@x.io", None), [])
    thread, outcome = in_thread(lambda: repository.begin_locked(checkout, "new@x.io", "1", [1]))
    wait_for(lambda: waiting_for_lock(db, checkout.get_backend_pid()), "the checkout to wait")
    with db.cursor() as cur:
        cur.execute("SELECT pg_try_advisory_lock(%s, 1)", (repository.ROOT_LOCK_SPACE,))
        root_was_free = cur.fetchone()[0]
        cur.execute("SELECT pg_advisory_unlock_all()")
    rollback(holder)
    thread.join(30)
    rollback(checkout)
    assert root_was_free, "a checkout waiting for a value's lock already held a root's lock"
    assert outcome and not isinstance(outcome[0], Exception), outcome


def test_a_second_writer_of_a_new_value_waits_for_the_first(db, connections):
    """(b) Two checkouts of the same new value: the second waits for the first's commit,
    then sees its row (so the value is stored once). Mutation: LOCK_VALUE_KEYS left out
    of repository.LOCK_ALL."""
    first, second, _ = connections
    assert repository.begin_locked(first, "new@x.io", None, []) == []
    thread, outcome = in_thread(lambda: repository.begin_locked(second, "new@x.io", None, []))
    wait_for(
        lambda: outcome or waiting_for_lock(db, second.get_backend_pid()),
        "the second writer to wait or to go ahead",
    )
    assert not outcome, "the second writer of a value did not wait for the first"
    request = {"email": "new@x.io", "phone_number": None, "request_id": "first"}
    repository.write_and_commit(
        first, request, relinks={}, demotion=None, linked_id=None, insert=True
    )
    thread.join(30)
    rollback(second)
    assert [row.email for row in outcome[0]] == ["new@x.io"]


def test_the_erasing_flag_ends_with_the_erasing_transaction(client, db, connections):
    """(c) identity.erasing lets the history's trigger accept an erasure only inside the
    erasing transaction. Mutation: set_config('identity.erasing', 'on', false) (for the
    session) in repository.ERASE_CUSTOMER."""
    erased = identify(client, {"email": "a@x.io", "phoneNumber": "1"})
    identify(client, {"email": "b@x.io", "phoneNumber": "2"})
    conn = connections[0]
    corrections.erase(conn, erased["primaryContactId"], "erase")
    with conn.cursor() as cur:
        cur.execute("SELECT current_setting('identity.erasing', true)")
        assert cur.fetchone()[0] in (None, "", "off")
        with pytest.raises(psycopg2.errors.RaiseException):
            cur.execute("UPDATE contact_event SET email = NULL, phoneNumber = NULL")
    with db.cursor() as cur:
        cur.execute("SELECT count(*) FROM contact_event WHERE email = 'b@x.io'")
        assert cur.fetchone()[0] == 1


def test_an_import_reads_the_owners_again_after_locking_the_primaries(
    db, connections, two_customers, runner, tmp_path
):
    """(d) A checkout merges row 1's customer into row 2's while an import batch, which
    read row 1 as the owner of a@x.io, waits for row 1's lock: the batch must see the
    change and link its new row to row 2, not to row 1, now a secondary. Mutation: the
    re-check after repository.lock_primaries removed from importing/loader.py."""
    checkout = connections[0]
    repository.begin_locked(checkout, "b@x.io", "1", [1, 2])

    def merge_once_the_import_waits():
        try:
            wait_for(lambda: waiting_for_lock(db, root_id=1), "the import to wait for row 1")
        except AssertionError:
            rollback(checkout)  # lets the import end
            raise
        return repository.write_and_commit(checkout, **MERGE_1_INTO_2)

    merger, merged = in_thread(merge_once_the_import_waits)
    orders = tmp_path / "orders.csv"
    orders.write_text("email,phoneNumber,createdAt\na@x.io,9,2025-01-01T00:00:00+00:00\n")
    result = runner.invoke(args=["import", str(orders)])  # signal handlers: main thread only
    merger.join(30)
    assert merged and not isinstance(merged[0], Exception), merged
    assert result.exit_code == 0, result.output
    with db.cursor() as cur:
        cur.execute("SELECT linkedId FROM contact WHERE phoneNumber = '9'")
        assert cur.fetchall() == [(2,)], "the imported row hangs under a demoted primary"


class _NoWaiting:
    """The pool's waiting gauge: a checkout that must wait for a slot fails at once."""

    def inc(self):
        raise AssertionError("every pool slot is taken: a failed connect kept its slot")

    def dec(self):
        pass


def test_a_connect_that_fails_after_its_deadline_gives_its_slot_back(database_url):
    """(e) A connect still running at the request's deadline keeps its slot until it
    ends; when it then fails, the slot must come back, or after POOL_SIZE such connects
    every request waits for a slot and fails (503) until the process restarts.
    Mutation: in Pool._adopt_late_connection, the slot released only after a success."""
    release = threading.Event()
    failing = True

    def connect() -> ServiceConnection:
        if failing:
            release.wait(30)
            raise psycopg2.OperationalError("the database refused the connection")
        return psycopg2.connect(database_url, connection_factory=ServiceConnection)

    size = 2
    pool = Pool(connect, size, _NoWaiting())
    for _ in range(size):
        with pytest.raises(ConnectTimeout):
            pool.checkout(time.monotonic())  # the deadline has passed already
    failing = False
    release.set()
    wait_for(
        lambda: not any(t.name == "db-connect" for t in threading.enumerate()),
        "the late connects to fail",
    )
    conns = [pool.checkout(time.monotonic() + 30) for _ in range(size)]
    for conn in conns:
        pool.give_back(conn, broken=False)
    pool.close()


def test_a_detach_whose_customer_was_merged_meanwhile_waits_for_the_new_root(
    db, connections, two_customers
):
    """(f) A detach locks the root it saw (row 1); a merge into row 2 commits while it
    waits. Holding row 1's lock no longer protects the customer: the detach must start
    again and wait for row 2's lock, held here by another writer. Mutation: the root
    re-check (CustomerChanged) removed from corrections._lock_customer."""
    merging, detaching, other = connections
    repository.begin_locked(merging, "b@x.io", "1", [1, 2])
    restarts: list[CustomerChanged] = []

    def detach_like_run_unit():
        while True:
            try:
                return corrections.detach(detaching, 3, "phoneNumber", "3", False, "detach")
            except CustomerChanged as error:
                rollback(detaching)
                restarts.append(error)

    thread, outcome = in_thread(detach_like_run_unit)
    wait_for(
        lambda: waiting_for_lock(db, detaching.get_backend_pid(), root_id=1),
        "the detach to wait for row 1's lock",
    )
    holder, _ = in_thread(lambda: repository.begin_locked(other, None, None, [2]))
    wait_for(
        lambda: waiting_for_lock(db, other.get_backend_pid(), root_id=2),
        "the other writer to queue for row 2's lock",
    )
    repository.write_and_commit(merging, **MERGE_1_INTO_2)
    holder.join(30)  # the other writer now holds row 2's lock
    wait_for(
        lambda: outcome or waiting_for_lock(db, detaching.get_backend_pid(), root_id=2),
        "the detach to wait for row 2's lock, or to go ahead without it",
    )
    assert not outcome, "the detach changed a merged customer without its new root's lock"
    rollback(other)
    thread.join(30)
    assert len(restarts) == 1 and outcome and not isinstance(outcome[0], Exception), outcome
    with db.cursor() as cur:
        cur.execute("SELECT phoneNumber, deletedAt IS NOT NULL FROM contact WHERE id = 3")
        assert cur.fetchone() == (None, False)
