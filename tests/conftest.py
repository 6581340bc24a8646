"""Fixtures (flaskr's names): every test talks to a real PostgreSQL.

The session starts one throwaway embedded PostgreSQL (or uses TEST_DATABASE_URL) and
applies the schema; each test starts from an empty contact table.
"""

import os
import socket
import subprocess
import sys
import time

import psycopg2
import pytest

from identity import create_app
from identity.config import PROJECT_ROOT
from identity.db import apply_schema, close_pool
from identity.embedded import EmbeddedPostgres, free_port


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
    apply_schema(url, PROJECT_ROOT / "sql")
    return url


@pytest.fixture
def db(database_url):
    """A direct autocommit connection to the test database, emptied first."""
    conn = psycopg2.connect(database_url)
    conn.autocommit = True
    with conn.cursor() as cur:
        cur.execute("TRUNCATE contact RESTART IDENTITY CASCADE")
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
            else:  # rows_repointed
                links.update(dict.fromkeys(repointed_ids, primary_id))
    return links


class ServerProcess:
    """`python wsgi.py` as a real server process on a free port."""

    def __init__(self, database_url: str, **settings):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        env = {
            **os.environ,
            "DATABASE_URL": database_url,
            "PORT": str(self.port),
            "LOG_LEVEL": "WARNING",
            **{name: str(value) for name, value in settings.items()},
        }
        self.process = subprocess.Popen(
            [sys.executable, str(PROJECT_ROOT / "wsgi.py")], env=env, cwd=PROJECT_ROOT
        )
        self._wait_until_serving()

    def _wait_until_serving(self) -> None:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            assert self.process.poll() is None, "the server exited"
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1):
                    return
            except OSError:
                time.sleep(0.05)
        raise TimeoutError("the server did not start listening")

    def stop(self) -> int:
        self.process.terminate()
        return self.process.wait(20)


@pytest.fixture(scope="module")
def two_servers(database_url):
    """Two server processes sharing the test database, as two hosts would."""
    servers = [ServerProcess(database_url), ServerProcess(database_url)]
    yield servers
    for server in servers:
        server.stop()
