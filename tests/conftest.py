"""Fixtures (flaskr's names): every test talks to a real PostgreSQL.

The session starts one throwaway embedded PostgreSQL (or uses TEST_DATABASE_URL) and
applies the schema; each test starts from an empty contact table.
"""

import os

import psycopg2
import pytest

from identity import create_app
from identity.config import PROJECT_ROOT
from identity.db import apply_schema
from identity.embedded import EmbeddedPostgres


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
    pool = app.extensions.get("identity_pool")
    if pool:
        pool.closeall()


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
