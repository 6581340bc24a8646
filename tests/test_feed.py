"""GET /events: the change feed's shape, paging, cursor and the rule that no event can
commit behind a cursor already handed out (the concurrent version is test_feed_gaps.py)."""

import http.client
import json
import random
import re
import threading
import time
from datetime import UTC, datetime

import psycopg2
import pytest
from conftest import client_on, emptied_database, identify, wait_for
from openapi_core import OpenAPI
from openapi_core.contrib.werkzeug import (
    WerkzeugOpenAPIRequest,
    WerkzeugOpenAPIResponse,
)
from servers import ServerProcess, post_identify
from werkzeug.test import EnvironBuilder

from identity.config import PROJECT_ROOT
from identity.database.migrations import migrate
from identity.dev.embedded import EmbeddedPostgres
from identity.feed import events as feed
from identity.feed.repository import FEED_SOURCE_KINDS, READ_EVENTS, EventRow

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


def current_txid(db) -> int:
    with db.cursor() as cur:
        cur.execute("SELECT pg_current_xact_id()::text")
        return int(cur.fetchone()[0])


def burn_transaction_ids_to_below_a_power_of_ten(db, margin: int) -> int:
    """Make the next transaction id `margin` below a power of ten; returns that power.

    Each rolled-back subtransaction that writes (to a temporary table) takes a
    transaction id of its own: about 300,000 of them a second, in one round trip."""
    power = 10 ** len(str(current_txid(db) + margin + 2))
    burn = power - margin - current_txid(db) - 1
    with db.cursor() as cur:
        cur.execute(
            """CREATE TEMP TABLE IF NOT EXISTS burnt (x int);
               DO $$ BEGIN
                   FOR i IN 1..%s LOOP
                       BEGIN INSERT INTO burnt VALUES (i); RAISE EXCEPTION 'burnt';
                       EXCEPTION WHEN raise_exception THEN NULL; END;
                   END LOOP;
               END $$""",
            (burn,),
        )
    assert power - margin - 2 <= current_txid(db) < power
    return power


def event_txids(db) -> tuple[int, int]:
    with db.cursor() as cur:
        cur.execute("SELECT min(txid)::text, max(txid)::text FROM contact_event")
        low, high = cur.fetchone()
        return int(low), int(high)


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
    row = EventRow(7, 1, kind, datetime.now(UTC), 2, 3)
    event = feed.to_event(row)
    assert PERSONAL_KEYS.isdisjoint(event)
    assert set(event) <= {
        "id",
        "kind",
        "occurredAt",
        "primaryContactId",
        "contactIds",
        "demotedPrimaryContactIds",
        "valueKind",  # hub_suspected: "email" or "phoneNumber", never the value
    }


def test_following_next_sees_every_event_exactly_once(client):
    for n in range(7):
        identify(client, {"email": f"p{n}@x.io", "phoneNumber": str(n)})
        identify(client, {"email": f"q{n}@x.io", "phoneNumber": str(n)})

    events = read_all(client, limit=3)

    assert [event["id"] for event in events] == sorted(event["id"] for event in events)
    assert len({event["id"] for event in events}) == len(events) == 14
    assert [event["id"] for event in read_all(client, limit=1000)] == [e["id"] for e in events]


@pytest.fixture(scope="module")
def young_cluster():
    """A cluster of this module's own, fresh from initdb: its transaction ids are still
    below 1,000, so crossing 1,000 and then 10,000 burns a few thousand ids, however many
    the other tests have used on the session's cluster."""
    with EmbeddedPostgres() as server:
        migrate(server.url, PROJECT_ROOT / "sql")
        yield server


@pytest.fixture
def young_db(young_cluster):
    conn = emptied_database(young_cluster.url)
    yield conn
    conn.close()


@pytest.fixture
def young_client(young_cluster, young_db):
    with client_on(young_cluster.url) as client:
        yield client


def test_following_next_sees_every_event_once_across_a_power_of_ten(young_client, young_db):
    """Transaction ids 996..1005: the feed orders them as numbers, so a page never jumps
    from 1005 back to 996, and no event falls behind a cursor."""
    client, db = young_client, young_db
    power = burn_transaction_ids_to_below_a_power_of_ten(db, margin=4)
    for n in range(10):
        identify(client, {"email": f"p{n}@x.io"})
    low, high = event_txids(db)
    assert low < power <= high, (low, power, high)

    for limit in (1, 3, 7, 100):
        events = read_all(client, limit=limit)
        assert [event["contactIds"] for event in events] == [[n] for n in range(1, 11)], limit


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


# --- No gap under concurrent writers -----------------------------------------------------

WRITER_THREADS = 8
WRITES_PER_THREAD = 30
PAGE = 50


def feed_reader(server):
    """GET /events on one server, over one keep-alive connection."""
    connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)

    def read(after):
        query = f"?limit={PAGE}" + (f"&after={after}" if after else "")
        connection.request("GET", "/events" + query)
        response = connection.getresponse()
        page = json.loads(response.read())
        assert response.status == 200, page
        return page["events"], page["next"]

    return read


def naive_reader(database_url):
    """What the feed must not be: `id > after`, which passes over ids whose transaction
    has not committed yet. Kept here only, to show that the test below can fail."""
    conn = psycopg2.connect(database_url)
    conn.autocommit = True

    def read(after):
        with conn.cursor() as cur:
            cur.execute(
                "SELECT 0, id, kind, occurredAt, contactId, primaryId FROM contact_event"
                " WHERE id > %s AND kind = ANY(%s) ORDER BY id LIMIT %s",
                (after or 0, FEED_SOURCE_KINDS, PAGE),
            )
            rows = [EventRow(*row) for row in cur.fetchall()]
        return [feed.to_event(row) for row in rows], rows[-1].id if rows else after

    return read


class Consumer(threading.Thread):
    """Follows a feed as fast as it can; after stop(), until a page comes back empty."""

    def __init__(self, read):
        super().__init__(daemon=True)
        self.read, self.events, self.polls = read, [], 0
        self.stopping = threading.Event()
        self.failure = None

    def run(self):
        after = None
        try:
            while True:
                stopping = self.stopping.is_set()
                events, after = self.read(after)
                self.events += events
                self.polls += 1
                if stopping and not events:
                    return
        except Exception as error:  # reported by the test
            self.failure = error

    def polls_from_now(self, count: int) -> None:
        target = self.polls + count
        wait_for(lambda: self.polls >= target or not self.is_alive(), "the consumer to poll")


def write_traffic(servers, seed: int) -> int:
    """Threads sending checkouts to both servers: half of them on a small shared pool of
    values (new secondaries and merges that conflict), half on values of their own."""

    def send(thread: int):
        rng = random.Random(seed * 100 + thread)
        server = servers[thread % 2]
        connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
        for n in range(WRITES_PER_THREAD):
            if rng.random() < 0.5:
                body = {
                    "email": f"s{rng.randrange(12)}@x.io",
                    "phoneNumber": str(rng.randrange(12)),
                }
            else:
                body = {"email": f"t{thread}.{n}@x.io", "phoneNumber": f"9{thread}0{n}"}
            assert post_identify(connection, body)[0] == 200
        connection.close()

    threads = [threading.Thread(target=send, args=(n,)) for n in range(WRITER_THREADS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    return WRITER_THREADS * WRITES_PER_THREAD


def replay_customers(events: list[dict]) -> dict[int, int]:
    """Every row's primary, from the events alone, checking that each event finds the
    customers it names in the state the events before it left (per-customer commit order)."""
    primary_of: dict[int, int] = {}
    for event in events:
        primary = event["primaryContactId"]
        if event["kind"] == "customer_created":
            assert event["contactIds"][0] not in primary_of
            primary_of[primary] = primary
        elif event["kind"] == "secondary_added":
            assert primary_of.get(primary) == primary, f"{event}: its primary is not one"
            primary_of[event["contactIds"][0]] = primary
        else:
            for demoted in event["demotedPrimaryContactIds"]:
                assert primary_of.get(primary) == primary, f"{event}: survivor is not a primary"
                assert primary_of.get(demoted) == demoted, f"{event}: demoted is not a primary"
                primary_of.update({row: primary for row, p in primary_of.items() if p == demoted})
    return primary_of


def feed_events_in_table(db) -> tuple[set[int], dict[int, int]]:
    with db.cursor() as cur:
        cur.execute("SELECT id FROM contact_event WHERE kind = ANY(%s)", (FEED_SOURCE_KINDS,))
        ids = {row[0] for row in cur.fetchall()}
        cur.execute("SELECT id, COALESCE(linkedId, id) FROM contact")
        return ids, dict(cur.fetchall())


def events_committed_after(db, event_id: int) -> int:
    with db.cursor() as cur:
        cur.execute("SELECT count(*) FROM contact_event WHERE id > %s", (event_id,))
        return cur.fetchone()[0]


def consume_during_traffic(read, db, database_url, servers, seed) -> tuple[Consumer, int, int]:
    """Writers on both servers while a consumer follows the feed. In the middle of the
    traffic one writer's transaction is held open by hand until later transactions have
    committed events and the consumer has read twice since: the race a cursor must
    survive, made certain."""
    consumer = Consumer(read)
    consumer.start()
    writes = []
    writers = threading.Thread(target=lambda: writes.append(write_traffic(servers, seed)))
    writers.start()
    wait_for(lambda: len(consumer.events) >= 20, "the consumer to read during the traffic")
    held, held_id = hold_new_customer(database_url, f"held{seed}@x.io")
    try:
        wait_for(lambda: events_committed_after(db, held_id) >= 10, "later events to commit")
        consumer.polls_from_now(2)
        held.commit()
    finally:
        held.close()
    writers.join(120)
    consumer.stopping.set()
    consumer.join(60)
    assert writes and consumer.failure is None and not consumer.is_alive()
    return consumer, writes[0] + 1, held_id


def test_no_event_is_lost_or_repeated_while_two_servers_write(two_servers, db, database_url):
    read = feed_reader(two_servers[0])
    consumer, writes, held_id = consume_during_traffic(read, db, database_url, two_servers, 1)

    events = consumer.events
    ids = [event["id"] for event in events]
    table_ids, links = feed_events_in_table(db)
    assert len(ids) == len(set(ids)), "an event was served twice"
    assert set(ids) == table_ids, f"lost: {sorted(table_ids - set(ids))}"
    assert held_id in ids
    assert replay_customers(events) == links
    print(f"\nfeed: writes {writes}, events {len(ids)}, pages read {consumer.polls}")


def test_no_event_is_lost_or_repeated_while_transaction_ids_cross_a_power_of_ten(
    young_cluster, young_db
):
    """The same race while the writers' transaction ids cross a power of ten (10,000
    when the test before this one has crossed 1,000 on the same cluster)."""
    db, url = young_db, young_cluster.url
    servers = [ServerProcess(url, WORKERS=1), ServerProcess(url, WORKERS=1)]
    try:
        power = burn_transaction_ids_to_below_a_power_of_ten(db, margin=WRITER_THREADS * 10)
        consumer, writes, _ = consume_during_traffic(feed_reader(servers[0]), db, url, servers, 3)
    finally:
        for server in servers:
            server.stop()

    low, high = event_txids(db)
    assert low < power <= high, (low, power, high)
    ids = [event["id"] for event in consumer.events]
    table_ids, links = feed_events_in_table(db)
    assert len(ids) == len(set(ids)), "an event was served twice"
    assert set(ids) == table_ids, f"lost: {sorted(table_ids - set(ids))}"
    assert replay_customers(consumer.events) == links
    print(f"\nfeed across {power}: writes {writes}, events {len(ids)}, pages {consumer.polls}")


def test_a_naive_id_cursor_loses_events_in_the_same_race(two_servers, db, database_url):
    """The same run with `id > after`: the held event, at least, never reaches the consumer.
    This is what the test above would see if the feed's cursor were naive."""
    read = naive_reader(database_url)
    consumer, writes, held_id = consume_during_traffic(read, db, database_url, two_servers, 2)

    table_ids, _ = feed_events_in_table(db)
    lost = table_ids - {event["id"] for event in consumer.events}
    assert held_id in lost
    print(f"\nnaive: writes {writes}, events {len(table_ids)}, lost {len(lost)}")


def test_a_page_of_the_feed_is_one_range_scan_of_its_index(db):
    with db.cursor() as cur:
        cur.execute(
            """INSERT INTO contact (email, linkPrecedence)
               SELECT 'user' || n || '@x.io', 'primary' FROM generate_series(1, 20000) n"""
        )
        cur.execute(
            """INSERT INTO contact_event (kind, contactId, primaryId)
               SELECT 'customer_created', id, id FROM contact"""
        )
        cur.execute("ANALYZE contact_event")
        cur.execute("SELECT txid::text FROM contact_event LIMIT 1")
        txid = cur.fetchone()[0]
        cur.execute(
            "EXPLAIN " + READ_EVENTS,
            {"txid": txid, "event_id": 10_000, "kinds": FEED_SOURCE_KINDS, "limit": 100},
        )
        plan = "\n".join(line for (line,) in cur.fetchall())
    # One ordered range scan under the LIMIT: no Sort node (which an ORDER BY on the text
    # form of txid needs), no Bitmap scan, no scan of the whole table.
    assert "Sort" not in plan and "Bitmap" not in plan and "Seq Scan" not in plan, plan
    assert "Index Scan using contact_event_feed_order" in plan, plan
    assert "Index Cond: ((ROW(txid, id) > ROW(" in plan, plan


@pytest.mark.parametrize(
    "query", [{}, {"limit": "1"}, {"after": "MC4w", "wait": "0.1"}, {"limit": "0"}]
)
def test_feed_answers_validate_against_the_openapi_document(client, query):
    identify(client, {"email": "a@x.io", "phoneNumber": "1"})
    identify(client, {"email": "b@x.io", "phoneNumber": "1"})
    openapi = OpenAPI.from_dict(client.get("/openapi.json").get_json())
    response = client.get("/events", query_string=query)
    request = EnvironBuilder(path="/events", query_string=query).get_request()
    openapi.validate_response(WerkzeugOpenAPIRequest(request), WerkzeugOpenAPIResponse(response))
