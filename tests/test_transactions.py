"""One owner of transactions, connections a pooler can share, and failover errors.

- Nothing outlives a transaction on a service connection: no prepared statement, no
  setting; the long-lived connections (the pool's, the deliverer's, the import's) carry
  keepalives and a TCP user timeout as libpq parameters, never startup options.
- A node that cannot take writes (here: a database whose sessions are read-only, as on a
  standby) is a 503 with Retry-After, never a 500; its connections are thrown away and
  the service recovers by itself. A failed connect is logged with libpq's reason.
- A correction run again after its COMMIT's answer was lost answers as the first run
  would have, not 409 or 404: the answer is withheld by a proxy on the connection.
"""

import logging
import re
import socket
import threading

import psycopg2
import pytest
from conftest import client_on, identify, rows, wait_for

from identity import create_app
from identity.config import PROJECT_ROOT
from identity.database import migrations, transaction
from identity.database.connections import close_pool, run_unit
from identity.feed.webhooks.config import WebhookConfig
from identity.feed.webhooks.deliverer import Deliverer
from identity.importing.command import _connect as import_connect


def test_only_the_transaction_module_sends_begin_commit_rollback_or_lists_conflicts():
    """Transaction control as SQL text (a string starting with BEGIN, COMMIT or ROLLBACK),
    and the errors worth a retry, live in identity/database/transaction.py alone."""
    control = re.compile(r"""(?<!["'])["'](BEGIN|COMMIT|ROLLBACK)\b""")  # not a docstring
    conflict = re.compile(r"SerializationFailure|DeadlockDetected|LockNotAvailable")
    owner = PROJECT_ROOT / "identity" / "database" / "transaction.py"
    offenders = [
        f"{path.relative_to(PROJECT_ROOT)}:{number}: {line.strip()}"
        for path in sorted((PROJECT_ROOT / "identity").rglob("*.py"))
        if path != owner
        for number, line in enumerate(path.read_text().splitlines(), 1)
        if control.search(line) or conflict.search(line)
    ]
    assert offenders == []


def service_backends(db) -> int:
    with db.cursor() as cur:
        cur.execute("SELECT count(*) FROM pg_stat_activity WHERE application_name = 'identity'")
        return cur.fetchone()[0]


def test_service_connections_keep_no_prepared_statement_and_no_setting(client, app):
    first = identify(client, {"email": "lorraine@hillvalley.edu", "phoneNumber": "123456"})
    identify(client, {"email": "mcfly@hillvalley.edu", "phoneNumber": "123456"})
    contact_id = first["primaryContactId"]
    for path in (f"/contacts/{contact_id}", f"/contacts/{contact_id}/history", "/events"):
        assert client.get(path).status_code == 200
    detach = {"email": "mcfly@hillvalley.edu"}
    assert client.post(f"/contacts/{contact_id}/detach", json=detach).status_code == 200

    def session_state(conn):
        with conn.cursor() as cur:
            cur.execute(
                "SELECT (SELECT count(*) FROM pg_prepared_statements),"
                " current_setting('statement_timeout'), current_setting('lock_timeout'),"
                " current_setting('idle_in_transaction_session_timeout')"
            )
            return cur.fetchone()

    with app.test_request_context():
        assert run_unit(session_state) == (0, "0", "0", "0")


def test_long_lived_connections_carry_keepalives_and_no_startup_options(database_url):
    settings = {
        "DATABASE_URL": database_url,
        "REQUEST_DEADLINE_S": 5,
        "STATEMENT_TIMEOUT_MS": 3000,
        "LOCK_TIMEOUT_MS": 2000,
    }
    webhooks = WebhookConfig.from_environment(
        {"WEBHOOK_URL": "http://127.0.0.1:9/", "WEBHOOK_SECRET": "s"}
    )
    deliverer = Deliverer(webhooks, settings, threading.Event())
    for conn in (deliverer._connect(), import_connect(settings)):
        parameters = conn.get_dsn_parameters()
        assert parameters.get("options", "") == ""
        assert parameters["keepalives"] == "1" and parameters["keepalives_count"] == "3"
        assert parameters["tcp_user_timeout"] == "5000"
        with conn.cursor() as cur:
            transaction.execute(cur, "SELECT current_setting('statement_timeout')")
            assert cur.fetchone() == ("3s",)  # the transaction's own
            cur.execute("SHOW statement_timeout")
            assert cur.fetchone() == ("0",)  # the session keeps the server's default
        conn.close()


@pytest.fixture
def read_only_database(db):
    """New sessions of the test database are read-only, as they are on a standby."""
    with db.cursor() as cur:
        cur.execute("ALTER DATABASE identity SET default_transaction_read_only = on")
    yield
    with db.cursor() as cur:
        cur.execute("ALTER DATABASE identity RESET default_transaction_read_only")


def test_a_read_only_node_is_a_503_and_its_connections_are_thrown_away(
    app, db, read_only_database, caplog
):
    client = app.test_client()
    # Apps of earlier tests may still hold connections: count ours as the rise above them.
    others = service_backends(db)
    with caplog.at_level(logging.WARNING, logger="identity.web.errors"):
        response = client.post("/identify", json={"email": "doc@hillvalley.edu"})

    assert response.status_code == 503, response.get_json()
    assert response.get_json()["error"]["code"] == "database_switching"
    assert response.headers["Retry-After"].isdigit()
    assert "ReadOnlySqlTransaction" in caplog.text and "hillvalley" not in caplog.text
    wait_for(lambda: service_backends(db) <= others, "the read-only connection to be closed")

    with db.cursor() as cur:  # the promotion, as the service sees it
        cur.execute("ALTER DATABASE identity RESET default_transaction_read_only")
    assert identify(client, {"email": "doc@hillvalley.edu"})["emails"] == ["doc@hillvalley.edu"]


def test_a_failed_connect_is_logged_with_libpqs_reason_without_names(database_url, caplog):
    wrong_password = psycopg2.extensions.parse_dsn(database_url) | {"password": "wrong"}
    app = create_app(
        {"TESTING": True, "DATABASE_URL": psycopg2.extensions.make_dsn(**wrong_password)}
    )
    with caplog.at_level(logging.WARNING, logger="identity.web.errors"):
        response = app.test_client().get("/readyz")
    close_pool(app)

    assert response.status_code == 503
    assert response.get_json()["error"]["code"] == "database_unreachable"
    assert "password authentication failed" in caplog.text, caplog.text
    assert 'user "postgres"' not in caplog.text and "wrong" not in caplog.text


def test_a_url_libpq_cannot_read_is_logged_without_its_pieces(caplog):
    # libpq quotes the piece it cannot read: here, a password that lost its "password=".
    app = create_app({"TESTING": True, "DATABASE_URL": "host=127.0.0.1 sekret"})
    with caplog.at_level(logging.WARNING, logger="identity.web.errors"):
        response = app.test_client().get("/readyz")
    assert response.get_json()["error"]["code"] == "database_unreachable"
    assert "invalid dsn" in caplog.text and "sekret" not in caplog.text


# --- A COMMIT whose answer is lost --------------------------------------------------------

READY_FOR_QUERY_IDLE = b"Z\x00\x00\x00\x05I"


class AnswerDroppingProxy:
    """A TCP proxy to PostgreSQL on loopback. Armed, it lets the next query string that
    contains COMMIT through, waits until the server has answered it completely (the
    ReadyForQuery message: the COMMIT is done), and then closes the client's connection
    instead of passing the answer on: a COMMIT that succeeded, whose answer was lost.

    With `starts_to_end` above 0, it ends that many of the next new connections after
    their startup message, as a server does to a backend terminated while it starts."""

    def __init__(self, host: str, port: int):
        self.target = (host, port)
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.armed = threading.Event()
        self.dropped = threading.Event()
        self.starts_to_end = 0
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            if self.starts_to_end > 0:
                self.starts_to_end -= 1
                _receive(client)  # the startup message
                _close(client)
                continue
            server = socket.create_connection(self.target)
            commit_sent = threading.Event()
            for pump in (self._upstream, self._downstream):
                threading.Thread(
                    target=pump, args=(client, server, commit_sent), daemon=True
                ).start()

    def _upstream(self, client, server, commit_sent) -> None:
        while data := _receive(client):
            if self.armed.is_set() and b"COMMIT" in data:
                self.armed.clear()
                commit_sent.set()
            server.sendall(data)
        _close(client, server)

    def _downstream(self, client, server, commit_sent) -> None:
        withheld = b""
        while data := _receive(server):
            if commit_sent.is_set():
                withheld += data
                if withheld.endswith(READY_FOR_QUERY_IDLE):
                    self.dropped.set()
                    break
                continue
            client.sendall(data)
        _close(client, server)

    def close(self) -> None:
        self.listener.close()


def _receive(sock) -> bytes:
    try:
        return sock.recv(65536)
    except OSError:
        return b""


def _close(*sockets) -> None:
    for sock in sockets:
        try:
            sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        sock.close()


@pytest.fixture
def proxy(database_url):
    parts = psycopg2.extensions.parse_dsn(database_url)
    proxy = AnswerDroppingProxy(parts["host"], int(parts["port"]))
    proxied = parts | {"host": "127.0.0.1", "port": str(proxy.port), "sslmode": "disable"}
    proxy.url = psycopg2.extensions.make_dsn(**proxied)
    yield proxy
    proxy.close()


@pytest.fixture
def proxied_client(db, proxy):
    with client_on(proxy.url) as client:
        yield client


def events_of(db, request_id: str) -> list[tuple]:
    with db.cursor() as cur:
        cur.execute(
            "SELECT kind, contactId FROM contact_event WHERE requestId = %s ORDER BY id",
            (request_id,),
        )
        return cur.fetchall()


def test_a_connection_ended_while_it_starts_is_opened_again(proxied_client, proxy):
    proxy.starts_to_end = 1
    response = proxied_client.post("/identify", json={"email": "doc@hillvalley.edu"})
    assert response.status_code == 200, response.get_json()
    assert proxy.starts_to_end == 0


def test_a_connection_ended_twice_while_it_starts_is_a_503(proxied_client, proxy, db):
    proxy.starts_to_end = 2
    response = proxied_client.post("/identify", json={"email": "doc@hillvalley.edu"})
    assert response.status_code == 503
    assert response.get_json()["error"]["code"] == "database_unreachable"
    assert rows(db) == []


def test_a_detach_whose_commit_answer_was_lost_answers_200_once_done(proxied_client, proxy, db):
    first = identify(proxied_client, {"email": "lorraine@hillvalley.edu", "phoneNumber": "123456"})
    identify(proxied_client, {"email": "mcfly@hillvalley.edu", "phoneNumber": "123456"})
    primary = first["primaryContactId"]

    proxy.armed.set()
    response = proxied_client.post(f"/contacts/{primary}/detach", json={"phoneNumber": "123456"})

    assert proxy.dropped.is_set(), "the proxy did not see the correction's COMMIT"
    assert response.status_code == 200, response.get_json()
    customers = response.get_json()["customers"]
    assert [customer["emails"] for customer in customers] == [
        ["lorraine@hillvalley.edu"],
        ["mcfly@hillvalley.edu"],
    ]
    request_id = response.headers["X-Request-Id"]
    assert [kind for kind, _ in events_of(db, request_id)].count("value_detached") == 2
    # Another request finds nothing to detach.
    again = proxied_client.post(f"/contacts/{primary}/detach", json={"phoneNumber": "123456"})
    assert again.status_code == 409


def test_an_erase_whose_commit_answer_was_lost_answers_200_once_done(proxied_client, proxy, db):
    first = identify(proxied_client, {"email": "lorraine@hillvalley.edu", "phoneNumber": "123456"})
    second = identify(proxied_client, {"email": "mcfly@hillvalley.edu", "phoneNumber": "123456"})
    secondary = second["secondaryContactIds"][0]

    proxy.armed.set()
    response = proxied_client.delete(f"/contacts/{secondary}")

    assert proxy.dropped.is_set(), "the proxy did not see the erase's COMMIT"
    assert response.status_code == 200, response.get_json()
    erased = {"primaryContactId": first["primaryContactId"], "contactIds": [1, 2]}
    assert response.get_json() == {"erased": erased}
    request_id = response.headers["X-Request-Id"]
    assert [kind for kind, _ in events_of(db, request_id)] == ["customer_erased"]
    assert proxied_client.delete(f"/contacts/{secondary}").status_code == 404


# --- Migrations under the same retry policy ------------------------------------------------


@pytest.fixture
def fresh_database(database_url):
    """A new, empty database on the test server, dropped afterwards."""
    admin = psycopg2.connect(database_url)
    admin.autocommit = True
    with admin.cursor() as cur:
        cur.execute("DROP DATABASE IF EXISTS transactions_migrate WITH (FORCE)")
        cur.execute("CREATE DATABASE transactions_migrate")
    yield psycopg2.extensions.make_dsn(database_url, dbname="transactions_migrate")
    with admin.cursor() as cur:
        cur.execute("DROP DATABASE transactions_migrate WITH (FORCE)")
    admin.close()


def test_a_migration_blocked_by_a_lock_is_retried_then_refused_with_a_reason(
    fresh_database, tmp_path, monkeypatch
):
    """Its lock waits are short and retried, so requests never queue behind it for long;
    when the lock stays taken, init-db stops with a message, and a later run succeeds."""
    monkeypatch.setattr(migrations, "MIGRATION_LIMITS", transaction.Limits(0, 100, 0))
    monkeypatch.setattr(migrations, "MIGRATION_RETRIES", 2)
    (tmp_path / "001_table.sql").write_text("CREATE TABLE held (id integer, note text);")
    migrations.migrate(fresh_database, tmp_path)
    (tmp_path / "002_column.sql").write_text("ALTER TABLE held ADD COLUMN since date;")
    holder = psycopg2.connect(fresh_database)
    with holder.cursor() as cur:  # a long transaction that has read the table
        cur.execute("SELECT * FROM held")
    try:
        with pytest.raises(migrations.MigrationError) as refused:
            migrations.migrate(fresh_database, tmp_path)
    finally:
        holder.rollback()
    assert "002_column.sql could not get its locks in 3 attempts" in str(refused.value)
    assert migrations.migrate(fresh_database, tmp_path).applied == ["002_column.sql"]
    holder.close()


def test_the_import_says_why_it_cannot_connect(database_url, tmp_path):
    orders = tmp_path / "orders.csv"
    orders.write_text("email,phoneNumber,createdAt\na@x.io,1,2024-01-01\n")
    wrong_password = psycopg2.extensions.parse_dsn(database_url) | {"password": "wrong"}
    app = create_app({"DATABASE_URL": psycopg2.extensions.make_dsn(**wrong_password)})

    result = app.test_cli_runner().invoke(args=["import", str(orders)])

    assert result.exit_code == 2
    assert "password authentication failed" in result.output, result.output
    assert 'user "postgres"' not in result.output and "wrong" not in result.output
