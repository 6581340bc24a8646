"""The junk-value guard: a blocked value is treated as absent and never links anyone."""

import json

import pytest
from conftest import rows

from identity import create_app
from identity.database.connections import close_pool


def post(client, body):
    return client.post("/identify", json=body)


@pytest.mark.parametrize(
    "body, stored, ignored",
    [
        ({"email": "a@x.io", "phoneNumber": "0000000000"}, ("a@x.io", None), ["phoneNumber"]),
        ({"email": "a@x.io", "phoneNumber": "+1 111-111-1111"}, ("a@x.io", None), ["phoneNumber"]),
        ({"email": "NULL", "phoneNumber": "555"}, (None, "555"), ["email"]),
        ({"email": "undefined", "phoneNumber": "555"}, (None, "555"), ["email"]),
        ({"email": "n/a", "phoneNumber": "555"}, (None, "555"), ["email"]),
        ({"email": "a@x.io", "phoneNumber": "N/A"}, ("a@x.io", None), ["phoneNumber"]),
    ],
)
def test_a_blocked_value_is_treated_as_absent_and_reported(client, db, body, stored, ignored):
    response = post(client, body)
    assert response.status_code == 200
    assert response.get_json()["ignored"] == ignored
    assert [row[1:3] for row in rows(db)] == [stored]


def test_a_request_without_blocked_values_keeps_the_spec_shape(client):
    assert set(post(client, {"email": "a@x.io"}).get_json()) == {"contact"}


@pytest.mark.parametrize(
    "body", [{"phoneNumber": "0000000000"}, {"email": "null", "phoneNumber": "9999999"}]
)
def test_a_request_with_only_blocked_values_is_a_400(client, db, body):
    response = post(client, body)
    assert response.status_code == 400
    assert response.get_json()["error"]["code"] == "blocked_values"
    assert rows(db) == []


def test_blocked_values_never_join_two_customers(client, db):
    post(client, {"email": "first@x.io", "phoneNumber": "0000000000"})
    post(client, {"email": "second@x.io", "phoneNumber": "0000000000"})
    assert [row[4] for row in rows(db)] == ["primary", "primary"]


@pytest.mark.parametrize(
    "value",
    [
        {"email": "lorraine@hillvalley.edu", "phoneNumber": "123456"},
        {"email": "mcfly@hillvalley.edu", "phoneNumber": "123-456"},
        {"email": "george@hillvalley.edu", "phoneNumber": "919191"},
        {"email": "biffsucks@hillvalley.edu", "phoneNumber": "717171"},
        {"email": "doc@example.com", "phoneNumber": 0},
        {"phoneNumber": "+44 7700 900123"},
    ],
)
def test_the_default_list_blocks_nothing_from_the_examples(client, value):
    assert "ignored" not in post(client, value).get_json()


@pytest.fixture
def strict_client(database_url, db):
    app = create_app({"TESTING": True, "DATABASE_URL": database_url, "BLOCKLIST": "recommended"})
    yield app.test_client()
    close_pool(app)


@pytest.mark.parametrize(
    "body, ignored",
    [
        ({"email": "someone@example.com", "phoneNumber": "555"}, ["email"]),
        ({"email": "test@test.com", "phoneNumber": "555"}, ["email"]),
        ({"email": "a@x.io", "phoneNumber": "1234567890"}, ["phoneNumber"]),
        ({"email": "a@shop.test", "phoneNumber": "555"}, ["email"]),
    ],
)
def test_the_recommended_list_is_stricter(strict_client, body, ignored):
    assert strict_client.post("/identify", json=body).get_json()["ignored"] == ignored


def test_a_list_from_a_file(tmp_path, database_url, db):
    path = tmp_path / "list.json"
    path.write_text(
        json.dumps(
            {"emails": {"exact": ["Front.Desk@Shop.io"]}, "phoneNumbers": {"patterns": ["555.*"]}}
        )
    )
    app = create_app({"TESTING": True, "DATABASE_URL": database_url, "BLOCKLIST": str(path)})
    client = app.test_client()
    body = client.post("/identify", json={"email": "front.desk@shop.io", "phoneNumber": "5551234"})
    assert body.status_code == 400
    assert client.post(
        "/identify", json={"email": "x@shop.io", "phoneNumber": "5551234"}
    ).get_json()["ignored"] == ["phoneNumber"]
    close_pool(app)


def test_changing_the_list_leaves_existing_customers_intact(client, db, database_url):
    post(client, {"email": "a@x.io", "phoneNumber": "1234567890"})
    post(client, {"email": "b@x.io", "phoneNumber": "1234567890"})
    before = rows(db)
    app = create_app({"TESTING": True, "DATABASE_URL": database_url, "BLOCKLIST": "recommended"})
    strict = app.test_client()
    answer = strict.post(
        "/identify", json={"email": "b@x.io", "phoneNumber": "1234567890"}
    ).get_json()
    assert answer["contact"]["primaryContactId"] == 1 and answer["ignored"] == ["phoneNumber"]
    assert rows(db) == before
    close_pool(app)
