"""SPEC §2: a soft-deleted primary's live rows stay one customer wherever they share
values, with the oldest live row as primary; reads show them so, and the next write that
touches them stores it, leaving §6 true."""

import pytest
from conftest import identify, replay_links, rows

from identity.customers.audit import find_orphans, find_violations


@pytest.fixture
def orphans(client, db):
    """Row 1 (a, 1) is deleted; its rows 2 (a, 2) and 3 (b, 2) share phone 2, and row 4
    (c, 1) shares nothing with them any more."""
    identify(client, {"email": "a@x.io", "phoneNumber": "1"})
    identify(client, {"email": "a@x.io", "phoneNumber": "2"})
    identify(client, {"email": "b@x.io", "phoneNumber": "2"})
    identify(client, {"email": "c@x.io", "phoneNumber": "1"})
    with db.cursor() as cur:
        cur.execute("UPDATE contact SET deletedAt = now() WHERE id = 1")


FIRST = {"primaryContactId": 2, "emails": ["a@x.io", "b@x.io"], "phoneNumbers": ["2"],
         "secondaryContactIds": [3]}
SECOND = {"primaryContactId": 4, "emails": ["c@x.io"], "phoneNumbers": ["1"],
          "secondaryContactIds": []}


@pytest.mark.parametrize("contact_id, expected", [(2, FIRST), (3, FIRST), (4, SECOND)])
def test_contact_lookup_shows_orphans_grouped_by_shared_values(
    client, orphans, contact_id, expected
):
    response = client.get(f"/contacts/{contact_id}")
    assert response.status_code == 200
    assert response.get_json()["contact"] == expected


@pytest.mark.parametrize(
    "query, expected",
    [({"email": "b@x.io"}, FIRST), ({"phoneNumber": "1"}, SECOND), ({"email": "a@x.io"}, FIRST)],
)
def test_value_lookup_shows_orphans_grouped_by_shared_values(client, orphans, query, expected):
    response = client.get("/identify", query_string=query)
    assert response.status_code == 200
    assert response.get_json()["contact"] == expected


def test_checkout_bringing_nothing_new_answers_without_writing(client, db, orphans):
    before = rows(db)
    assert identify(client, {"email": "a@x.io", "phoneNumber": "2"}) == FIRST
    assert identify(client, {"phoneNumber": "1"}) == SECOND
    assert rows(db) == before


def test_history_of_an_orphan_tells_its_customers_story(client, orphans):
    story = client.get("/contacts/3/history").get_json()
    assert story["primaryContactId"] == 2
    assert [event["contactId"] for event in story["events"]] == [2, 3]


def test_a_write_relinks_the_orphans_and_merges_by_rule_5(client, db, orphans):
    merged = identify(client, {"email": "c@x.io", "phoneNumber": "2"})  # bridges 2's and 4's
    assert merged == {"primaryContactId": 2, "emails": ["a@x.io", "b@x.io", "c@x.io"],
                      "phoneNumbers": ["2", "1"], "secondaryContactIds": [3, 4]}
    assert [row[3:] for row in rows(db)[1:]] == [
        (None, "primary"),
        (2, "secondary"),
        (2, "secondary"),
    ]
    assert len(rows(db)) == 4  # it brought nothing new
    assert find_orphans(db) == []
    assert find_violations(db) == []
    assert replay_links(db) == {row[0]: row[3] for row in rows(db) if row[0] != 1} | {1: None}


def test_a_write_to_one_orphan_customer_stores_all_of_them(client, db, orphans):
    assert identify(client, {"email": "c@x.io", "phoneNumber": "7"})["primaryContactId"] == 4
    links = {row[0]: row[3] for row in rows(db)}
    assert links[2] is None and links[3] == 2 and links[4] is None and links[5] == 4
    assert find_orphans(db) == []


@pytest.mark.parametrize(
    "checkouts",
    [
        [{"email": "a@x.io", "phoneNumber": "9"}, {"email": "c@x.io"}, {"phoneNumber": "1"}],
        [{"email": "b@x.io", "phoneNumber": "1"}, {"email": "a@x.io", "phoneNumber": "1"}],
        [{"email": "d@x.io", "phoneNumber": "1"}, {"email": "d@x.io", "phoneNumber": "2"}],
    ],
)
def test_further_checkouts_keep_every_invariant(client, db, orphans, checkouts):
    for body in checkouts:
        answer = identify(client, body)
        assert find_violations(db) == [], body
        values = {body.get("email"), body.get("phoneNumber")} - {None}
        assert values <= set(answer["emails"]) | set(answer["phoneNumbers"])
        assert identify(client, body) == answer  # §6.4
