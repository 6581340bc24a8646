"""Database trouble and shutdown, against real server processes.

- The database stops in the middle of traffic: /identify answers 503 with Retry-After,
  quickly; when the database is back the service recovers without a restart, no
  acknowledged checkout is lost and SPEC §6 still holds.
- SIGTERM: new connections are refused, the request in flight finishes, the process
  exits cleanly.
"""

import http.client
import threading
import time

import psycopg2
import pytest
from conftest import wait_for
from servers import ServerProcess, post_identify

from identity.config import PROJECT_ROOT
from identity.customers.audit import find_violations
from identity.database.migrations import migrate
from identity.dev.embedded import EmbeddedPostgres

DEADLINE_S = 30


def post(port: int, body: dict) -> tuple[int, dict, dict]:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=DEADLINE_S)
    try:
        return post_identify(connection, body)
    finally:
        connection.close()


class Traffic:
    """A thread posting new checkouts, one after another, recording each answer."""

    def __init__(self, port: int):
        self.port, self.results, self.stopping = port, [], threading.Event()
        self.thread = threading.Thread(target=self._run)
        self.thread.start()

    def _run(self) -> None:
        n = 0
        while not self.stopping.is_set():
            n += 1
            body = {"email": f"t{n}@x.io", "phoneNumber": str(n if n % 3 else n - 1)}
            started = time.monotonic()
            status, headers, _ = post(self.port, body)
            self.results.append((body, status, headers, time.monotonic() - started))

    def count(self, status: int) -> int:
        return sum(1 for result in list(self.results) if result[1] == status)

    def stop(self) -> list:
        self.stopping.set()
        self.thread.join(DEADLINE_S)
        return self.results


@pytest.fixture
def private_database():
    """A database of this test's own, which the test may stop and start."""
    with EmbeddedPostgres() as server:
        migrate(server.url, PROJECT_ROOT / "sql")
        yield server


def test_database_restart_in_the_middle_of_traffic(private_database):
    service = ServerProcess(private_database.url, REQUEST_DEADLINE_S=2)
    try:
        traffic = Traffic(service.port)
        wait_for(lambda: traffic.count(200) >= 20, "traffic to flow")
        private_database.stop()
        wait_for(lambda: traffic.count(503) >= 20, "503 answers while the database is down")
        ok_before_restart = traffic.count(200)
        private_database.start()
        wait_for(lambda: traffic.count(200) >= ok_before_restart + 20, "recovery")
        results = traffic.stop()
    finally:
        service.stop()

    assert {status for _, status, _, _ in results} == {200, 503}
    for _, status, headers, elapsed in results:
        if status == 503:
            assert headers["Retry-After"].isdigit()
            assert elapsed < 5
    conn = psycopg2.connect(private_database.url)
    try:
        assert find_violations(conn) == []
        with conn.cursor() as cur:
            cur.execute("SELECT email FROM contact")
            stored = {email for (email,) in cur.fetchall()}
    finally:
        conn.close()
    acknowledged = {body["email"] for body, status, _, _ in results if status == 200}
    assert acknowledged <= stored


def test_terminated_backends_are_replaced_without_a_failed_request(private_database):
    """pg_terminate_backend on every service connection, again and again (what a
    failover or a DBA does to them): each request runs again on a new connection."""
    service = ServerProcess(private_database.url, REQUEST_DEADLINE_S=5)
    admin = psycopg2.connect(private_database.url)
    admin.autocommit = True
    terminated = 0
    try:
        traffic = Traffic(service.port)
        for round_ in range(1, 11):
            target = 5 * round_
            wait_for(lambda: traffic.count(200) >= target, "traffic to flow")  # noqa: B023
            with admin.cursor() as cur:
                cur.execute(
                    "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity"
                    " WHERE application_name = 'identity'"
                )
                terminated += cur.fetchone()[0]
        results = traffic.stop()
        assert find_violations(admin) == []
    finally:
        admin.close()
        service.stop()

    assert terminated >= 10
    assert {status for _, status, _, _ in results} == {200}, [r[1] for r in results]


def test_sigterm_finishes_the_request_in_flight_and_refuses_new_ones(private_database):
    # One worker: the kept-alive connection and the request in flight share its drain
    # (tests/test_workers.py drains several).
    service = ServerProcess(
        private_database.url, WORKERS=1, LOCK_TIMEOUT_MS=30000, REQUEST_DEADLINE_S=60
    )
    blocker = psycopg2.connect(private_database.url)
    try:
        assert post(service.port, {"email": "a@x.io", "phoneNumber": "1"})[0] == 200
        idle = http.client.HTTPConnection("127.0.0.1", service.port, timeout=DEADLINE_S)
        idle.request("GET", "/healthz")  # a keep-alive connection, open during the drain
        first = idle.getresponse()
        assert first.status == 200 and first.read()
        with blocker.cursor() as cur:  # hold the customer's primary: writes to it wait
            cur.execute("SELECT id FROM contact WHERE email = 'a@x.io' FOR UPDATE")
        in_flight: list = []
        request = threading.Thread(
            target=lambda: in_flight.append(
                post(service.port, {"email": "a@x.io", "phoneNumber": "2"})
            )
        )
        request.start()
        wait_for(lambda: _waiting_on_lock(private_database.url), "the request to wait for the lock")

        service.process.terminate()  # SIGTERM
        wait_for(lambda: not _accepts_connections(service.port), "new connections to be refused")
        assert service.process.poll() is None, "exited with a request in flight"
        # SPEC §7: a 503 with Retry-After, and the connection closes, so that the
        # client's next request goes elsewhere.
        idle.request("GET", "/healthz")
        answer = idle.getresponse()
        assert answer.status == 503 and b"shutting_down" in answer.read()
        assert answer.getheader("Connection") == "close" and answer.getheader("Retry-After")

        blocker.commit()  # let the request in flight finish
        request.join(DEADLINE_S)
        assert in_flight and in_flight[0][0] == 200
        assert in_flight[0][2]["contact"]["phoneNumbers"] == ["1", "2"]
        assert service.process.wait(DEADLINE_S) == 0
    finally:
        blocker.close()
        if service.process.poll() is None:
            service.stop()


def _waiting_on_lock(database_url: str) -> bool:
    # A connection of its own: within one transaction pg_stat_activity would not change.
    conn = psycopg2.connect(database_url)
    try:
        with conn.cursor() as cur:
            cur.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' "
                "AND application_name = 'identity'"
            )
            return cur.fetchone()[0] == 1
    finally:
        conn.close()


def _accepts_connections(port: int) -> bool:
    try:
        http.client.HTTPConnection("127.0.0.1", port, timeout=1).connect()
        return True
    except OSError:
        return False

