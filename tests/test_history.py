"""Merge history: written with every change, append-only, and complete enough that
replaying it rebuilds every row's link."""

import random

import psycopg2
import pytest
from conftest import identify, replay_links, rows

from identity.customers import lookups, reconcile


def history(client, contact_id):
    response = client.get(f"/contacts/{contact_id}/history")
    assert response.status_code == 200
    return response.get_json()


def test_history_tells_the_story_of_a_merge(client):
    def request_id(body: dict) -> str:  # the id the service gave the request
        return client.post("/identify", json=body).headers["X-Request-Id"]

    r1 = request_id({"email": "a@x.io", "phoneNumber": "100"})
    r2 = request_id({"email": "b@x.io", "phoneNumber": "200"})
    r3 = request_id({"email": "c@x.io", "phoneNumber": "200"})
    r4 = request_id({"email": "a@x.io", "phoneNumber": "200"})  # bridges 1 and 2
    request_id({"email": "a@x.io", "phoneNumber": "200"})  # changes nothing
    story = history(client, 3)
    assert story["primaryContactId"] == 1
    assert [
        (
            e["requestId"],
            e["kind"],
            e["contactId"],
            e["primaryId"],
            e["email"],
            e["phoneNumber"],
            e["repointedIds"],
        )
        for e in story["events"]
    ] == [
        (r1, "customer_created", 1, 1, "a@x.io", "100", None),
        (r2, "customer_created", 2, 2, "b@x.io", "200", None),
        (r3, "secondary_added", 3, 2, "c@x.io", "200", None),
        (r4, "primary_demoted", 2, 1, "a@x.io", "200", None),
        (r4, "rows_repointed", 2, 1, None, None, [3]),
    ]
    times = [event["occurredAt"] for event in story["events"]]
    assert times == sorted(times)


def test_history_of_an_unknown_contact_is_a_404(client):
    assert client.get("/contacts/7/history").status_code == 404


def test_history_is_append_only(client, db):
    identify(client, {"email": "a@x.io"})
    with db.cursor() as cur:
        for statement in ("UPDATE contact_event SET kind = kind", "DELETE FROM contact_event"):
            with pytest.raises(psycopg2.errors.RaiseException):
                cur.execute(statement)


@pytest.mark.parametrize("seed", range(5))
def test_replaying_the_history_rebuilds_the_current_links(client, db, seed):
    rng = random.Random(seed)
    emails = [f"e{n}@x.io" for n in range(12)]
    phones = [str(n) for n in range(100, 112)]
    for _ in range(60):
        body = rng.choice(
            [
                {"email": rng.choice(emails)},
                {"phoneNumber": rng.choice(phones)},
                {"email": rng.choice(emails), "phoneNumber": rng.choice(phones)},
            ]
        )
        identify(client, body)
    with db.cursor() as cur:
        cur.execute("SELECT count(*) FROM contact_event WHERE kind = 'rows_repointed'")
        assert cur.fetchone()[0] > 0, (
            "the sequence should include merges of customers with secondaries"
        )
    assert replay_links(db) == {row[0]: row[3] for row in rows(db)}


def test_history_reads_the_customer_and_its_events_in_one_snapshot(client, db, database_url):
    """A merge committing between the two reads must not show in only one of them."""
    identify(client, {"email": "b@x.io", "phoneNumber": "1"})  # row 1, the older
    identify(client, {"email": "a@x.io", "phoneNumber": "2"})  # row 2
    merger = psycopg2.connect(database_url)
    merger.autocommit = True

    class MergeAfterFirstRead(psycopg2.extensions.cursor):
        def execute(self, query, params=None):
            super().execute(query, params)
            if not merged:
                merged.append(reconcile.identify(merger, "a@x.io", "1"))  # 2 joins 1

    merged: list = []
    reader = psycopg2.connect(database_url, cursor_factory=MergeAfterFirstRead)
    reader.autocommit = True
    try:
        story = lookups.history(reader, 2)
    finally:
        reader.close()
        merger.close()
    assert merged, "the merge ran"
    assert story.primary_contact_id == 2
    assert [event.kind for event in story.events] == ["customer_created"]
