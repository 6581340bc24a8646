"""Several worker processes on one port (`python wsgi.py` with WORKERS=2).

- Every worker accepts connections on the one port, and a burst of connections is shared
  evenly; a frozen worker does not hold the others back.
- A killed worker is replaced, counted and logged, and requests keep succeeding.
- /metrics, whichever worker answers, counts every request of every worker exactly once.
- SIGTERM drains every worker: requests held on a database lock in each worker still get
  their 200, new connections are refused meanwhile, and the supervisor exits 0.
"""

import http.client
import os
import re
import signal
import tempfile
import threading
import time
from pathlib import Path

import psycopg2
import pytest
from conftest import wait_for
from servers import (
    ServerProcess,
    answer_from_every_worker,
    connections_per_worker,
    post_identify,
)

from identity.process.balance import BoardSlot

TIMEOUT_S = 30


def connect(server) -> http.client.HTTPConnection:
    connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=TIMEOUT_S)
    connection.connect()
    return connection


def identify_on_new_connection(server, body: dict) -> tuple[int, int]:
    """POST /identify on a fresh connection: (status, pid of the worker that answered)."""
    connection = connect(server)
    try:
        status = post_identify(connection, body)[0]
        return status, server.serving_pid(connection.sock)
    finally:
        connection.close()


def scrape(server) -> str:
    connection = connect(server)
    try:
        connection.request("GET", "/metrics")
        return connection.getresponse().read().decode()
    finally:
        connection.close()


def sample(text: str, name: str, **labels) -> float:
    wanted = ",".join(f'{key}="{value}"' for key, value in labels.items())
    pattern = (
        rf"^{re.escape(name)}(?:\{{{re.escape(wanted)}\}})? (\S+)$"
        if wanted
        else rf"^{name} (\S+)$"
    )
    found = re.findall(pattern, text, re.M)
    return float(found[0]) if found else 0.0


@pytest.fixture
def two_workers(db, database_url):
    with tempfile.TemporaryFile() as log:
        with ServerProcess(database_url, WORKERS=2, stderr=log) as server:
            server.wait_for_workers(2)
            server.log = log
            yield server


def test_several_workers_answer_on_one_port(two_workers):
    workers = two_workers.wait_for_workers(2)
    _, answered = answer_from_every_worker(two_workers, workers)
    assert len(answered) == 2


def test_a_burst_of_connections_is_shared_evenly_by_the_workers(db, database_url):
    """Keep-alive connections stay with the worker that accepted them: if the worker that
    runs first took a whole burst, it would serve alone while the others idle. A worker
    accepts only while no live sibling holds fewer connections (balance.py)."""
    with ServerProcess(database_url, WORKERS=4) as server:
        # At once after the start too: the workers that run first leave the others a share.
        server.wait_for_workers(4)
        spreads = []
        for _ in range(5):
            spreads.append(connections_per_worker(server, 16))
            wait_for(lambda: _open_client_connections(server) == 0, "closed connections' end")
    assert all(spread[0] - spread[-1] <= 1 for spread in spreads), spreads


def _open_client_connections(server) -> int:
    """Accepted connections the workers have not closed yet (ESTABLISHED, CLOSE_WAIT)."""
    lines = Path("/proc/net/tcp").read_text().splitlines()[1:]
    return sum(
        int(fields[1].split(":")[1], 16) == server.port and fields[3] in ("01", "08")
        for fields in (line.split() for line in lines)
    )


def test_a_frozen_worker_does_not_hold_back_its_siblings(db, database_url):
    """Its slot on the board goes stale: the others accept as if it were not there."""
    with ServerProcess(database_url, WORKERS=2, WORKER_TIMEOUT_S=600) as server:
        frozen, survivor = server.wait_for_workers(2)
        answer_from_every_worker(server, [frozen, survivor])
        os.kill(frozen, signal.SIGSTOP)
        try:
            assert connections_per_worker(server, 8) == [8, 0]
        finally:
            os.kill(frozen, signal.SIGCONT)


def test_a_sibling_that_writes_its_slot_but_never_accepts_only_delays_connections(
    db, database_url
):
    """A worker may stay live on the board and yet not accept (out of file descriptors,
    say): a held-back sibling looks at the listening socket once a second and takes a
    connection that still waits 10 ms later, then one every 10 ms while they wait."""
    with ServerProcess(database_url, WORKERS=2, WORKER_TIMEOUT_S=600) as server:
        stuck, survivor = server.wait_for_workers(2)
        answer_from_every_worker(server, [stuck, survivor])
        board = BoardSlot(*_board_of(stuck))
        os.kill(stuck, signal.SIGSTOP)
        writing = threading.Event()

        def write_a_live_empty_slot():
            while not writing.wait(0.1):
                board.may_accept(0)

        writer = threading.Thread(target=write_a_live_empty_slot)
        writer.start()
        try:
            started = time.monotonic()
            assert connections_per_worker(server, 6) == [6, 0]
            waited = time.monotonic() - started
        finally:
            writing.set()
            writer.join()
            os.kill(stuck, signal.SIGCONT)
    assert waited < 15


def _board_of(worker: int) -> tuple[str, int]:
    """The worker's board file and slot, from its environment."""
    with open(f"/proc/{worker}/environ", "rb") as environ:
        entries = dict(
            entry.split(b"=", 1) for entry in environ.read().split(b"\0") if b"=" in entry
        )
    return entries[b"IDENTITY_BOARD_FILE"].decode(), int(entries[b"IDENTITY_BOARD_SLOT"])


def test_a_killed_worker_is_replaced_and_requests_keep_succeeding(two_workers):
    victim, survivor = two_workers.wait_for_workers(2)
    os.kill(victim, signal.SIGKILL)
    # While the victim is gone, the shared listening socket keeps every new connection
    # for the survivor (and, soon, the replacement).
    statuses = [
        identify_on_new_connection(two_workers, {"email": f"k{n}@x.io"})[0] for n in range(20)
    ]
    assert statuses == [200] * 20
    wait_for(lambda: len(set(two_workers.worker_pids()) - {victim}) == 2, "a replacement worker")
    replacement = (set(two_workers.worker_pids()) - {survivor, victim}).pop()
    sent, answered = answer_from_every_worker(two_workers, [survivor, replacement])
    assert answered == {survivor, replacement}
    assert sample(scrape(two_workers), "identity_worker_restarts_total") == 1
    two_workers.log.seek(0)
    assert b"worker exited unexpectedly; replacing it" in two_workers.log.read()


def test_metrics_count_every_request_once_whichever_worker_answers(two_workers):
    workers = two_workers.wait_for_workers(2)
    sent, _ = answer_from_every_worker(two_workers, workers)
    identify = dict(method="POST", route="/identify", status="200")
    metrics = dict(method="GET", route="/metrics", status="200")
    count = "identity_http_request_duration_seconds_count"
    for scraped in range(10):  # fresh connections: both workers answer some of these
        text = scrape(two_workers)
        assert sample(text, count, **identify) == sent
        assert sample(text, count, **metrics) == scraped  # earlier scrapes, not this one
        assert sample(text, "identity_identify_outcomes_total", outcome="new_customer") == sent
        assert sample(text, "identity_http_requests_in_flight") == 1  # this scrape
        assert sample(text, "identity_db_pool_size") == 2 * 2  # WORKERS x POOL_SIZE (THREADS)


class HeldRequest:
    """A checkout on its own connection, sent from a thread; remembers its worker."""

    def __init__(self, server, n: int):
        self.connection = connect(server)
        self.pid = server.serving_pid(self.connection.sock)
        self.result: list = []
        self.thread = threading.Thread(
            target=lambda: self.result.append(
                post_identify(self.connection, {"email": f"h{n}@x.io"})
            )
        )
        self.thread.start()


def _waiting_on_lock(database_url: str) -> int:
    conn = psycopg2.connect(database_url)
    try:
        with conn.cursor() as cur:
            cur.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' "
                "AND application_name = 'identity'"
            )
            return cur.fetchone()[0]
    finally:
        conn.close()


def _accepts_connections(port: int) -> bool:
    try:
        http.client.HTTPConnection("127.0.0.1", port, timeout=1).connect()
        return True
    except OSError:
        return False


def test_sigterm_drains_every_worker(db, database_url):
    # 16 threads a worker: held requests never fill one worker's threads before the
    # connections have reached both.
    server = ServerProcess(database_url, WORKERS=2, THREADS=16, LOCK_TIMEOUT_MS=30000)
    blocker = psycopg2.connect(database_url)
    held: list[HeldRequest] = []
    try:
        workers = server.wait_for_workers(2)
        with blocker.cursor() as cur:  # every write waits for this lock; reads do not
            cur.execute("LOCK TABLE contact IN EXCLUSIVE MODE")
        while {request.pid for request in held} != set(workers):
            assert len(held) < 50, "the connections never reached both workers"
            held.append(HeldRequest(server, len(held)))
            wait_for(lambda: _waiting_on_lock(database_url) == len(held), "the request to wait")

        server.process.terminate()  # SIGTERM to the supervisor
        wait_for(lambda: not _accepts_connections(server.port), "new connections to be refused")
        assert server.process.poll() is None, "exited with requests in flight"
        assert all(pid in server.worker_pids() for pid in workers)

        blocker.commit()  # the held requests go on
        for request in held:
            request.thread.join(TIMEOUT_S)
            assert request.result and request.result[0][0] == 200
        assert server.process.wait(TIMEOUT_S) == 0
    finally:
        blocker.close()
        for request in held:
            request.connection.close()
        if server.process.poll() is None:
            server.stop()
