"""SPEC §9: detach a value (the customer splits as §5 predicts, optionally the value is
blocked in every server process) and erase a customer (its values leave every table)."""

import json
import random
import time
import urllib.error
import urllib.parse
import urllib.request

import psycopg2
import pytest
from conftest import identify, replay_links, rows, wait_for
from servers import ServerProcess

from identity.customers.audit import find_violations


def detach(client, contact_id, body):
    return client.post(f"/contacts/{contact_id}/detach", json=body)


def detached(client, contact_id, body) -> list[dict]:
    response = detach(client, contact_id, body)
    assert response.status_code == 200, response.get_json()
    return response.get_json()["customers"]


def customer(primary, emails, phones, secondaries):
    return {"primaryContactId": primary, "emails": emails, "phoneNumbers": phones,
            "secondaryContactIds": secondaries}


@pytest.fixture
def chain(client):
    """Customer 1: rows 1 (a, 1), 2 (a, 2), 3 (b, 2)."""
    identify(client, {"email": "a@x.io", "phoneNumber": "1"})
    identify(client, {"email": "a@x.io", "phoneNumber": "2"})
    identify(client, {"email": "b@x.io", "phoneNumber": "2"})


def test_detaching_a_bridge_value_splits_the_customer(client, db, chain):
    assert detached(client, 3, {"phoneNumber": "2"}) == [
        customer(1, ["a@x.io"], ["1"], [2]),
        customer(3, ["b@x.io"], [], []),
    ]
    assert find_violations(db) == []
    assert replay_links(db) == {row[0]: row[3] for row in rows(db)}


def test_detaching_a_value_of_the_primary_can_make_another_row_primary(client, db, chain):
    assert detached(client, 2, {"email": " A@X.IO "}) == [  # normalised as in §4
        customer(1, [], ["1"], []),
        customer(2, ["b@x.io"], ["2"], [3]),
    ]
    assert client.get("/contacts/3").get_json()["contact"]["primaryContactId"] == 2
    assert find_violations(db) == []
    assert replay_links(db) == {row[0]: row[3] for row in rows(db)}


def test_a_row_left_without_values_is_soft_deleted(client, db):
    identify(client, {"email": "a@x.io", "phoneNumber": "1"})
    identify(client, {"email": "c@x.io", "phoneNumber": "1"})
    identify(client, {"email": "d@x.io"})
    identify(client, {"email": "d@x.io", "phoneNumber": "1"})  # merges 3 into 1
    assert detached(client, 1, {"email": "d@x.io"}) == [
        customer(1, ["a@x.io", "c@x.io"], ["1"], [2])
    ]
    with db.cursor() as cur:
        cur.execute("SELECT email, phoneNumber, deletedAt IS NOT NULL FROM contact WHERE id = 3")
        assert cur.fetchone() == (None, None, True)
    assert client.get("/contacts/3").status_code == 404
    assert find_violations(db) == []


def test_a_detach_that_splits_nothing_keeps_the_customer(client, db, chain):
    assert detached(client, 1, {"phoneNumber": "1"}) == [
        customer(1, ["a@x.io", "b@x.io"], ["2"], [2, 3])
    ]


@pytest.mark.parametrize(
    "contact_id, body, status, code",
    [
        (1, {"email": "z@x.io"}, 409, "value_not_in_customer"),
        (1, {"phoneNumber": "9"}, 409, "value_not_in_customer"),
        (99, {"email": "a@x.io"}, 404, "not_found"),
        (1, {"email": "a@x.io", "phoneNumber": "1"}, 400, "invalid_field"),
        (1, {}, 400, "missing_identifier"),
        (1, {"email": "not an address"}, 400, "invalid_field"),
        (1, {"email": "a@x.io", "block": "yes"}, 400, "invalid_field"),
    ],
)
def test_detach_errors_change_nothing(client, db, chain, contact_id, body, status, code):
    before = rows(db)
    response = detach(client, contact_id, body)
    assert response.status_code == status
    assert response.get_json()["error"]["code"] == code
    assert rows(db) == before


def test_detach_of_a_deleted_row_is_a_404(client, db, chain):
    with db.cursor() as cur:
        cur.execute("UPDATE contact SET deletedAt = now() WHERE id = 3")
    assert detach(client, 3, {"email": "b@x.io"}).status_code == 404


def test_history_records_what_was_detached_and_how_the_customer_split(client, chain):
    response = client.post("/contacts/3/detach", json={"phoneNumber": "2"})
    assert response.status_code == 200
    events = client.get("/contacts/3/history").get_json()["events"]
    mine = [(e["kind"], e["contactId"], e["primaryId"], e["phoneNumber"], e["repointedIds"])
            for e in events if e["requestId"] == response.headers["X-Request-Id"]]
    assert ("value_detached", 3, 1, "2", None) in mine
    assert ("customer_split", 3, 3, None, None) in mine
    story_of_1 = client.get("/contacts/1/history").get_json()
    assert ("value_detached", 2) in [(e["kind"], e["contactId"]) for e in story_of_1["events"]]


def customers_by_values(db) -> set[frozenset]:
    """Every live customer as the set of its values."""
    with db.cursor() as cur:
        cur.execute(
            "SELECT COALESCE(linkedId, id), email, phoneNumber FROM contact WHERE deletedAt IS NULL"
        )
        grouped: dict[int, set] = {}
        for primary, email, phone in cur.fetchall():
            grouped.setdefault(primary, set()).update(v for v in (email, phone) if v)
    return {frozenset(values) for values in grouped.values()}


@pytest.mark.parametrize("seed", range(6))
def test_detach_on_random_histories_agrees_with_a_replay_through_identify(client, db, seed):
    rng = random.Random(seed)
    emails = [f"e{n}@x.io" for n in range(8)]
    phones = [str(n) for n in range(100, 108)]
    for _ in range(30):
        identify(client, rng.choice([
            {"email": rng.choice(emails)},
            {"phoneNumber": rng.choice(phones)},
            {"email": rng.choice(emails), "phoneNumber": rng.choice(phones)},
        ]))
    live = [row for row in rows(db)]
    target = rng.choice(live)
    answer = client.get(f"/contacts/{target[0]}").get_json()["contact"]
    kind, value = rng.choice(
        [("email", e) for e in answer["emails"]]
        + [("phoneNumber", p) for p in answer["phoneNumbers"]]
    )
    resulting = detached(client, target[0], {kind: value})
    assert find_violations(db) == []
    ids = [c["primaryContactId"] for c in resulting] + [
        i for c in resulting for i in c["secondaryContactIds"]]
    with db.cursor() as cur:
        cur.execute(
            "SELECT email, phoneNumber FROM contact WHERE id = ANY(%s) ORDER BY createdAt, id",
            (ids,),
        )
        remaining = cur.fetchall()
        cur.execute("TRUNCATE contact RESTART IDENTITY CASCADE")
    for email, phone in remaining:
        identify(client, {"email": email, "phoneNumber": phone})
    expected = {frozenset(c["emails"] + c["phoneNumbers"]) for c in resulting}
    assert customers_by_values(db) == expected


def text_columns(db) -> list[tuple[str, str]]:
    with db.cursor() as cur:
        cur.execute(
            """SELECT table_name, column_name FROM information_schema.columns
                WHERE table_schema = 'public'
                  AND (data_type IN ('text', 'character varying', 'ARRAY', 'json', 'jsonb'))"""
        )
        return cur.fetchall()


def tables_holding(db, value: str) -> list[tuple[str, str]]:
    found = []
    with db.cursor() as cur:
        for table, column in text_columns(db):
            cur.execute(
                f'SELECT count(*) FROM "{table}" WHERE "{column}"::text LIKE %s',
                ("%" + value + "%",),
            )
            if cur.fetchone()[0]:
                found.append((table, column))
    return found


def test_erase_leaves_no_value_in_any_table(client, db, runner, chain):
    identify(client, {"email": "other@x.io", "phoneNumber": "77"})  # row 4, another customer
    with db.cursor() as cur:  # a soft-deleted row that held one of the values
        cur.execute("INSERT INTO contact (email, linkPrecedence, deletedAt) "
                    "VALUES ('b@x.io', 'primary', now())")
    response = client.delete("/contacts/2")
    assert response.status_code == 200
    assert response.get_json() == {"erased": {"primaryContactId": 1, "contactIds": [1, 2, 3]}}
    assert text_columns(db), "the query must cover some columns"
    for value in ("a@x.io", "b@x.io"):
        assert tables_holding(db, value) == [], value
    for value in ("1", "2"):  # phone numbers: compare whole values (ids contain digits)
        with db.cursor() as cur:
            cur.execute("SELECT count(*) FROM contact WHERE phoneNumber = %s", (value,))
            assert cur.fetchone()[0] == 0
            cur.execute("SELECT count(*) FROM contact_event WHERE phoneNumber = %s", (value,))
            assert cur.fetchone()[0] == 0
    assert tables_holding(db, "other@x.io")  # another customer's data stays
    for contact_id in (1, 2, 3):
        assert client.get(f"/contacts/{contact_id}").status_code == 404
    assert client.get("/identify", query_string={"email": "a@x.io"}).status_code == 404
    assert client.delete("/contacts/2").status_code == 404
    again = identify(client, {"email": "a@x.io", "phoneNumber": "1"})
    assert again["primaryContactId"] > 4 and again["secondaryContactIds"] == []
    with db.cursor() as cur:
        cur.execute("SELECT kind, email, phoneNumber, repointedIds FROM contact_event "
                    "WHERE kind = 'customer_erased'")
        assert cur.fetchall() == [("customer_erased", None, None, [1, 2, 3])]
    audit = runner.invoke(args=["audit"])
    assert audit.exit_code == 0 and "no violations" in audit.output, audit.output


def test_only_erasure_may_change_the_history(client, db):
    identify(client, {"email": "a@x.io"})
    with db.cursor() as cur:
        for statement in (
            "UPDATE contact_event SET email = NULL",
            "DELETE FROM contact_event",
            "BEGIN; SELECT set_config('identity.erasing', 'on', true);"
            " UPDATE contact_event SET kind = 'customer_erased', email = NULL",
            "BEGIN; SELECT set_config('identity.erasing', 'on', true); DELETE FROM contact_event",
        ):
            with pytest.raises(psycopg2.errors.RaiseException):
                cur.execute(statement)
            cur.execute("ROLLBACK")
        cur.execute("SELECT count(*) FROM contact_event WHERE email = 'a@x.io'")
        assert cur.fetchone()[0] == 1


def get(server, path: str) -> tuple[int, dict]:
    try:
        with urllib.request.urlopen(server.url + path, timeout=30) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


def post(server, path: str, body: dict) -> tuple[int, dict]:
    request = urllib.request.Request(
        server.url + path, json.dumps(body).encode(), {"Content-Type": "application/json"}
    )
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


@pytest.fixture
def stale_server(database_url):
    """A server process that reads the stored blocklist only once an hour."""
    with ServerProcess(database_url, BLOCKLIST_REFRESH_S=3600) as server:
        yield server


def test_a_blocked_value_never_links_anyone_again_in_any_server_process(
    two_servers, stale_server, db
):
    first, second = two_servers
    shared = "+4930555000111"  # a switchboard's number, unique to this test
    query = "/identify?" + urllib.parse.urlencode({"phoneNumber": shared})
    assert post(first, "/identify", {"email": "anna@x.io", "phoneNumber": shared})[0] == 200
    status, answer = post(second, "/identify", {"email": "ben@x.io", "phoneNumber": shared})
    assert status == 200 and answer["contact"]["emails"] == ["anna@x.io", "ben@x.io"]
    for server in (second, stale_server):  # both have read the stored list: not blocked
        assert get(server, query)[0] == 200

    status, answer = post(first, "/contacts/1/detach", {"phoneNumber": shared, "block": True})
    assert status == 200 and len(answer["customers"]) == 2
    # A process whose copy of the list is stale finds the block under the value's lock.
    status, answer = post(stale_server, "/identify", {"email": "cleo@x.io", "phoneNumber": shared})
    assert status == 200 and answer["ignored"] == ["phoneNumber"], answer
    assert answer["contact"]["emails"] == ["cleo@x.io"] and answer["contact"]["phoneNumbers"] == []
    assert get(first, query)[1]["error"]["code"] == "blocked_values"  # at once where blocked
    started = time.monotonic()
    wait_for(lambda: get(second, query)[0] == 400, "the second process to see the block", 10)
    print(f"\nblock reached the second process after {time.monotonic() - started:.2f} s")

    for server in (first, second, stale_server):
        status, answer = post(server, "/identify", {"email": "anna@x.io", "phoneNumber": shared})
        assert status == 200 and answer["ignored"] == ["phoneNumber"]
        assert answer["contact"]["emails"] == ["anna@x.io"]
    with db.cursor() as cur:
        cur.execute("SELECT count(*) FROM contact WHERE phoneNumber = %s AND deletedAt IS NULL",
                    (shared,))
        assert cur.fetchone()[0] == 0
    assert find_violations(db) == []
