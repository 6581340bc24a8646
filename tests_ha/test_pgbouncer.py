"""The service behind PgBouncer 1.18 in transaction pooling mode, stock settings otherwise:
migrations, a concurrent load of racing checkouts, the audit, the feed, two deliverers for
one subscriber, and no session state left behind on the pooled server connections."""

import os
import signal
import subprocess
import sys
import tempfile
import threading
from collections import Counter

import psycopg2
import pytest
from clusters import DATABASE, Cluster, PgBouncer
from conftest import MEASURED, PROJECT_ROOT, PROXY_VARIABLES, flask_command, wait_until
from load import Client, Receiver, feed_ids, racing_checkouts
from servers import ServerProcess, _stop_with_parent

from identity.feed.repository import FEED_SOURCE_KINDS

THREADS = 16
CHECKOUTS = 2400
LEASE_S = 6
# Settings the service might leave behind on a server connection it used.
SESSION_SETTINGS = [
    "statement_timeout",
    "lock_timeout",
    "idle_in_transaction_session_timeout",
    "jit",
    "plan_cache_mode",
]


@pytest.fixture(scope="module")
def cluster(account, folder):
    cluster = Cluster.create(account, folder, "primary")
    cluster.start()
    cluster.query(f"CREATE DATABASE {DATABASE}", dbname="postgres")
    yield cluster
    cluster.stop()


@pytest.fixture(scope="module")
def bouncer(account, folder, cluster):
    bouncer = PgBouncer(account, folder, cluster)
    yield bouncer
    bouncer.stop()


@pytest.fixture(scope="module")
def first_init_db(bouncer):
    return flask_command(bouncer.url(), "init-db")


@pytest.fixture(scope="module")
def service(bouncer, first_init_db, folder):
    assert first_init_db.returncode == 0, first_init_db.stderr
    with open(folder / "service.log", "ab") as log:
        server = ServerProcess(bouncer.url(), WORKERS=2, stderr=log)
    yield server
    server.stop()


class Deliverer:
    """`flask --app identity deliver` for the subscriber `default`, through the pooler."""

    def __init__(self, database_url: str, receiver: Receiver):
        env = {k: v for k, v in os.environ.items() if k.lower() not in PROXY_VARIABLES}
        env.update(
            DATABASE_URL=database_url,
            LOG_LEVEL="INFO",
            WEBHOOK_URL=receiver.url,
            WEBHOOK_SECRET="ha-test-secret",
            WEBHOOK_BATCH_SIZE="50",
            WEBHOOK_POLL_S="0.05",
            # A short lease: a successor takes over within LEASE_S of a kill.
            WEBHOOK_TIMEOUT_S=str(LEASE_S / 3),
            WEBHOOK_LEASE_S=str(LEASE_S),
        )
        self.log = tempfile.TemporaryFile()
        self.process = subprocess.Popen(
            [sys.executable, "-m", "flask", "--app", "identity", "deliver"],
            env=env,
            cwd=PROJECT_ROOT,
            stderr=self.log,
            preexec_fn=_stop_with_parent,
        )

    def log_text(self) -> str:
        self.log.seek(0)
        return self.log.read().decode()

    def stop(self) -> int:
        self.process.send_signal(signal.SIGTERM)
        return self.process.wait(60)


@pytest.fixture(scope="module")
def receiver():
    receiver = Receiver()
    yield receiver
    receiver.close()


@pytest.fixture(scope="module")
def deliverers(bouncer, service, receiver):
    pair = [Deliverer(bouncer.url(), receiver), Deliverer(bouncer.url(), receiver)]
    yield pair
    for deliverer in pair:
        if deliverer.process.poll() is None:
            deliverer.process.kill()


@pytest.fixture(scope="module")
def load(service, deliverers) -> Counter:
    """Racing checkouts from THREADS clients at once, while both deliverers run; the
    count of answers by status (None: no answer)."""
    bodies = racing_checkouts(CHECKOUTS, seed=23)
    statuses: Counter = Counter()
    lock = threading.Lock()

    def send(share: list[dict]) -> None:
        client = Client(service.port)
        seen = Counter(client.request("POST", "/identify", body)[0] for body in share)
        client.close()
        with lock:
            statuses.update(seen)

    threads = [threading.Thread(target=send, args=(bodies[n::THREADS],)) for n in range(THREADS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(300)
    return statuses


def feed_order(cluster: Cluster) -> list[int]:
    return [
        row[0]
        for row in cluster.query(
            "SELECT id FROM contact_event WHERE kind = ANY(%s) ORDER BY txid, id",
            (FEED_SOURCE_KINDS,),
        )
    ]


def advisory_locks(cluster: Cluster) -> int:
    return cluster.query("SELECT count(*) FROM pg_locks WHERE locktype = 'advisory'")[0][0]


def test_init_db_runs_twice_through_the_pooler(first_init_db, bouncer, cluster):
    assert first_init_db.returncode == 0, first_init_db.stderr
    assert "applied 001_contact.sql" in first_init_db.stdout
    second = flask_command(bouncer.url(), "init-db", timeout_s=60)
    assert second.returncode == 0, second.stderr
    assert "0 applied now" in second.stdout
    assert advisory_locks(cluster) == 0  # no migration lock left on a pooled connection


def test_racing_checkouts_through_the_pooler_all_succeed(load):
    errors = sum(count for status, count in load.items() if status != 200)
    MEASURED.append(
        f"PgBouncer 1.18, transaction mode: {sum(load.values())} racing checkouts from "
        f"{THREADS} clients, errors (non-2xx or no answer): {errors} {dict(load)}"
    )
    assert load == {200: CHECKOUTS}


def test_the_audit_through_the_pooler_finds_no_violation(load, bouncer):
    audit = flask_command(bouncer.url(), "audit")
    assert audit.returncode == 0, audit.stdout + audit.stderr
    assert "no violations" in audit.stdout


def test_a_feed_consumer_through_the_pooler_sees_every_event_once(load, service, cluster):
    ids, _ = feed_ids(Client(service.port))
    assert ids == feed_order(cluster)
    assert len(ids) > CHECKOUTS / 10


def test_of_two_deliverers_for_one_subscriber_only_one_delivers(
    load, service, deliverers, receiver, cluster
):
    events = feed_order(cluster)
    wait_until(lambda: set(receiver.deliveries) == set(events), "every event delivered", 120)
    twice = sum(1 for count in receiver.deliveries.values() if count > 1)
    logs = [deliverer.log_text() for deliverer in deliverers]
    assert sorted('"delivering"' in log for log in logs) == [False, True], logs
    assert any("another deliverer is active" in log for log in logs)

    # The active one dies: no session outlives it on the pooler's side, the lease expires,
    # and the other takes over from the cursor.
    active, waiting = sorted(deliverers, key=lambda d: '"delivering"' in d.log_text())[::-1]
    active.process.kill()
    client = Client(service.port)
    assert [
        client.request("POST", "/identify", {"email": f"late{n}@x.io"})[0] for n in range(5)
    ] == [200] * 5
    events = feed_order(cluster)
    wait_until(lambda: set(receiver.deliveries) == set(events), "the successor to deliver", 60)
    assert '"delivering"' in waiting.log_text()
    assert waiting.stop() == 0
    MEASURED.append(
        f"two deliverers for one subscriber through PgBouncer: {len(events)} events, "
        f"{receiver.requests} requests, delivered twice before the active one was killed: "
        f"{twice}, most requests in flight at once: {receiver.most_in_flight}; the other "
        "took over after the kill"
    )
    assert twice == 0 and receiver.most_in_flight == 1
    assert advisory_locks(cluster) == 0


def test_no_session_state_outlives_a_transaction(load, bouncer, cluster):
    """Every server connection the pooler holds, each taken by a transaction of ours, has
    the settings a fresh direct connection has, and no prepared statement."""
    direct = psycopg2.connect(cluster.url())
    fresh = _session_state(direct)
    direct.close()
    fresh.pop("backend")
    held, states = [], []
    try:
        for _ in range(20):  # PgBouncer's default_pool_size: every server connection
            held.append(psycopg2.connect(bouncer.url()))
            states.append(_session_state(held[-1]))
        assert len({state.pop("backend") for state in states}) == 20
        assert states == [{**fresh, "prepared": 0}] * 20
    finally:
        for conn in held:
            conn.close()


def _session_state(conn) -> dict:
    """Settings, prepared statements and backend, read in a transaction left open: the
    pooler keeps the server connection ours until it ends."""
    with conn.cursor() as cur:
        cur.execute(
            "SELECT name, setting FROM pg_settings WHERE name = ANY(%s)", (SESSION_SETTINGS,)
        )
        state = dict(cur.fetchall())
        cur.execute("SELECT count(*), pg_backend_pid() FROM pg_prepared_statements")
        state["prepared"], state["backend"] = cur.fetchone()
        return state
