"""One deadline per request (REQUEST_DEADLINE_S), enforced on the client side.

Whatever the database does — its backends frozen, a lock held elsewhere, a server that
accepts connections and never answers — a request gets its 503 within the deadline,
with Retry-After and a code that says which, and the service recovers by itself.
The tests use a short deadline; each allows it a generous 2 s more, for a loaded machine.
"""

import http.client
import logging
import os
import signal
import socket
import threading
import time

import psycopg2
import pytest
from conftest import identify, wait_for
from servers import ServerProcess

from identity import create_app
from identity.config import PROJECT_ROOT
from identity.database import transaction
from identity.database.connections import close_pool, pool_of, run_unit
from identity.database.migrations import migrate
from identity.database.pool import Pool, ServiceConnection
from identity.dev.embedded import EmbeddedPostgres
from identity.web.metrics import Metrics

DEADLINE_S = 1
SLACK_S = 2


def timed(call):
    started = time.monotonic()
    response = call()
    return response, time.monotonic() - started


def assert_503(response, elapsed, code, deadline_s=DEADLINE_S):
    assert response.status_code == 503, response.get_data()
    assert response.get_json()["error"]["code"] == code
    assert response.headers["Retry-After"].isdigit()
    assert elapsed < deadline_s + SLACK_S


@pytest.fixture
def private_database():
    """A database of this test's own, whose processes the test may freeze."""
    with EmbeddedPostgres() as server:
        migrate(server.url, PROJECT_ROOT / "sql")
        yield server


def _signal_all(pids, signum) -> None:
    for pid in pids:
        try:
            os.kill(pid, signum)
        except ProcessLookupError:
            pass


def test_frozen_database_processes_get_a_503_within_the_deadline_and_recover(private_database):
    """SIGSTOP on the backends of the pool's connections and on the postmaster: pooled
    connections never answer and new ones never finish connecting."""
    app = create_app(
        {
            "TESTING": True,
            "DATABASE_URL": private_database.url,
            "POOL_SIZE": 2,
            "REQUEST_DEADLINE_S": DEADLINE_S,
        }
    )
    monitor = psycopg2.connect(private_database.url, application_name="monitor")
    monitor.autocommit = True
    pool = pool_of(app)
    warm = [pool.checkout(time.monotonic() + 30) for _ in range(2)]
    for conn in warm:
        pool.give_back(conn, broken=False)
    with monitor.cursor() as cur:
        cur.execute("SELECT pid FROM pg_stat_activity WHERE application_name = 'identity'")
        backends = [pid for (pid,) in cur.fetchall()]
    assert len(backends) == 2
    postmaster = int((private_database.data_dir / "postmaster.pid").read_text().split()[0])
    frozen = backends + [postmaster]
    answers = {}
    try:
        _signal_all(frozen, signal.SIGSTOP)
        # Both pooled connections are taken at once: each waits on a frozen backend.
        checkout = threading.Thread(
            target=lambda: answers.update(
                checkout=timed(
                    lambda: app.test_client().post("/identify", json={"email": "a@x.io"})
                )
            )
        )
        ready = threading.Thread(
            target=lambda: answers.update(ready=timed(lambda: app.test_client().get("/readyz")))
        )
        checkout.start()
        ready.start()
        checkout.join(30)
        ready.join(30)
        # The pool is empty now: the next request connects anew, to a frozen postmaster.
        answers["new_connection"] = timed(lambda: app.test_client().get("/readyz"))
    finally:
        _signal_all(frozen, signal.SIGCONT)

    for name in ("checkout", "ready", "new_connection"):
        assert_503(*answers[name], "database_not_answering")

    client = app.test_client()
    wait_for(lambda: client.get("/readyz").status_code == 200, "recovery", seconds=30)
    assert identify(client, {"email": "a@x.io"})["emails"] == ["a@x.io"]
    metrics = app.extensions["identity_metrics"].registry
    assert metrics.get_sample_value("identity_db_connections_in_use") == 0

    def identity_backends() -> int:
        with monitor.cursor() as cur:
            cur.execute("SELECT count(*) FROM pg_stat_activity WHERE application_name = 'identity'")
            return cur.fetchone()[0]

    # The frozen backends' connections were cut: once thawed they end, and the pool
    # never holds more than POOL_SIZE connections.
    wait_for(lambda: identity_backends() <= 2, "the cut connections' backends to end")
    close_pool(app)
    monitor.close()


def test_a_row_lock_held_elsewhere_is_a_503_lock_timeout_within_the_deadline(
    db, database_url, caplog
):
    """With a 3 s deadline: a first lock wait of LOCK_TIMEOUT_MS (2 s), a retry whose
    lock_timeout is cut to what the deadline leaves, then the 503."""
    deadline_s = 3
    app = create_app(
        {
            "TESTING": True,
            "DATABASE_URL": database_url,
            "POOL_SIZE": 2,
            "REQUEST_DEADLINE_S": deadline_s,
        }
    )
    client = app.test_client()
    identify(client, {"email": "lorraine@hillvalley.edu", "phoneNumber": "123456"})
    with db.cursor() as cur:  # another session holds the customer's primary
        cur.execute("BEGIN")
        cur.execute("SELECT id FROM contact WHERE id = 1 FOR UPDATE")
    try:
        with caplog.at_level(logging.WARNING, logger="identity.web.errors"):
            body = {"email": "mcfly@hillvalley.edu", "phoneNumber": "123456"}
            answer = timed(lambda: client.post("/identify", json=body))
        assert_503(*answer, "lock_timeout", deadline_s)
    finally:
        with db.cursor() as cur:
            cur.execute("ROLLBACK")

    retries = app.extensions["identity_metrics"].registry.get_sample_value(
        "identity_transaction_retries_total", {"cause": "LockNotAvailable"}
    )
    assert retries >= 1
    warnings = [record for record in caplog.records if record.levelno == logging.WARNING]
    assert len(warnings) == 1 and "lock_timeout" in warnings[0].getMessage()
    assert "hillvalley" not in caplog.text and "123456" not in caplog.text
    # The lock is gone: the same write goes through.
    assert identify(client, body)["emails"] == ["lorraine@hillvalley.edu", "mcfly@hillvalley.edu"]
    close_pool(app)


@pytest.fixture
def silent_database():
    """A listening socket on 127.0.0.1 that accepts connections and never answers."""
    listener = socket.create_server(("127.0.0.1", 0), backlog=64)
    yield f"postgresql://identity@127.0.0.1:{listener.getsockname()[1]}/identity"
    listener.close()


def test_a_database_that_never_answers_gives_8_concurrent_requests_their_503_in_time(
    silent_database,
):
    """Connecting happens under no shared lock: eight requests wait side by side."""
    service = ServerProcess(
        silent_database, THREADS=8, POOL_SIZE=8, REQUEST_DEADLINE_S=DEADLINE_S
    )
    start = threading.Barrier(8)
    answers = []

    def checkout(n: int) -> None:
        connection = http.client.HTTPConnection("127.0.0.1", service.port, timeout=30)
        start.wait()
        started = time.monotonic()
        body = f'{{"email": "c{n}@x.io"}}'
        connection.request("POST", "/identify", body, {"Content-Type": "application/json"})
        response = connection.getresponse()
        answers.append((response, response.read(), time.monotonic() - started))
        connection.close()

    try:
        threads = [threading.Thread(target=checkout, args=(n,)) for n in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(30)
    finally:
        service.stop()
    assert len(answers) == 8
    for response, body, elapsed in answers:
        assert response.status == 503 and b'"database_not_answering"' in body
        assert response.getheader("Retry-After").isdigit()
        assert elapsed < DEADLINE_S + SLACK_S


def test_a_failed_connect_of_any_kind_gives_its_pool_slot_back(database_url):
    """psycopg2 refuses an invalid connection string with InternalError, not the
    OperationalError of a database that cannot be reached."""
    pool = Pool(
        lambda: ServiceConnection(database_url + "?no_such_option=1"), 1, Metrics(1).pool_waiting
    )
    for _ in range(3):  # a leaked slot would make the second checkout wait and fail
        with pytest.raises(psycopg2.Error) as raised:
            pool.checkout(time.monotonic() + 5)
        assert not isinstance(raised.value, psycopg2.OperationalError)
    pool.close()


def test_service_connections_carry_keepalives_and_timeouts_from_the_deadline(app):
    """Deadline 5 s (the default): its safety margin is 1 s. Keepalives and the user
    timeout are libpq parameters; the timeouts belong to each transaction, and the session
    keeps the server's defaults: no startup options, nothing a pooler's next client would
    inherit."""
    names = ("idle_in_transaction_session_timeout", "lock_timeout", "statement_timeout", "jit")

    def settings(cur) -> dict:
        values = {}
        for name in names:
            cur.execute(f"SHOW {name}")
            values[name] = cur.fetchone()[0]
        return values

    def inside_and_after(conn):
        with conn.cursor() as cur:
            transaction.begin(cur)
            inside = settings(cur)
            transaction.commit(cur)
            return inside, settings(cur), conn.get_dsn_parameters()

    with app.test_request_context():
        inside, after, parameters = run_unit(inside_and_after)
    assert parameters.get("options", "") == ""
    assert parameters["keepalives"] == "1" and parameters["keepalives_idle"] == "5"
    assert parameters["keepalives_count"] == "3" and parameters["tcp_user_timeout"] == "5000"
    assert inside["lock_timeout"] == "2s"  # LOCK_TIMEOUT_MS, well within the deadline
    assert inside["idle_in_transaction_session_timeout"] == "5s"
    assert inside["jit"] == "off"
    # Half a margin before the deadline, less the moments the request has already used.
    assert 4000 <= int(inside["statement_timeout"].removesuffix("ms")) <= 4500
    assert after == {
        "idle_in_transaction_session_timeout": "0",
        "lock_timeout": "0",
        "statement_timeout": "0",
        "jit": "on",  # the server's default
    }


def test_an_unreachable_database_is_a_503_database_unreachable():
    app = create_app(
        {"TESTING": True, "DATABASE_URL": "postgresql://identity@127.0.0.1:1/identity"}
    )
    assert_503(*timed(lambda: app.test_client().get("/readyz")), "database_unreachable")
