"""Health, readiness, metrics, request ids, access logs and the OpenAPI document."""

import json
import logging
import re
import threading

import psycopg2
import pytest
from conftest import wait_for
from openapi_core import OpenAPI
from openapi_core.contrib.werkzeug import (
    WerkzeugOpenAPIRequest,
    WerkzeugOpenAPIResponse,
)
from psycopg2.extensions import make_dsn
from werkzeug.test import EnvironBuilder

from identity import create_app
from identity.database.connections import close_pool
from identity.process.logs import json_formatter


def test_healthz_answers_without_a_database():
    app = create_app({"TESTING": True, "DATABASE_URL": "postgresql://postgres@127.0.0.1:1/x"})
    response = app.test_client().get("/healthz")
    assert response.status_code == 200 and response.get_json() == {"status": "ok"}


def test_readyz_is_200_with_the_schema_in_place(client):
    assert client.get("/readyz").get_json() == {"status": "ok"}


def test_readyz_is_503_when_the_database_is_unreachable():
    app = create_app({"TESTING": True, "DATABASE_URL": "postgresql://postgres@127.0.0.1:1/x"})
    response = app.test_client().get("/readyz")
    assert response.status_code == 503 and "Retry-After" in response.headers


def test_readyz_is_503_when_the_schema_is_missing(database_url):
    admin = psycopg2.connect(database_url)
    admin.autocommit = True
    with admin.cursor() as cur:
        cur.execute("DROP DATABASE IF EXISTS identity_no_schema")
        cur.execute("CREATE DATABASE identity_no_schema")
    admin.close()
    url = make_dsn(database_url, dbname="identity_no_schema")
    app = create_app({"TESTING": True, "DATABASE_URL": url})
    response = app.test_client().get("/readyz")
    assert response.status_code == 503
    assert response.get_json()["error"]["code"] == "schema_missing"
    close_pool(app)


def metric(app, name, **labels) -> float:
    return app.extensions["identity_metrics"].registry.get_sample_value(name, labels) or 0


def test_metrics_count_requests_outcomes_and_connections(app, client):
    client.post("/identify", json={"email": "a@x.io", "phoneNumber": "1"})
    client.post("/identify", json={"email": "b@x.io", "phoneNumber": "1"})
    client.post("/identify", json={"email": "b@x.io"})
    client.post("/identify", json={"email": "bad"})
    for outcome in ("new_customer", "new_secondary", "unchanged"):
        assert metric(app, "identity_identify_outcomes_total", outcome=outcome) == 1
    requests = "identity_http_request_duration_seconds_count"
    assert metric(app, requests, method="POST", route="/identify", status="200") == 3
    assert metric(app, requests, method="POST", route="/identify", status="400") == 1
    assert metric(app, "identity_db_connections_in_use") == 0
    assert metric(app, "identity_http_requests_in_flight") == 0
    text = client.get("/metrics").get_data(as_text=True)
    assert "identity_transaction_retries" in text and "identity_db_pool_size 4.0" in text


@pytest.mark.parametrize(
    "sent, logged",
    [("order-42.retry:1", True), ("has space", False), ("x" * 200, False), (None, False)],
)
def test_the_request_id_is_ours_and_the_clients_only_logged_beside_it(
    client, caplog, sent, logged
):
    """The history keys changes by our id: a client cannot make two requests share one."""
    caplog.set_level(logging.INFO, logger="identity.web.access")
    headers = {"X-Request-Id": sent} if sent else {}
    ids = [
        client.post("/identify", json={"email": "a@x.io"}, headers=headers).headers["X-Request-Id"]
        for _ in range(2)
    ]
    assert ids[0] != ids[1] and sent not in ids
    assert all(re.fullmatch("[0-9a-f]{32}", request_id) for request_id in ids)
    events = client.get("/contacts/1/history").get_json()["events"]
    assert [event["requestId"] for event in events] == ids[:1]
    lines = [record for record in caplog.records if getattr(record, "path", "") == "/identify"]
    assert [line.request_id for line in lines] == ids
    assert {line.client_request_id for line in lines} == {sent if logged else None}


def test_one_json_access_log_line_per_request_without_personal_data(client, caplog):
    caplog.set_level(logging.DEBUG, logger="identity.web.access")
    client.post(
        "/identify",
        json={"email": "Secret.Person@x.io", "phoneNumber": "+44 7700 900123"},
        headers={"X-Request-Id": "r-1"},
    )
    client.get("/healthz")
    identify_record, health_record = caplog.records
    assert identify_record.levelno == logging.INFO and health_record.levelno == logging.DEBUG
    line = json.loads(json_formatter().format(identify_record))
    keys = ("method", "path", "status", "outcome", "client_request_id")
    assert {key: line[key] for key in keys} == {
        "method": "POST",
        "path": "/identify",
        "status": 200,
        "outcome": "new_customer",
        "client_request_id": "r-1",
    }
    assert line["latency_ms"] > 0
    logged = " ".join(json.dumps(vars(record), default=str) for record in caplog.records).lower()
    assert "secret" not in logged and "7700" not in logged


@pytest.fixture
def openapi(client):
    return OpenAPI.from_dict(client.get("/openapi.json").get_json())


@pytest.mark.parametrize(
    "method, path, kwargs",
    [
        ("post", "/identify", {"json": {"email": "a@x.io", "phoneNumber": 123}}),
        ("post", "/identify", {"json": {"email": "bad"}}),
        ("post", "/identify", {"json": {}}),
        ("post", "/identify", {"data": "{", "content_type": "application/json"}),
        ("post", "/identify", {"data": "x", "content_type": "text/plain"}),
        ("post", "/identify", {"data": "x" * 70_000, "content_type": "application/json"}),
        ("get", "/identify", {"query_string": {"email": "a@x.io"}}),
        ("get", "/identify", {"query_string": {"email": "nobody@x.io"}}),
        ("get", "/contacts/1", {}),
        ("get", "/contacts/1/history", {}),
        ("get", "/contacts/2", {}),
        ("get", "/healthz", {}),
        ("get", "/readyz", {}),
        ("get", "/metrics", {}),
        ("get", "/openapi.json", {}),
    ],
)
def test_real_responses_validate_against_the_openapi_document(
    client, openapi, method, path, kwargs
):
    client.post(
        "/identify", json={"email": "a@x.io", "phoneNumber": "1"}, headers={"X-Request-Id": "r"}
    )
    response = getattr(client, method)(path, **kwargs)
    # The response is checked against the operation of this method and path; the
    # request's body has been read by the app already, so a bodiless copy stands in.
    request = EnvironBuilder(
        path=path, method=method.upper(), query_string=kwargs.get("query_string")
    ).get_request()
    openapi.validate_response(WerkzeugOpenAPIRequest(request), WerkzeugOpenAPIResponse(response))


def test_made_up_methods_do_not_grow_the_metrics(app, client):
    for n in range(2000):
        client.open("/identify", method=f"M{n}")
    client.open("/nowhere", method="BREW")
    text = client.get("/metrics").get_data(as_text=True)
    methods = set(re.findall(r'_count\{method="([^"]*)"', text))
    assert methods == {"other"}  # the scrape itself is counted after it answers
    assert len(text) < 20_000
    requests = "identity_http_request_duration_seconds_count"
    assert metric(app, requests, method="other", route="unmatched", status="405") == 2000


def test_openapi_document_covers_every_route(app, client):
    documented = set(client.get("/openapi.json").get_json()["paths"])
    routes = {
        re.sub(r"<[^:>]+:([a-z_]+)>", r"{\1}", rule.rule)
        for rule in app.url_map.iter_rules()
        # The support console's HTML pages are not part of the JSON API.
        if rule.endpoint != "static" and not rule.endpoint.startswith("console.")
    }
    assert routes == documented


def test_a_request_waits_for_a_free_connection_when_the_pool_is_smaller(database_url, db):
    app = create_app(
        {
            "TESTING": True,
            "DATABASE_URL": database_url,
            "POOL_SIZE": 1,
            "LOCK_TIMEOUT_MS": 20000,
            "REQUEST_DEADLINE_S": 30,
        }
    )
    client = app.test_client()
    assert client.post("/identify", json={"email": "a@x.io", "phoneNumber": "1"}).status_code == 200
    blocker = psycopg2.connect(database_url)
    answers = {}
    try:
        with blocker.cursor() as cur:  # the write below waits for this lock, holding the pool
            cur.execute("SELECT id FROM contact WHERE id = 1 FOR UPDATE")
        writer = threading.Thread(
            target=lambda: answers.update(
                write=client.post("/identify", json={"email": "a@x.io", "phoneNumber": "2"})
            )
        )
        writer.start()
        wait_for(
            lambda: metric(app, "identity_db_connections_in_use") == 1, "the write to hold the pool"
        )
        reader = threading.Thread(target=lambda: answers.update(read=client.get("/contacts/1")))
        reader.start()
        wait_for(lambda: metric(app, "identity_db_pool_waiting") == 1, "the read to wait")
        blocker.commit()
        writer.join(30)
        reader.join(30)
    finally:
        blocker.close()
        close_pool(app)
    assert answers["write"].status_code == 200
    assert answers["read"].status_code == 200
    assert answers["read"].get_json()["contact"]["phoneNumbers"] == ["1", "2"]
