"""`flask --app identity renormalise` after PHONE_REGION is set (SPEC §4): stored phones
take the new form and the customers that then share one are merged by SPEC §5's rule,
with history and feed events; the dry run changes nothing; a second run changes
nothing; checkouts may run at the same time."""

import random
import threading

import pytest
from conftest import identify, replay_links, rows

from identity import create_app
from identity.customers.audit import find_violations
from identity.database.connections import close_pool

UK = ["+44 7700 900{n}", "07700 900{n}", "0044 7700 900{n}", "44 7700 900{n}"]


@pytest.fixture
def gb_app(db, database_url):
    app = create_app(
        {"TESTING": True, "DATABASE_URL": database_url, "POOL_SIZE": 4, "PHONE_REGION": "GB"}
    )
    yield app
    close_pool(app)


def checkouts(seed: int, count: int = 40) -> list[dict]:
    """Checkouts over small pools: a few UK mobiles in their four spellings, the original
    task's kind of number, and e-mails, so that new rows, merges and bridges all happen."""
    rng = random.Random(seed)
    orders = []
    for _ in range(count):
        phone = rng.choice(
            [rng.choice(UK).format(n=100 + rng.randrange(8)), str(100000 + rng.randrange(6))]
        )
        email = f"e{rng.randrange(30)}@shop.test"
        shape = rng.random()
        orders.append(
            {
                "email": None if shape < 0.25 else email,
                "phoneNumber": None if shape > 0.85 else phone,
            }
        )
    return orders


def customers(db) -> set[tuple]:
    """Each customer as (its primary's values, its e-mails, its phones): what SPEC §3
    answers, without row ids, which differ between databases filled differently."""
    with db.cursor() as cur:
        cur.execute(
            """SELECT primary_row.email, primary_row.phoneNumber,
                      array_agg(DISTINCT member.email) FILTER (WHERE member.email IS NOT NULL),
                      array_agg(DISTINCT member.phoneNumber)
                          FILTER (WHERE member.phoneNumber IS NOT NULL)
                 FROM contact AS member
                 JOIN contact AS primary_row
                   ON primary_row.id = COALESCE(member.linkedId, member.id)
                WHERE member.deletedAt IS NULL
                GROUP BY primary_row.id"""
        )
        return {
            (email, phone, frozenset(emails or []), frozenset(phones or []))
            for email, phone, emails, phones in cur.fetchall()
        }


def value_rows(db) -> list[tuple]:
    """Rows as (e-mail, phone, the primary's e-mail and phone), oldest first."""
    with db.cursor() as cur:
        cur.execute(
            """SELECT member.email, member.phoneNumber, primary_row.email, primary_row.phoneNumber
                 FROM contact AS member
                 JOIN contact AS primary_row
                   ON primary_row.id = COALESCE(member.linkedId, member.id)
                WHERE member.deletedAt IS NULL
                ORDER BY member.createdAt, member.id"""
        )
        return cur.fetchall()


def snapshot(db) -> tuple:
    with db.cursor() as cur:
        cur.execute("SELECT * FROM contact ORDER BY id")
        contacts = cur.fetchall()
        cur.execute("SELECT id, kind FROM contact_event ORDER BY id")
        return contacts, cur.fetchall()


def fill(client, orders: list[dict]) -> None:
    for order in orders:
        identify(client, order)


def renormalise(app, *options: str):
    result = app.test_cli_runner().invoke(args=["renormalise", *options])
    assert result.exit_code == 0, result.output
    return result.output


@pytest.mark.parametrize("seed", range(4))
def test_renormalise_gives_the_customers_of_a_replay_with_the_setting(seed, client, gb_app, db):
    orders = checkouts(seed)
    fill(gb_app.test_client(), orders)
    replayed_customers, replayed_rows = customers(db), value_rows(db)
    with db.cursor() as cur:
        cur.execute("TRUNCATE contact RESTART IDENTITY CASCADE")

    fill(client, orders)  # PHONE_REGION unset: the spellings are different phones
    assert len(customers(db)) > len(replayed_customers)  # there is something to merge
    renormalise(gb_app)

    assert customers(db) == replayed_customers
    # Every row of the replay is there, linked to the same primary; rows the replay did
    # not need (their values were all known by then) stay as secondaries.
    assert set(replayed_rows) <= set(value_rows(db))
    with db.cursor() as cur:
        assert find_violations(cur.connection) == []
    assert replay_links(db) == {row[0]: row[3] for row in rows(db)}


def test_renormalise_gives_the_same_rows_as_a_replay_when_each_checkout_brought_a_new_value(
    client, gb_app, db
):
    orders = [
        {"email": "ann@shop.test", "phoneNumber": "07700 900123"},
        {"email": "bob@shop.test", "phoneNumber": "123456"},
        {"email": "cy@shop.test", "phoneNumber": "+44 7700 900123"},
        {"email": "dee@shop.test", "phoneNumber": "0044 7700 900123"},
        {"email": "bob@shop.test", "phoneNumber": "447700900124"},
        {"email": "eve@shop.test", "phoneNumber": "07700 900124"},
    ]
    fill(gb_app.test_client(), orders)
    replayed = rows(db)
    with db.cursor() as cur:
        cur.execute("TRUNCATE contact RESTART IDENTITY CASCADE")
    fill(client, orders)
    assert [row[0] for row in rows(db) if row[4] == "primary"] == [1, 2, 3, 4, 6]

    output = renormalise(gb_app)

    assert rows(db) == replayed
    assert "merge: 3, 4 merged into customer 1" in output
    assert "merge: 6 merged into customer 2" in output
    with db.cursor() as cur:
        cur.execute(
            "SELECT contactId, primaryId, requestId FROM contact_event"
            " WHERE kind = 'primary_demoted'"
        )
        demotions = cur.fetchall()
    assert sorted(row[:2] for row in demotions) == [(3, 1), (4, 1), (6, 2)]
    assert all(row[2].startswith("renormalise-") for row in demotions)
    feed = client.get("/events", query_string={"limit": 1000}).get_json()["events"]
    merged = [
        (event["primaryContactId"], event["demotedPrimaryContactIds"])
        for event in feed
        if event["kind"] == "customers_merged"
    ]
    assert sorted(merged) == [(1, [3]), (1, [4]), (2, [6])]


def test_the_dry_run_reports_the_merges_and_changes_nothing(client, gb_app, db):
    fill(
        client, [{"email": f"e{n}@shop.test", "phoneNumber": UK[n].format(n=123)} for n in range(4)]
    )
    before = snapshot(db)

    output = renormalise(gb_app, "--dry-run")

    assert snapshot(db) == before
    assert "merge: 2, 3, 4 would be merged into customer 1" in output
    assert "3 live rows would be rewritten" in output
    assert "7700" not in output  # ids and counts only, never a phone number


def test_a_second_run_changes_nothing(client, gb_app, db):
    fill(
        client, [{"email": f"e{n}@shop.test", "phoneNumber": UK[n].format(n=123)} for n in range(4)]
    )
    renormalise(gb_app)
    after_first = snapshot(db)
    output = renormalise(gb_app)
    assert snapshot(db) == after_first
    assert "0 phones" in output


def test_the_stored_blocklist_and_deleted_rows_take_the_new_form(client, gb_app, db):
    fill(client, [{"email": "a@shop.test", "phoneNumber": "07700 900123"}])
    fill(client, [{"email": "b@shop.test", "phoneNumber": "07700 900999"}])
    detached = client.post("/contacts/1/detach", json={"phoneNumber": "07700900123", "block": True})
    assert detached.status_code == 200
    with db.cursor() as cur:
        cur.execute("UPDATE contact SET deletedAt = now() WHERE id = 2")
    renormalise(gb_app)
    with db.cursor() as cur:
        cur.execute("SELECT value FROM blocked_value")
        assert cur.fetchall() == [("+447700900123",)]
        cur.execute("SELECT phoneNumber FROM contact WHERE id = 2")
        assert cur.fetchone() == ("+447700900999",)
    # The block holds for every spelling under the new setting.
    answer = gb_app.test_client().post(
        "/identify", json={"email": "c@shop.test", "phoneNumber": "+44 7700 900123"}
    )
    assert answer.get_json()["ignored"] == ["phoneNumber"]


def test_checkouts_during_renormalise_leave_the_invariants_true(client, gb_app, db):
    orders = checkouts(seed=7, count=120)
    fill(client, orders)
    live = gb_app.test_client()
    errors = []

    def checkouts_with_the_setting():
        for order in checkouts(seed=8, count=80):
            response = live.post("/identify", json=order)
            if response.status_code != 200:
                errors.append(response.status_code)

    traffic = threading.Thread(target=checkouts_with_the_setting)
    traffic.start()
    renormalise(gb_app)
    traffic.join()
    renormalise(gb_app)  # whatever a checkout without the setting could not have added

    assert errors == []
    with db.cursor() as cur:
        assert find_violations(cur.connection) == []
        cur.execute(
            "SELECT count(*) FROM contact WHERE phoneNumber LIKE '0%%' AND deletedAt IS NULL"
        )
        assert cur.fetchone() == (0,)
