"""GET /events: the change feed's shape, paging, cursor and the rule that no event can
commit behind a cursor already handed out (the concurrent version is test_feed_gaps.py)."""

import re
import threading
import time
from datetime import datetime, timezone

import psycopg2
import pytest

from conftest import identify
from identity import feed
from identity.feed_repository import FEED_SOURCE_KINDS, EventRow

PERSONAL_KEYS = {"email", "phoneNumber", "emails", "phoneNumbers"}


def read_feed(client, after: str | None = None, **params) -> dict:
    if after is not None:
        params["after"] = after
    response = client.get("/events", query_string=params)
    assert response.status_code == 200, response.get_json()
    return response.get_json()


def read_all(client, limit: int = 100) -> list[dict]:
    events, after = [], None
    while True:
        page = read_feed(client, after, limit=limit)
        if not page["events"]:
            return events
        events += page["events"]
        after = page["next"]


def hold_new_customer(database_url: str, email: str):
    """A writer's transaction, left open: a new primary and its history row, uncommitted."""
    conn = psycopg2.connect(database_url)
    with conn.cursor() as cur:
        cur.execute(
            "INSERT INTO contact (email, linkPrecedence) VALUES (%s, 'primary') RETURNING id",
            (email,),
        )
        contact_id = cur.fetchone()[0]
        cur.execute(
            "INSERT INTO contact_event (kind, contactId, primaryId)"
            " VALUES ('customer_created', %s, %s) RETURNING id",
            (contact_id, contact_id),
        )
        return conn, cur.fetchone()[0]


def test_feed_tells_creation_secondary_and_merge_in_order_without_personal_values(client):
    first = identify(client, {"email": "lorraine@hillvalley.edu", "phoneNumber": "123456"})
    identify(client, {"email": "mcfly@hillvalley.edu", "phoneNumber": "123456"})
    other = identify(client, {"email": "george@hillvalley.edu", "phoneNumber": "919191"})
    identify(client, {"email": "george@hillvalley.edu", "phoneNumber": "123456"})

    response = client.get("/events")
    events = response.get_json()["events"]

    assert [event["kind"] for event in events] == [
        "customer_created",
        "secondary_added",
        "customer_created",
        "customers_merged",
    ]
    survivor, demoted = first["primaryContactId"], other["primaryContactId"]
    assert events[0]["contactIds"] == [survivor] and events[0]["primaryContactId"] == survivor
    assert events[1]["primaryContactId"] == survivor
    assert events[3]["primaryContactId"] == survivor
    assert events[3]["demotedPrimaryContactIds"] == [demoted]
    text = response.get_data(as_text=True)
    for value in ("hillvalley", "123456", "919191"):
        assert value not in text
    assert all(PERSONAL_KEYS.isdisjoint(event) for event in events)


@pytest.mark.parametrize("kind", FEED_SOURCE_KINDS)
def test_no_kind_of_event_carries_an_email_or_phone_number(kind):
    # Every history kind the feed serves, including the corrections' kinds: the event is
    # built from ids alone (the feed's query does not even select the value columns).
    row = EventRow(7, 1, kind, datetime.now(timezone.utc), 2, 3)
    event = feed.to_event(row)
    assert PERSONAL_KEYS.isdisjoint(event)
    assert set(event) <= {
        "id",
        "kind",
        "occurredAt",
        "primaryContactId",
        "contactIds",
        "demotedPrimaryContactIds",
    }


def test_following_next_sees_every_event_exactly_once(client):
    for n in range(7):
        identify(client, {"email": f"p{n}@x.io", "phoneNumber": str(n)})
        identify(client, {"email": f"q{n}@x.io", "phoneNumber": str(n)})

    events = read_all(client, limit=3)

    assert [event["id"] for event in events] == sorted(event["id"] for event in events)
    assert len({event["id"] for event in events}) == len(events) == 14
    assert [event["id"] for event in read_all(client, limit=1000)] == [e["id"] for e in events]


def test_an_empty_page_hands_back_the_same_cursor(client):
    identify(client, {"email": "a@x.io"})
    page = read_feed(client)
    assert read_feed(client, page["next"]) == {"events": [], "next": page["next"]}


def test_events_behind_a_running_transaction_wait_for_it(client, database_url):
    """The rule of the cursor: while an older writer is still running, nothing newer is
    served; when it commits, its event comes first, and no cursor was handed out past it."""
    identify(client, {"email": "before@x.io"})
    cursor = read_feed(client)["next"]
    held, held_id = hold_new_customer(database_url, "held@x.io")
    try:
        identify(client, {"email": "after@x.io"})  # commits while the older one runs
        assert read_feed(client, cursor) == {"events": [], "next": cursor}
        held.commit()
    finally:
        held.close()

    events = read_feed(client, cursor)["events"]
    assert [event["id"] for event in events][0] == held_id
    assert [event["kind"] for event in events] == ["customer_created"] * 2


def test_a_rolled_back_transaction_leaves_no_event(client, database_url):
    held, _ = hold_new_customer(database_url, "abandoned@x.io")
    held.rollback()
    held.close()
    identify(client, {"email": "kept@x.io"})
    assert [event["contactIds"] for event in read_all(client)] == [[2]]


def test_a_long_poll_answers_as_soon_as_an_event_commits(client, app):
    cursor = read_feed(client)["next"]

    def write_a_moment_later():
        time.sleep(0.3)
        identify(app.test_client(), {"email": "late@x.io"})

    writer = threading.Thread(target=write_a_moment_later)
    writer.start()
    page = read_feed(client, cursor, wait=30)
    writer.join()
    assert [event["kind"] for event in page["events"]] == ["customer_created"]


def test_a_long_poll_with_nothing_new_answers_empty_after_its_wait(client):
    identify(client, {"email": "a@x.io"})
    cursor = read_feed(client)["next"]
    assert read_feed(client, cursor, wait=0.3) == {"events": [], "next": cursor}


@pytest.mark.parametrize(
    "params, field",
    [
        ({"after": "not a cursor"}, "after"),
        ({"after": "MTIz"}, "after"),  # base64 of "123": no event id
        ({"after": "LTEuMg"}, "after"),  # "-1.2"
        ({"limit": "0"}, "limit"),
        ({"limit": "1001"}, "limit"),
        ({"limit": "ten"}, "limit"),
        ({"wait": "31"}, "wait"),
        ({"wait": "-1"}, "wait"),
        ({"wait": "nan"}, "wait"),
    ],
)
def test_a_bad_query_is_a_400_naming_the_field(client, params, field):
    response = client.get("/events", query_string=params)
    assert response.status_code == 400
    error = response.get_json()["error"]
    assert error["code"] == "invalid_field" and list(error["fields"]) == [field]


def test_cursors_round_trip_and_stay_opaque():
    cursor = feed.Cursor(2**64 - 1, 12345)
    assert feed.Cursor.decode(cursor.encode()) == cursor
    assert re.fullmatch(r"[A-Za-z0-9_-]+", cursor.encode())
