"""Fixtures (flaskr's names): every test talks to a real PostgreSQL.

The session starts one throwaway embedded PostgreSQL (or uses TEST_DATABASE_URL) and
applies the schema; each test starts from an empty contact table.
"""

import contextlib
import os
import time

import psycopg2
import pytest
from servers import ServerProcess

from identity import create_app
from identity.config import PROJECT_ROOT
from identity.database.connections import close_pool
from identity.database.migrations import migrate
from identity.dev.embedded import EmbeddedPostgres
from identity.web.access import SETTINGS

TOKEN_SETTINGS = tuple(SETTINGS.values())


@pytest.fixture(scope="session", autouse=True)
def no_tokens_from_the_shell():
    """Tests decide the tokens themselves: a developer's exported CHECKOUT_TOKENS and the
    like would otherwise turn every loopback request of the other tests into a 401."""
    saved = {name: os.environ.pop(name) for name in TOKEN_SETTINGS if name in os.environ}
    yield
    os.environ.update(saved)


@pytest.fixture(scope="session")
def embedded_server():
    """The throwaway server, or None when TEST_DATABASE_URL names a database to use."""
    if os.environ.get("TEST_DATABASE_URL"):
        yield None
        return
    with EmbeddedPostgres() as server:
        yield server


@pytest.fixture(scope="session")
def database_url(embedded_server):
    url = embedded_server.url if embedded_server else os.environ["TEST_DATABASE_URL"]
    migrate(url, PROJECT_ROOT / "sql")
    return url


def emptied_database(url: str):
    """A direct autocommit connection to a test database, its tables emptied first."""
    conn = psycopg2.connect(url)
    conn.autocommit = True
    with conn.cursor() as cur:
        cur.execute("TRUNCATE contact, blocked_value RESTART IDENTITY CASCADE")
    return conn


@pytest.fixture
def db(database_url):
    """A direct autocommit connection to the test database, emptied first."""
    conn = emptied_database(database_url)
    yield conn
    conn.close()


@pytest.fixture
def app(db, database_url):
    app = create_app({"TESTING": True, "DATABASE_URL": database_url, "POOL_SIZE": 4})
    yield app
    close_pool(app)


@pytest.fixture
def client(app):
    return app.test_client()


@contextlib.contextmanager
def client_on(url: str):
    """A test client of an app of its own on the database at url (two pooled
    connections), its pool closed afterwards."""
    app = create_app({"TESTING": True, "DATABASE_URL": url, "POOL_SIZE": 2})
    try:
        yield app.test_client()
    finally:
        close_pool(app)


@pytest.fixture
def runner(app):
    return app.test_cli_runner()


def rows(db) -> list[tuple]:
    """Every row as (id, email, phoneNumber, linkedId, linkPrecedence), by id."""
    with db.cursor() as cur:
        cur.execute(
            "SELECT id, email, phoneNumber, linkedId, linkPrecedence FROM contact ORDER BY id"
        )
        return cur.fetchall()


def identify(client, body: dict, request_id: str | None = None) -> dict:
    """POST /identify through the test client; asserts a 200 and returns `contact`.

    Sends a checkout token when the app has any, as a shop's checkout would."""
    headers = {"X-Request-Id": request_id} if request_id else {}
    tokens = client.application.config["CHECKOUT_TOKENS"]
    if tokens:
        headers["Authorization"] = f"Bearer {tokens[0]}"
    response = client.post("/identify", json=body, headers=headers)
    assert response.status_code == 200, response.get_json()
    return response.get_json()["contact"]


def wait_for(condition, what: str, seconds: float = 30) -> None:
    """Poll a condition until it holds: synchronisation on state, never on time."""
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.01)


def replay_links(db) -> dict[int, int | None]:
    """Every row's link, rebuilt from the events alone."""
    links: dict[int, int | None] = {}
    with db.cursor() as cur:
        cur.execute(
            "SELECT kind, contactId, primaryId, repointedIds FROM contact_event ORDER BY id"
        )
        for kind, contact_id, primary_id, repointed_ids in cur.fetchall():
            if kind == "customer_created":
                links[contact_id] = None
            elif kind in ("secondary_added", "primary_demoted"):
                links[contact_id] = primary_id
            elif kind == "rows_repointed":
                links.update(dict.fromkeys(repointed_ids, primary_id))
            elif kind == "customer_split":
                links[contact_id] = None
                links.update(dict.fromkeys(repointed_ids or [], primary_id))
    return links


@pytest.fixture(scope="module")
def two_servers(database_url):
    """Two server processes sharing the test database, as two hosts would."""
    # One worker each: a test may rely on a server's own process having seen its own
    # write (tests/test_workers_stress.py runs the stress test with several workers).
    servers = [ServerProcess(database_url, WORKERS=1), ServerProcess(database_url, WORKERS=1)]
    yield servers
    for server in servers:
        server.stop()
