"""SPEC §13, the hub alarm: a value whose rows, within its customer, carry more than
HUB_MAX_PARTNERS distinct values of the other kind is a suspected hub, recorded once, with
a feed event that names no value, a metric, and GET /hubs."""

import http.client
import re
import threading
from datetime import UTC, datetime
from itertools import cycle

import pytest
from conftest import identify
from openapi_core import OpenAPI
from openapi_core.contrib.werkzeug import (
    WerkzeugOpenAPIRequest,
    WerkzeugOpenAPIResponse,
)
from servers import ServerProcess, post_identify
from werkzeug.test import EnvironBuilder

from identity import create_app
from identity.customers import hubs
from identity.customers.model import ContactRow
from identity.database.connections import close_pool

PHONE = "5550100"
EMAIL = "frontdesk@shop.test"


def glue(client, kind: str, partners: range) -> None:
    """Checkouts that give one value (PHONE or EMAIL) the partners numbered `partners`."""
    for n in partners:
        if kind == "phoneNumber":
            identify(client, {"email": f"buyer{n}@x.io", "phoneNumber": PHONE})
        else:
            identify(client, {"email": EMAIL, "phoneNumber": f"77700{n}"})


def hub_rows(db) -> list[tuple]:
    with db.cursor() as cur:
        cur.execute(
            "SELECT kind, value, contactId, primaryContactId, partners, resolvedAt"
            " FROM suspected_hub ORDER BY id"
        )
        return cur.fetchall()


def hub_events(db) -> list[tuple]:
    with db.cursor() as cur:
        cur.execute(
            "SELECT contactId, primaryId, valueKind, email, phoneNumber, repointedIds"
            " FROM contact_event WHERE kind = 'hub_suspected' ORDER BY id"
        )
        return cur.fetchall()


def hubs_counted(metrics_text: str, kind: str) -> float:
    found = re.search(
        rf'^identity_hubs_suspected_total{{kind="{kind}"}} (\S+)$', metrics_text, re.M
    )
    return float(found.group(1)) if found else 0.0


# --- The counting rule, as a pure function --------------------------------------------


def row(row_id: int, email: str | None, phone: str | None) -> ContactRow:
    """Row row_id of a customer whose primary is row 1."""
    linked_id = None if row_id == 1 else 1
    precedence = "primary" if row_id == 1 else "secondary"
    return ContactRow(row_id, email, phone, linked_id, precedence, datetime.now(UTC))


@pytest.mark.parametrize(
    "existing, new, expected",
    [
        # ten e-mails on the phone's rows, the new row's the eleventh: a hub
        ([(f"e{n}", "p") for n in range(10)], ("e10", "p"), [("phoneNumber", "p", 11)]),
        # the new row's e-mail is already a partner: still ten
        ([(f"e{n}", "p") for n in range(10)], ("e3", "p"), []),
        # nine e-mails and the new one: ten is not more than ten
        ([(f"e{n}", "p") for n in range(9)], ("e9", "p"), []),
        # rows without an e-mail add no partner
        ([(f"e{n}", "p") for n in range(9)] + [(None, "p")], ("e9", "p"), []),
        # eleven phones on an e-mail's rows
        ([("e", f"p{n}") for n in range(10)], ("e", "p10"), [("email", "e", 11)]),
        # a new row with one value adds no partner to it
        ([(f"e{n}", "p") for n in range(10)], (None, "p"), []),
        # partners of other values of the customer do not count for the request's values
        ([(f"e{n}", "q") for n in range(12)] + [("e0", "p")], ("e0", "p"), []),
    ],
)
def test_a_value_with_more_than_the_threshold_of_partners_is_a_hub(existing, new, expected):
    rows = [row(n + 1, email, phone) for n, (email, phone) in enumerate(existing)]
    found = hubs.suspected(rows, *new, max_partners=10)
    assert [(hub.kind, hub.value, hub.partners) for hub in found] == expected
    for hub in found:
        assert hub.contact_id == 1  # the oldest row carrying the value


@pytest.mark.parametrize("settings", [{"HUB_MAX_PARTNERS": 0}, {"HUB_ACTION": "delete"}])
def test_a_meaningless_hub_setting_stops_the_app_from_starting(database_url, settings):
    with pytest.raises(ValueError, match="HUB_"):
        create_app({"TESTING": True, "DATABASE_URL": database_url, **settings})


# --- Through the service ----------------------------------------------------------------


@pytest.mark.parametrize("kind, value", [("phoneNumber", PHONE), ("email", EMAIL)])
def test_the_eleventh_partner_raises_the_hub_once_and_ten_do_not(client, db, kind, value):
    glue(client, kind, range(10))
    assert hub_rows(db) == [] and hub_events(db) == []
    assert client.get("/hubs").get_json() == {"hubs": []}

    glue(client, kind, range(10, 11))
    assert hub_rows(db) == [(kind, value, 1, 1, 11, None)]
    assert hub_events(db) == [(1, 1, kind, None, None, None)]
    (listed,) = client.get("/hubs").get_json()["hubs"]
    assert {**listed, "since": None} == {
        "kind": kind, "value": value, "primaryContactId": 1, "partners": 11, "since": None,
    }  # fmt: skip
    assert datetime.fromisoformat(listed["since"]) <= datetime.now(UTC)


def test_later_writes_to_the_hubs_customer_do_not_raise_it_again(client, db):
    glue(client, "phoneNumber", range(11))
    glue(client, "phoneNumber", range(11, 14))  # more partners
    identify(client, {"email": "stranger@x.io", "phoneNumber": "999"})  # row 15
    identify(client, {"email": "stranger@x.io", "phoneNumber": PHONE})  # a merge
    identify(client, {"email": "buyer0@x.io", "phoneNumber": "31337"})  # another new value
    assert [hub[:5] for hub in hub_rows(db)] == [("phoneNumber", PHONE, 1, 1, 11)]
    assert len(hub_events(db)) == 1
    assert hubs_counted(client.get("/metrics").get_data(as_text=True), "phoneNumber") == 1


def test_a_merge_adds_no_partner(client, db):
    """Rows keep their values: a checkout that joins ten e-mails of PHONE with ten phones
    of EMAIL stores no row carrying both, so neither gains a partner."""
    glue(client, "phoneNumber", range(10))
    glue(client, "email", range(10))  # another customer, rows 11 to 20
    merged = identify(client, {"email": EMAIL, "phoneNumber": PHONE})
    assert len(merged["emails"]) == 11 and len(merged["phoneNumbers"]) == 11
    assert hub_rows(db) == [] and hub_events(db) == []


def test_detaching_a_hub_resolves_it_and_the_value_can_become_a_hub_again(client, db):
    glue(client, "phoneNumber", range(11))
    detached = client.post("/contacts/1/detach", json={"phoneNumber": PHONE})
    assert detached.status_code == 200, detached.get_json()
    assert client.get("/hubs").get_json() == {"hubs": []}
    assert [(hub[4], hub[5] is None) for hub in hub_rows(db)] == [(11, False)]

    glue(client, "phoneNumber", range(100, 111))  # strangers glued by it again
    assert [(hub[4], hub[5] is None) for hub in hub_rows(db)] == [(11, False), (11, True)]
    assert len(hub_events(db)) == 2
    assert len(client.get("/hubs").get_json()["hubs"]) == 1


def test_detach_and_block_resolves_the_hub_and_links_nobody_again(client, db):
    glue(client, "email", range(11))
    detached = client.post("/contacts/1/detach", json={"email": EMAIL, "block": True})
    assert detached.status_code == 200, detached.get_json()
    assert client.get("/hubs").get_json() == {"hubs": []}
    answer = client.post("/identify", json={"email": EMAIL, "phoneNumber": "777000"})
    assert answer.get_json()["ignored"] == ["email"]


def test_the_feed_event_names_the_kind_and_a_row_never_the_value(client, db):
    glue(client, "phoneNumber", range(11))
    page = client.get("/events", query_string={"limit": 1000})
    (event,) = [event for event in page.get_json()["events"] if event["kind"] == "hub_suspected"]
    assert {key: event[key] for key in ("primaryContactId", "contactIds", "valueKind")} == {
        "primaryContactId": 1, "contactIds": [1], "valueKind": "phoneNumber",
    }  # fmt: skip
    assert PHONE not in page.get_data(as_text=True)
    assert set(event) == {"id", "kind", "occurredAt", "primaryContactId", "contactIds",
                          "valueKind"}  # fmt: skip
    openapi = OpenAPI.from_dict(client.get("/openapi.json").get_json())
    request = EnvironBuilder(path="/events", query_string={"limit": 1000}).get_request()
    openapi.validate_response(WerkzeugOpenAPIRequest(request), WerkzeugOpenAPIResponse(page))


def test_metrics_count_each_new_hub_by_kind(client):
    before = client.get("/metrics").get_data(as_text=True)
    assert hubs_counted(before, "phoneNumber") == 0
    glue(client, "phoneNumber", range(12))
    glue(client, "email", range(11))
    after = client.get("/metrics").get_data(as_text=True)
    assert hubs_counted(after, "phoneNumber") == 1
    assert hubs_counted(after, "email") == 1


def test_the_threshold_is_a_setting(db, database_url):
    app = create_app({"TESTING": True, "DATABASE_URL": database_url, "HUB_MAX_PARTNERS": 2})
    client = app.test_client()
    glue(client, "phoneNumber", range(2))
    assert hub_rows(db) == []
    glue(client, "phoneNumber", range(2, 3))
    assert [hub[:5] for hub in hub_rows(db)] == [("phoneNumber", PHONE, 1, 1, 3)]


def test_hubs_answer_validates_against_the_openapi_document(client):
    glue(client, "email", range(11))
    openapi = OpenAPI.from_dict(client.get("/openapi.json").get_json())
    response = client.get("/hubs")
    request = EnvironBuilder(path="/hubs").get_request()
    openapi.validate_response(WerkzeugOpenAPIRequest(request), WerkzeugOpenAPIResponse(response))


def test_hubs_are_listed_newest_first(client):
    glue(client, "email", range(11))
    glue(client, "phoneNumber", range(11))
    listed = client.get("/hubs").get_json()["hubs"]
    assert [hub["kind"] for hub in listed] == ["phoneNumber", "email"]


# --- HUB_ACTION=block ---------------------------------------------------------------------


@pytest.fixture
def blocking_client(db, database_url):
    app = create_app({"TESTING": True, "DATABASE_URL": database_url, "HUB_ACTION": "block"})
    yield app.test_client()
    close_pool(app)


def blocked_values(db) -> list[tuple]:
    with db.cursor() as cur:
        cur.execute("SELECT kind, value FROM blocked_value ORDER BY kind")
        return cur.fetchall()


def test_with_block_the_twelfth_email_of_a_hub_phone_is_not_linked(blocking_client, db):
    glue(blocking_client, "phoneNumber", range(10))
    assert blocked_values(db) == []
    glue(blocking_client, "phoneNumber", range(10, 11))  # the eleventh is still linked
    assert blocked_values(db) == [("phoneNumber", PHONE)]
    assert [hub[:5] for hub in hub_rows(db)] == [("phoneNumber", PHONE, 1, 1, 11)]

    answer = blocking_client.post("/identify", json={"email": "buyer11@x.io", "phoneNumber": PHONE})
    assert answer.status_code == 200
    assert answer.get_json() == {
        "contact": {"primaryContactId": 12, "emails": ["buyer11@x.io"], "phoneNumbers": [],
                    "secondaryContactIds": []},
        "ignored": ["phoneNumber"],
    }  # fmt: skip
    glued = blocking_client.get("/contacts/1").get_json()["contact"]
    assert len(glued["emails"]) == 11  # the customers it glued stay as they are
    assert len(hub_events(db)) == 1


def test_with_block_a_hub_known_from_alert_is_blocked_at_its_next_partner(client, db, database_url):
    glue(client, "phoneNumber", range(11))  # alert: recorded, not blocked
    assert blocked_values(db) == []
    app = create_app({"TESTING": True, "DATABASE_URL": database_url, "HUB_ACTION": "block"})
    glue(app.test_client(), "phoneNumber", range(11, 12))
    close_pool(app)
    assert blocked_values(db) == [("phoneNumber", PHONE)]
    assert len(hub_rows(db)) == 1 and len(hub_events(db)) == 1


def test_a_hub_blocked_in_one_process_links_nobody_in_another(db, database_url):
    with ServerProcess(database_url, HUB_ACTION="block") as first, ServerProcess(
        database_url, HUB_ACTION="block", BLOCKLIST_REFRESH_S=3600
    ) as second:
        other = http.client.HTTPConnection("127.0.0.1", second.port, timeout=30)
        assert post_identify(other, {"email": "buyer0@x.io", "phoneNumber": PHONE})[0] == 200
        connection = http.client.HTTPConnection("127.0.0.1", first.port, timeout=30)
        for n in range(1, 11):
            body = {"email": f"buyer{n}@x.io", "phoneNumber": PHONE}
            assert post_identify(connection, body)[0] == 200
        assert blocked_values(db) == [("phoneNumber", PHONE)]
        # The second process read the stored blocklist before the block, and not since.
        status, _, answer = post_identify(other, {"email": "buyer11@x.io", "phoneNumber": PHONE})
        assert status == 200 and answer["ignored"] == ["phoneNumber"]
        assert answer["contact"]["phoneNumbers"] == []


def test_erasing_a_hubs_customer_leaves_its_value_in_no_table(blocking_client, db):
    glue(blocking_client, "phoneNumber", range(11))
    assert blocking_client.delete("/contacts/1").status_code == 200
    assert hub_rows(db) == [] and blocked_values(db) == []
    assert len(hub_events(db)) == 1  # the event names no value: it stays
    with db.cursor() as cur:
        cur.execute(
            "SELECT count(*) FROM contact WHERE phoneNumber = %s"
            " UNION ALL SELECT count(*) FROM contact_event WHERE phoneNumber = %s",
            (PHONE, PHONE),
        )
        assert cur.fetchall() == [(0,), (0,)]


# --- Two server processes -----------------------------------------------------------------

HUB_VALUES = 3
PARTNERS = 14


def test_concurrent_writes_on_two_servers_raise_each_hub_once(two_servers, db):
    """Every checkout is released at once, alternating between the servers: the writes
    of one value queue on its lock, so exactly one of them sees the eleventh partner."""
    bodies = [
        body
        for n in range(PARTNERS)
        for k in range(HUB_VALUES)
        for body in (
            {"email": f"p{k}.{n}@x.io", "phoneNumber": f"55501{k}"},
            {"email": f"e{k}@shop.test", "phoneNumber": f"8880{k}{n:02}"},
        )
    ]
    statuses = send_at_once(two_servers, bodies)
    assert statuses == [200] * len(bodies)

    expected = {("phoneNumber", f"55501{k}") for k in range(HUB_VALUES)} | {
        ("email", f"e{k}@shop.test") for k in range(HUB_VALUES)
    }
    recorded = hub_rows(db)
    assert sorted(hub[:2] for hub in recorded) == sorted(expected)
    assert {hub[4] for hub in recorded} == {11}
    assert len(hub_events(db)) == len(expected)
    counted = 0.0
    for server in two_servers:
        connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
        connection.request("GET", "/metrics")
        text = connection.getresponse().read().decode()
        connection.close()
        counted += hubs_counted(text, "phoneNumber") + hubs_counted(text, "email")
    assert counted == len(expected)


def send_at_once(servers, bodies: list[dict]) -> list[int]:
    """POST every body from its own thread, all released together; their statuses."""
    barrier = threading.Barrier(len(bodies))
    statuses: list = [None] * len(bodies)

    def send(index: int, server) -> None:
        connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=60)
        barrier.wait(timeout=60)
        statuses[index] = post_identify(connection, bodies[index])[0]
        connection.close()

    threads = [
        threading.Thread(target=send, args=(index, server))
        for index, server in zip(range(len(bodies)), cycle(servers))
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    return statuses


# --- The support console ------------------------------------------------------------------

_CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')


def test_the_console_lists_hubs_with_a_detach_and_block_form(client):
    """No support token configured: the console serves this machine without sign-in."""
    assert "No suspected hubs." in client.get("/console/hubs").get_data(as_text=True)
    glue(client, "phoneNumber", range(11))

    page = client.get("/console/hubs")
    text = page.get_data(as_text=True)
    assert page.status_code == 200
    assert PHONE in text and "<td data-label=\"Partners\">11</td>" in text
    form = text[text.index('<form method="post" action="/console/contacts/1/detach/review"') :]
    form = form[: form.index("</form>")]
    assert f'name="value" value="phone:{PHONE}"' in form
    assert 'name="block" value="yes"' in form

    # The form leads to the console's own confirmation step, CSRF token and all.
    review = client.post(
        "/console/contacts/1/detach/review",
        data={"csrf_token": _CSRF.search(form).group(1), "value": f"phone:{PHONE}", "block": "yes"},
    )
    assert review.status_code == 200
    confirmation = review.get_data(as_text=True)
    assert (
        "It is removed from 11 rows" in confirmation and "<strong>blocked</strong>" in confirmation
    )


def test_the_console_history_names_the_kind_of_a_suspected_hub(client):
    glue(client, "email", range(11))
    page = client.get("/console/contacts/1").get_data(as_text=True)
    assert "The e-mail of row #1 suspected of gluing strangers together" in page
