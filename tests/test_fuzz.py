"""Bad input at scale (hypothesis): no input yields a 500, and invalid input writes nothing."""

import json

from conftest import rows
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(), children, max_size=4)
    ),
    max_leaves=12,
)
# Strings that look almost right: digits, separators, @, dots, letters, white space,
# Unicode dashes, an invisible character, a lone surrogate, an IDNA prefix.
near_miss_parts = [*"0123456789+-.() @abcXYZ_\t\n\u00a0\u0660\u2013\u2212\u200b\udfffü", "xn--"]
near_miss_text = st.lists(st.sampled_from(near_miss_parts), max_size=40).map("".join)
field_values = json_values | near_miss_text | st.integers(min_value=-(10**20), max_value=10**20)
bodies = (
    json_values
    | st.fixed_dictionaries({}, optional={"email": field_values, "phoneNumber": field_values})
    | st.dictionaries(st.sampled_from(["email", "phoneNumber", "other"]), field_values)
)
header_text = st.text(alphabet=st.characters(min_codepoint=32, max_codepoint=126), max_size=60)
content_types = (
    st.sampled_from(["application/json", "application/json; charset=utf-8"]) | header_text
)

FUZZ = settings(
    max_examples=300,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


def check(client, db, response) -> None:
    assert response.status_code in (200, 400, 413, 415), response.get_data()
    assert response.is_json
    if response.status_code != 200:
        assert "error" in response.get_json()
        assert rows(db) == []
    else:
        # Valid input: start the next example from an empty table again.
        with db.cursor() as cur:
            cur.execute("TRUNCATE contact RESTART IDENTITY CASCADE")


@FUZZ
@given(body=bodies)
def test_any_json_body(client, db, body):
    check(client, db, client.post("/identify", json=body))


@FUZZ
@given(data=st.binary(max_size=200) | st.text(max_size=200).map(str.encode))
def test_any_bytes(client, db, data):
    check(client, db, client.post("/identify", data=data, content_type="application/json"))


@FUZZ
@given(content_type=content_types, request_id=header_text, body=bodies)
def test_any_headers(client, db, content_type, request_id, body):
    response = client.post(
        "/identify",
        data=json.dumps(body),
        headers={"Content-Type": content_type, "X-Request-Id": request_id},
    )
    check(client, db, response)
