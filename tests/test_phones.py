"""PHONE_REGION (SPEC §4): numbers of the region's plan and international ones are stored
in E.164, by one rule that checkouts, look-ups, detach, the blocklist, the console's
search and the import all use; unset, separators are removed and nothing else."""

import pytest
from conftest import identify, rows

from identity import create_app
from identity.customers.blocklist import Blocklist
from identity.customers.normalise import Blocked, normalise_phone_number, to_e164
from identity.database.connections import close_pool

UK_SPELLINGS = ["+44 7700 900123", "07700 900123", "0044 7700 900123", "447700900123"]
INDIA_SPELLINGS = ["098765 43210", "+91 98765 43210", "0091 9876543210", "9876543210"]


@pytest.fixture
def region_app(db, database_url, request):
    app = create_app(
        {
            "TESTING": True,
            "DATABASE_URL": database_url,
            "POOL_SIZE": 2,
            "PHONE_REGION": request.param,
        }
    )
    yield app
    close_pool(app)


@pytest.mark.parametrize(
    "region, typed, stored",
    [
        ("GB", "+44 7700 900123", "+447700900123"),
        ("GB", "07700 900123", "+447700900123"),
        ("GB", "0044 7700 900123", "+447700900123"),
        # Starts with GB's country code and fits the plan without it: international.
        ("GB", "447700900123", "+447700900123"),
        ("GB", "+44 (0)7700 900123", "+447700900123"),
        ("GB", "123456", "123456"),  # the original task's value fits no plan
        ("GB", "+1 202 555 0123", "+12025550123"),
        ("GB", "001 202 555 0123", "+12025550123"),  # 00: international in any region
        ("GB", "+999 123", "+999123"),  # no such country code
        ("IN", "098765 43210", "+919876543210"),
        ("IN", "+91 98765 43210", "+919876543210"),
        ("IN", "0091 9876543210", "+919876543210"),
        ("IN", "9876543210", "+919876543210"),
        ("IN", "123456", "123456"),
        ("IN", "919191", "919191"),
        (None, "+44 7700 900123", "+447700900123"),
        (None, "07700 900123", "07700900123"),
        (None, "0044 7700 900123", "00447700900123"),
        (None, "447700900123", "447700900123"),
        (None, "123-456", "123456"),
    ],
)
def test_phone_numbers_are_stored_in_e164_only_with_a_region(region, typed, stored):
    assert normalise_phone_number(typed, Blocklist({}), region) == stored


def test_to_e164_keeps_what_is_no_number_of_any_plan():
    assert to_e164("0000000000", "GB") == "0000000000"
    assert to_e164("+0123", "GB") == "+0123"


def test_the_blocklist_sees_the_typed_digits_and_the_e164_form():
    by_digits = Blocklist({"phoneNumbers": {"exact": ["07700900123"]}})
    by_e164 = Blocklist({"phoneNumbers": {"exact": ["+447700900123"]}})
    assert normalise_phone_number("07700 900123", by_digits, "GB") == Blocked("07700900123")
    assert normalise_phone_number("0044 7700 900123", by_e164, "GB") == Blocked("+447700900123")
    # The shipped list's repeated-digit pattern still applies with a region.
    assert isinstance(normalise_phone_number("000000", Blocklist.load("default"), "GB"), Blocked)


@pytest.mark.parametrize("region_app", ["GB"], indirect=True)
def test_four_spellings_of_a_uk_mobile_are_one_customer_with_phone_region_gb(region_app, db):
    client = region_app.test_client()
    answers = [
        identify(client, {"email": f"buyer{n}@shop.test", "phoneNumber": spelling})
        for n, spelling in enumerate(UK_SPELLINGS)
    ]
    assert {answer["primaryContactId"] for answer in answers} == {1}
    assert answers[-1]["phoneNumbers"] == ["+447700900123"]
    assert [row[2] for row in rows(db)] == ["+447700900123"] * 4


def test_without_phone_region_the_four_spellings_stay_four_customers(client, db):
    answers = [
        identify(client, {"email": f"buyer{n}@shop.test", "phoneNumber": spelling})
        for n, spelling in enumerate(UK_SPELLINGS)
    ]
    assert [answer["primaryContactId"] for answer in answers] == [1, 2, 3, 4]
    assert [row[2] for row in rows(db)] == [
        "+447700900123",
        "07700900123",
        "00447700900123",
        "447700900123",
    ]


@pytest.mark.parametrize("region_app", ["IN"], indirect=True)
def test_the_spec_examples_for_india_are_one_phone(region_app, db):
    client = region_app.test_client()
    for spelling in INDIA_SPELLINGS:
        answer = identify(client, {"phoneNumber": spelling})
    assert answer == {
        "primaryContactId": 1,
        "emails": [],
        "phoneNumbers": ["+919876543210"],
        "secondaryContactIds": [],
    }
    assert len(rows(db)) == 1


@pytest.mark.parametrize("region_app", ["GB"], indirect=True)
def test_the_original_task_examples_are_unchanged_with_a_region(region_app, db):
    client = region_app.test_client()
    identify(client, {"email": "lorraine@hillvalley.edu", "phoneNumber": "123456"})
    answer = identify(client, {"email": "mcfly@hillvalley.edu", "phoneNumber": 123456})
    assert answer == {
        "primaryContactId": 1,
        "emails": ["lorraine@hillvalley.edu", "mcfly@hillvalley.edu"],
        "phoneNumbers": ["123456"],
        "secondaryContactIds": [2],
    }


@pytest.mark.parametrize("region_app", ["GB"], indirect=True)
def test_look_up_and_detach_take_any_spelling(region_app, db):
    client = region_app.test_client()
    identify(client, {"email": "a@shop.test", "phoneNumber": "07700 900123"})
    identify(client, {"email": "b@shop.test", "phoneNumber": "+44 7700 900123"})
    found = client.get("/identify", query_string={"phoneNumber": "0044 7700 900123"})
    assert found.status_code == 200
    assert found.get_json()["contact"]["emails"] == ["a@shop.test", "b@shop.test"]
    detached = client.post(
        "/contacts/1/detach", json={"phoneNumber": "447700900123", "block": True}
    )
    assert detached.status_code == 200, detached.get_json()
    assert len(detached.get_json()["customers"]) == 2
    # Blocked in E.164: every spelling of it is now absent from a checkout.
    blocked = client.post("/identify", json={"email": "c@shop.test", "phoneNumber": "07700900123"})
    assert blocked.get_json()["ignored"] == ["phoneNumber"]
    with db.cursor() as cur:
        cur.execute("SELECT value FROM blocked_value")
        assert cur.fetchall() == [("+447700900123",)]


@pytest.mark.parametrize("region_app", ["GB"], indirect=True)
def test_the_console_search_finds_the_customer_by_another_spelling(region_app, db):
    client = region_app.test_client()
    identify(client, {"email": "a@shop.test", "phoneNumber": "07700 900123"})
    identify(client, {"email": "b@shop.test", "phoneNumber": "123456"})
    page = client.get("/console/")
    token = page.get_data(as_text=True).split('name="csrf_token" value="')[1].split('"')[0]
    found = client.post("/console/search", data={"q": "+44 7700 900123", "csrf_token": token})
    assert found.status_code == 303
    assert found.headers["Location"].endswith("/console/contacts/1#row-1")


@pytest.mark.parametrize("region_app", ["GB"], indirect=True)
def test_the_import_stores_e164_with_a_region(region_app, db, tmp_path):
    orders = tmp_path / "orders.csv"
    orders.write_text(
        "email,phoneNumber,createdAt\n"
        + "".join(
            f"buyer{n}@shop.test,{spelling},2024-01-0{n + 1}T00:00:00\n"
            for n, spelling in enumerate(UK_SPELLINGS)
        )
    )
    result = region_app.test_cli_runner().invoke(args=["import", str(orders)])
    assert result.exit_code == 0, result.output
    stored = rows(db)
    assert [row[2] for row in stored] == ["+447700900123"] * 4
    assert [row[4] for row in stored] == ["primary"] + ["secondary"] * 3


def test_an_unknown_phone_region_stops_the_service(database_url):
    with pytest.raises(ValueError, match="PHONE_REGION"):
        create_app({"TESTING": True, "DATABASE_URL": database_url, "PHONE_REGION": "UK"})
