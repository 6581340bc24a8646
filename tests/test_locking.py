"""The write path's locks (docs/design.md, the write path in detail): no deadlock
whatever the order of ids and creation times, no transaction id before the locks are held,
no personal data in the statements that wait for a lock."""

import threading

import psycopg2
import pytest
from conftest import wait_for

from identity.customers import repository

# After an import of older orders, ids and creation order disagree: row 3 is the oldest.
# Row 1 was a primary until a merge (committed) made it a secondary of row 2.
ROWS_AFTER_A_MERGE = """
INSERT INTO contact (id, email, phoneNumber, linkedId, linkPrecedence, createdAt)
OVERRIDING SYSTEM VALUE VALUES
    (2, 'b@x.io', '2', NULL, 'primary', '2024-01-01'),
    (1, 'a@x.io', '1', 2, 'secondary', '2024-01-02'),
    (3, 'c@x.io', '3', NULL, 'primary', '2023-12-31')
"""


@pytest.fixture
def connections(db, database_url):
    with db.cursor() as cur:
        cur.execute(ROWS_AFTER_A_MERGE)
    opened = [psycopg2.connect(database_url, application_name="locking-test") for _ in range(2)]
    for conn in opened:
        conn.autocommit = True
    yield opened
    for conn in reversed(opened):  # the holder of the locks first: nobody waits on it
        conn.close()


def waiting_statements(db) -> list[str]:
    with db.cursor() as cur:
        cur.execute(
            "SELECT query FROM pg_stat_activity "
            "WHERE wait_event_type = 'Lock' AND application_name = 'locking-test'"
        )
        return [query for (query,) in cur.fetchall()]


def test_three_writer_scenario_commits_without_deadlock(db, connections):
    """A writer that still holds row 1 as a primary (read before the merge) and a writer
    that merges row 2's customer into the older row 3, which re-points row 1."""
    stale, merging = connections
    # The merging writer holds its customers' locks (roots 2 and 3).
    merging_rows = repository.begin_locked(merging, "b@x.io", "3", [2, 3])
    assert {row.id for row in merging_rows} == {1, 2, 3}

    # The stale writer saw primaries 1 and 2; it gets 1 and waits for 2.
    outcome: list = []

    def stale_writer():
        try:
            outcome.append(repository.begin_locked(stale, "a@x.io", "2", [1, 2]))
        except psycopg2.Error as error:
            outcome.append(error)

    thread = threading.Thread(target=stale_writer)
    thread.start()
    wait_for(lambda: waiting_statements(db), "the stale writer to wait for a lock")
    # Personal data stays out of the statement PostgreSQL shows (and logs on a timeout).
    assert not any("a@x.io" in query or "'2'" in query for query in waiting_statements(db))

    # The merge re-points row 1: it must not wait for the stale writer.
    request = {"email": "b@x.io", "phone_number": "3", "request_id": "merge"}
    repository.write_and_commit(
        merging, request, relinks={}, demotion={"survivor_id": 3, "loser_ids": [2]},
        linked_id=3, insert=False,
    )
    thread.join(30)
    assert outcome and not isinstance(outcome[0], Exception), outcome
    # The stale writer now sees the merged customer, under a root it does not hold:
    # reconcile restarts it (CustomerChanged) rather than lock out of order.
    assert {row.linked_id for row in outcome[0]} == {None, 3}
    stale.cursor().execute("ROLLBACK")


def test_a_writer_gets_its_transaction_id_only_at_its_first_write(db, connections):
    """The change feed orders events by transaction id: it must follow the locks."""
    writer = connections[0]
    repository.begin_locked(writer, "a@x.io", "9", [2])
    with writer.cursor() as cur:
        cur.execute("SELECT pg_current_xact_id_if_assigned()")
        assert cur.fetchone()[0] is None
        cur.execute("ROLLBACK")
