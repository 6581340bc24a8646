"""SPEC §4 validation and §7 errors: the right status, one JSON shape, and no row written."""

import pytest
from conftest import rows

from identity import create_app


def assert_error(response, status, code):
    assert response.status_code == status
    assert response.content_type == "application/json"
    error = response.get_json()["error"]
    assert error["code"] == code
    assert isinstance(error["message"], str) and error["message"]
    return error


@pytest.mark.parametrize(
    "body, field",
    [
        ({"email": "not-an-address"}, "email"),
        ({"email": "a@"}, "email"),
        ({"email": "@x.io"}, "email"),
        ({"email": "a b@x.io"}, "email"),
        ({"email": "a" * 250 + "@x.io"}, "email"),
        ({"email": 42}, "email"),
        ({"email": True}, "email"),
        ({"email": ["a@x.io"]}, "email"),
        ({"email": {"a": 1}}, "email"),
        ({"phoneNumber": "-"}, "phoneNumber"),
        ({"phoneNumber": "()"}, "phoneNumber"),
        ({"phoneNumber": "12a45"}, "phoneNumber"),
        ({"phoneNumber": "1234567890123456"}, "phoneNumber"),
        ({"phoneNumber": "++123"}, "phoneNumber"),
        ({"phoneNumber": "12+3"}, "phoneNumber"),
        ({"phoneNumber": "12\t3"}, "phoneNumber"),
        ({"phoneNumber": "١٢٣"}, "phoneNumber"),
        ({"phoneNumber": True}, "phoneNumber"),
        ({"phoneNumber": False}, "phoneNumber"),
        ({"phoneNumber": 12.0}, "phoneNumber"),
        ({"phoneNumber": -5}, "phoneNumber"),
        ({"phoneNumber": 10**15}, "phoneNumber"),
        ({"phoneNumber": {"n": 1}}, "phoneNumber"),
        ({"phoneNumber": [1]}, "phoneNumber"),
        ({"email": "good@x.io", "phoneNumber": "bad"}, "phoneNumber"),
        ({"email": "bad", "phoneNumber": "123"}, "email"),
        # Unpaired surrogates, invisible (format), control and space characters inside
        # an address make it invalid, never another customer.
        ({"email": "a@b\udfffc.com"}, "email"),
        ({"email": "a\ud800@x.io"}, "email"),
        ({"email": "a@b\u200bc.com"}, "email"),
        ({"email": "a\u200d@x.io"}, "email"),
        ({"email": "a@x.io\u200b"}, "email"),
        ({"email": "a@b\u00adc.com"}, "email"),
        ({"email": "a\u202e@x.io"}, "email"),
        ({"email": "a\u0000@x.io"}, "email"),
        ({"email": "a@x\u0007.io"}, "email"),
        ({"email": "a\u00a0b@x.io"}, "email"),
        ({"email": "a@x\u3000y.io"}, "email"),
        ({"email": "a\u2028@x.io"}, "email"),
        ({"email": "a@xn--zz.com"}, "email"),  # looks like IDNA, is not
        ({"phoneNumber": "123\u200b456"}, "phoneNumber"),
        ({"phoneNumber": "123\udfff456"}, "phoneNumber"),
        ({"phoneNumber": "123\u2014456"}, "phoneNumber"),  # an em dash is not a separator
    ],
)
def test_invalid_field_is_a_400_naming_the_field_and_writes_nothing(client, db, body, field):
    error = assert_error(client.post("/identify", json=body), 400, "invalid_field")
    assert list(error["fields"]) == [field]
    assert field in error["message"]
    assert rows(db) == []


@pytest.mark.parametrize(
    "body",
    [{}, {"email": None}, {"email": "  ", "phoneNumber": ""}, {"phoneNumber": None}, {"other": 1}],
)
def test_neither_identifier_is_a_400(client, db, body):
    error = assert_error(client.post("/identify", json=body), 400, "missing_identifier")
    assert "fields" not in error
    assert rows(db) == []


@pytest.mark.parametrize(
    "accepted",
    [
        {"email": "doc@example.com"},
        {"email": "marty@hill.test"},
        {"email": "emmett@lab.local"},
        {"email": "biff@example.org"},
        {"email": "jennifer@mail.example.test"},
        {"email": "strickland@hill.invalid"},
        {"email": "einstein@bücher.de"},
        {"phoneNumber": 0},
        {"phoneNumber": "+123456789012345"},
        {"phoneNumber": 123456789012345},
    ],
)
def test_special_use_domains_and_edge_numbers_are_accepted(client, accepted):
    assert client.post("/identify", json=accepted).status_code == 200


@pytest.mark.parametrize(
    "data, code",
    [
        (b'{"email": ', "malformed_json"),
        (b"", "malformed_json"),
        (b"\xff\xfe", "malformed_json"),
        (b"[" * 50_000 + b"]" * 10_000, "malformed_json"),
        (b"1" * 5000, "malformed_json"),
        (b'["a@x.io"]', "not_an_object"),
        (b'"a@x.io"', "not_an_object"),
        (b"null", "not_an_object"),
        # RFC 8259 has no NaN or Infinity, although Python's json module reads them.
        (b'{"email": "a@x.io", "phoneNumber": NaN}', "malformed_json"),
        (b'{"email": "a@x.io", "n": Infinity}', "malformed_json"),
        (b'{"email": "a@x.io", "n": -Infinity}', "malformed_json"),
        (b"NaN", "malformed_json"),
    ],
)
def test_body_that_is_not_a_json_object_is_a_400(client, db, data, code):
    response = client.post("/identify", data=data, content_type="application/json")
    assert_error(response, 400, code)
    assert rows(db) == []


@pytest.mark.parametrize("content_type", ["text/plain", "application/x-www-form-urlencoded", None])
def test_body_that_is_not_json_is_a_415(client, db, content_type):
    response = client.post("/identify", data='{"email": "a@x.io"}', content_type=content_type)
    assert_error(response, 415, "unsupported_media_type")
    assert rows(db) == []


def test_body_over_64_kib_is_a_413(client, db):
    body = '{"email": "a@x.io", "pad": "' + "x" * (64 * 1024) + '"}'
    response = client.post("/identify", data=body, content_type="application/json")
    assert_error(response, 413, "payload_too_large")
    assert rows(db) == []


def test_unknown_path_is_a_404(client):
    assert_error(client.get("/nowhere"), 404, "not_found")


def test_wrong_method_is_a_405_with_allow(client):
    response = client.put("/identify", json={"email": "a@x.io"})
    assert_error(response, 405, "method_not_allowed")
    assert {"GET", "POST"} <= set(response.headers["Allow"].split(", "))


def test_unreachable_database_is_a_503_with_the_configured_retry_after_and_no_internals():
    url = "postgresql://someuser:s3cret-pw@127.0.0.1:1/somedb"
    app = create_app({"TESTING": True, "DATABASE_URL": url, "RETRY_AFTER_S": 7})
    response = app.test_client().post("/identify", json={"email": "a@x.io"})
    assert_error(response, 503, "database_unreachable")
    assert response.headers["Retry-After"] == "7"
    body = response.get_data(as_text=True)
    # psycopg2's message names the host, port, user and database: none of it may leak.
    for internal in ("someuser", "s3cret-pw", "somedb", "127.0.0.1", "port", "refused"):
        assert internal not in body, internal


def test_unexpected_failure_is_a_500_without_internals(client, db):
    with db.cursor() as cur:  # a broken schema: the service's SQL fails
        cur.execute("ALTER TABLE contact RENAME COLUMN email TO mail")
    try:
        response = client.post("/identify", json={"email": "a@x.io"})
        error = assert_error(response, 500, "internal_error")
        assert "mail" not in error["message"] and "column" not in error["message"]
    finally:
        with db.cursor() as cur:
            cur.execute("ALTER TABLE contact RENAME COLUMN mail TO email")
