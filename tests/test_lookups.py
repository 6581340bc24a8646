"""GET /contacts/{id} and GET /identify: the customer, with the same normalisation, and no
row ever written or changed."""

import pytest
from conftest import identify, rows


@pytest.fixture
def merged_customer(client):
    """Customer 1 with a secondary (2), and customer 3 merged into it by a bridge."""
    identify(client, {"email": "a@x.io", "phoneNumber": "100"})
    identify(client, {"email": "b@x.io", "phoneNumber": "100"})
    identify(client, {"email": "c@x.io", "phoneNumber": "300"})
    return identify(client, {"email": "a@x.io", "phoneNumber": "300"})


def snapshot(db):
    with db.cursor() as cur:
        cur.execute("SELECT *, xmin::text FROM contact ORDER BY id")
        return cur.fetchall()


@pytest.mark.parametrize("contact_id", [1, 2, 3])
def test_contact_lookup_answers_the_whole_customer(client, db, merged_customer, contact_id):
    before = snapshot(db)
    response = client.get(f"/contacts/{contact_id}")
    assert response.status_code == 200
    assert response.get_json() == {"contact": merged_customer}
    assert snapshot(db) == before


@pytest.mark.parametrize(
    "path",
    [
        "/contacts/99",
        "/contacts/0",
        "/contacts/99999999999",
        "/contacts/x",
        # Digits of other scripts are not row ids: Arabic-Indic, Devanagari, fullwidth one.
        "/contacts/\u0661",
        "/contacts/\u0967",
        "/contacts/\uff11",
        "/contacts/\u0661/history",
    ],
)
def test_unknown_contact_is_a_404(client, merged_customer, path):
    response = client.get(path)
    assert response.status_code == 404
    assert response.get_json()["error"]["code"] == "not_found"


def test_deleted_contact_is_a_404(client, db, merged_customer):
    with db.cursor() as cur:
        cur.execute("UPDATE contact SET deletedAt = now() WHERE id = 2")
    assert client.get("/contacts/2").status_code == 404


@pytest.mark.parametrize(
    "query",
    [
        {"email": "b@x.io"},
        {"email": "  C@X.IO "},
        {"phoneNumber": "(300)"},
        {"email": "a@x.io", "phoneNumber": "100"},
        {"email": "b@x.io", "phoneNumber": "300"},
    ],
)
def test_value_lookup_uses_post_normalisation_and_never_writes(client, db, merged_customer, query):
    before = snapshot(db)
    response = client.get("/identify", query_string=query)
    assert response.status_code == 200, response.get_json()
    assert response.get_json() == {"contact": merged_customer}
    assert snapshot(db) == before


def test_value_lookup_with_a_new_value_inserts_nothing(client, db, merged_customer):
    before = snapshot(db)
    response = client.get("/identify", query_string={"email": "a@x.io", "phoneNumber": "999"})
    assert response.get_json() == {"contact": merged_customer}
    assert snapshot(db) == before


def test_value_lookup_across_two_customers_is_a_409_and_merges_nothing(client, db, merged_customer):
    identify(client, {"email": "z@x.io", "phoneNumber": "900"})
    before = snapshot(db)
    response = client.get("/identify", query_string={"email": "z@x.io", "phoneNumber": "100"})
    assert response.status_code == 409
    assert response.get_json()["error"]["code"] == "values_span_customers"
    assert snapshot(db) == before


@pytest.mark.parametrize(
    "query, status, code",
    [
        ({"email": "nobody@x.io"}, 404, "not_found"),
        ({}, 400, "missing_identifier"),
        ({"email": "not-an-address"}, 400, "invalid_field"),
        ({"phoneNumber": "12ab"}, 400, "invalid_field"),
    ],
)
def test_value_lookup_errors(client, db, merged_customer, query, status, code):
    count = len(rows(db))
    response = client.get("/identify", query_string=query)
    assert response.status_code == status
    assert response.get_json()["error"]["code"] == code
    assert len(rows(db)) == count
