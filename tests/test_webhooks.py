"""The webhook deliverer against a real HTTP receiver on 127.0.0.1: signed batches, in
feed order, at least once, never a gap, even when killed with SIGKILL at random moments;
one active deliverer per subscriber; a graceful stop on SIGTERM."""

import hashlib
import hmac
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from conftest import identify, wait_for
from prometheus_client.parser import text_string_to_metric_families
from servers import PROJECT_ROOT

from identity.feed.repository import FEED_SOURCE_KINDS
from identity.feed.webhooks.config import ConfigError, WebhookConfig
from identity.feed.webhooks.deliverer import backoff_s

SECRET = "test-secret-not-for-production"
# The deliverer's answer timeout in these tests; a stalling receiver outwaits it.
TIMEOUT_S = 0.5
# The deliverers' lease: how long a successor waits after a deliverer was killed.
LEASE_S = 3 * TIMEOUT_S
PROXY_VARIABLES = {"http_proxy", "https_proxy", "all_proxy", "no_proxy"}
PERSONAL_KEYS = {"email", "phoneNumber", "emails", "phoneNumbers"}


class Receiver:
    """A subscriber's endpoint that checks every signature on its own (not with the
    deliverer's code) and, with the given odds, answers 500 or stalls past the timeout."""

    def __init__(
        self,
        failure_odds: float = 0.0,
        stall_odds: float = 0.0,
        seed: int = 1,
        subscriber: str = "default",
    ):
        self.failure_odds, self.stall_odds = failure_odds, stall_odds
        self.subscriber = subscriber
        self.random = random.Random(seed)
        self.lock = threading.Lock()
        self.accepted: list[list[int]] = []  # the event ids of every batch answered 2xx
        self.requests = self.failures = self.stalls = self.bad_signatures = 0
        self.personal_values = 0  # bodies with an "@" or a member named like a value
        # Called once after the next batch is taken and before the 2xx goes out.
        self.before_next_answer = None
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers["Content-Length"]))
                status = receiver.answer(self.headers.get("X-Identity-Signature", ""), body)
                try:
                    self.send_response(status)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                except OSError:
                    pass  # the deliverer gave up waiting, or was killed

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_port}/hooks/identity"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def signed(self, header: str, body: bytes) -> bool:
        """A recent signature of the body, and a body that names this receiver's own
        subscriber, as docs/feed.md shows."""
        parts = dict(part.split("=", 1) for part in header.split(",") if "=" in part)
        signed = f"{parts.get('t')}.".encode() + body
        expected = hmac.new(SECRET.encode(), signed, hashlib.sha256)
        recent = abs(time.time() - int(parts.get("t", "0"))) < 300
        genuine = hmac.compare_digest(expected.hexdigest(), parts.get("v1", ""))
        return recent and genuine and json.loads(body).get("subscriber") == self.subscriber

    def answer(self, header: str, body: bytes) -> int:
        with self.lock:
            self.requests += 1
            if not self.signed(header, body):
                self.bad_signatures += 1
                return 401
            events = json.loads(body)["events"]
            if b"@" in body or any(PERSONAL_KEYS & set(event) for event in events):
                self.personal_values += 1
            draw = self.random.random()
            if draw < self.failure_odds:
                self.failures += 1
                return 500
            stall = draw < self.failure_odds + self.stall_odds
            if not stall:
                self.accepted.append([event["id"] for event in events])
                hook, self.before_next_answer = self.before_next_answer, None
                if hook:
                    hook()
                return 200
            self.stalls += 1
        time.sleep(TIMEOUT_S * 3)
        return 503

    def accepted_ids(self) -> set[int]:
        with self.lock:
            return {event_id for batch in self.accepted for event_id in batch}

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


class DelivererProcess:
    """`flask --app identity deliver` in its own process, its log in a temporary file."""

    def __init__(self, database_url: str, url: str, subscriber: str = "default"):
        env = {k: v for k, v in os.environ.items() if k.lower() not in PROXY_VARIABLES}
        env.update(
            DATABASE_URL=database_url,
            LOG_LEVEL="INFO",
            WEBHOOK_URL=url,
            WEBHOOK_SECRET=SECRET,
            WEBHOOK_SUBSCRIBER=subscriber,
            WEBHOOK_BATCH_SIZE="5",
            WEBHOOK_TIMEOUT_S=str(TIMEOUT_S),
            WEBHOOK_BACKOFF_BASE_S="0.02",
            WEBHOOK_BACKOFF_MAX_S="0.2",
            WEBHOOK_POLL_S="0.05",
            WEBHOOK_LEASE_S=str(LEASE_S),
        )
        self.log = tempfile.TemporaryFile()
        self.process = subprocess.Popen(
            [sys.executable, "-m", "flask", "--app", "identity", "deliver"],
            env=env,
            cwd=PROJECT_ROOT,
            stderr=self.log,
        )

    def log_text(self) -> str:
        self.log.seek(0)
        return self.log.read().decode()

    def wait_until_active(self) -> None:
        wait_for(lambda: '"delivering"' in self.log_text(), "the deliverer to take its subscriber")

    def kill(self, signum=signal.SIGKILL) -> int:
        self.process.send_signal(signum)
        return self.process.wait(30)


def feed_order(db) -> list[int]:
    """Every event's id, in the order GET /events serves them."""
    with db.cursor() as cur:
        cur.execute(
            "SELECT id FROM contact_event WHERE kind = ANY(%s) ORDER BY txid, id",
            (FEED_SOURCE_KINDS,),
        )
        return [row[0] for row in cur.fetchall()]


def subscriber(db, name: str = "default") -> tuple[int, int]:
    with db.cursor() as cur:
        cur.execute(
            "SELECT deliveredEvents, failedAttempts FROM webhook_subscriber WHERE name = %s",
            (name,),
        )
        return cur.fetchone()


def assert_in_order_without_gaps(batches: list[list[int]], order: list[int]) -> int:
    """Every batch is a run of the feed that starts no later than just after everything
    delivered before it (a repeat after a kill is allowed, a gap is not), and together
    they cover the feed. Returns how many events arrived more than once."""
    position = {event_id: index for index, event_id in enumerate(order)}
    covered = repeats = 0
    for batch in batches:
        start = position[batch[0]]
        assert batch == order[start : start + len(batch)], "a batch out of feed order"
        assert start <= covered, f"events {order[covered:start]} were skipped"
        repeats += max(0, min(covered, start + len(batch)) - start)
        covered = max(covered, start + len(batch))
    assert covered == len(order), "the receiver is missing the last events"
    return repeats


def scraped(client, subscriber_name: str = "default") -> dict[str, float]:
    """The webhook samples of GET /metrics for one subscriber, by sample name."""
    text = client.get("/metrics").get_data(as_text=True)
    return {
        sample.name: sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name.startswith("identity_webhook")
        and sample.labels == {"subscriber": subscriber_name}
    }


def caught_up(db, receiver: Receiver) -> bool:
    return receiver.accepted_ids() >= set(feed_order(db))


@pytest.fixture
def subscribers(db):
    with db.cursor() as cur:
        cur.execute("TRUNCATE webhook_subscriber")
    yield


def checkouts(count: int, seed: int) -> list[dict]:
    """New customers, new secondaries and merges: every kind of event the writes make."""
    rng = random.Random(seed)
    return [
        {
            "email": f"w{rng.randrange(count // 2)}@x.io",
            "phoneNumber": str(rng.randrange(count // 2)),
        }
        for _ in range(count)
    ]


def test_killed_at_random_the_deliverer_still_delivers_every_event_in_order(
    app, client, db, database_url, subscribers
):
    rng = random.Random(7)
    receiver = Receiver(failure_odds=0.2, stall_odds=0.05, seed=7)
    bodies = checkouts(240, seed=7)
    for body in bodies[:80]:
        identify(client, body)
    writer = threading.Thread(
        target=lambda: [identify(app.test_client(), body) for body in bodies[80:]]
    )
    writer.start()
    kills = 0
    try:
        for round in range(8):
            deliverer = DelivererProcess(database_url, receiver.url)
            if round % 2:
                # The worst moment: the receiver has the batch, the 2xx has not left yet.
                receiver.before_next_answer = deliverer.process.kill
                wait_for(
                    lambda d=deliverer: d.process.poll() is not None or caught_up(db, receiver),
                    "the deliverer to be killed while its batch is answered",
                )
                receiver.before_next_answer = None
            else:
                # Any moment while it works: after its first request, unless it has nothing to do.
                seen = receiver.requests
                wait_for(
                    lambda seen=seen: receiver.requests > seen or caught_up(db, receiver),
                    "the deliverer to send a batch",
                )
                time.sleep(rng.uniform(0, 0.4))
            assert deliverer.kill() == -signal.SIGKILL
            kills += 1
        writer.join(60)
        deliverer = DelivererProcess(database_url, receiver.url)
        deliverer.wait_until_active()
        order = feed_order(db)
        wait_for(lambda: receiver.accepted_ids() >= set(order), "every event to arrive", 60)
        wait_for(lambda: subscriber(db)[0] == len(order), "the cursor to reach the end")
        assert deliverer.kill(signal.SIGTERM) == 0
    finally:
        receiver.close()

    assert receiver.bad_signatures == 0 and receiver.personal_values == 0
    repeats = assert_in_order_without_gaps(receiver.accepted, order)
    assert repeats > 0  # the batches taken just before a kill came again: at least once
    delivered, failed = subscriber(db)
    assert delivered == len(order)  # each event counted once, when the cursor passed it
    # Every failed attempt is counted, but for one a kill may cut off between the
    # receiver's 500 and its record; a stall counts too, once the deliverer gives up on it.
    assert receiver.failures > 0
    assert receiver.failures - kills <= failed <= receiver.failures + receiver.stalls
    assert kills == 8
    assert scraped(client) == {
        "identity_webhook_events_delivered_total": len(order),
        "identity_webhook_delivery_failures_total": failed,
        "identity_webhook_lag_events": 0,
        "identity_webhook_lag_seconds": 0,
    }
    print(
        f"\nwrites {len(bodies)}, events {len(order)}, kills {kills}, "
        f"requests {receiver.requests}, 500s {receiver.failures}, stalls {receiver.stalls}, "
        f"redelivered events {repeats}"
    )


def test_a_second_deliverer_for_the_same_subscriber_waits(client, db, database_url, subscribers):
    receiver = Receiver()
    identify(client, {"email": "a@x.io"})
    first = DelivererProcess(database_url, receiver.url)
    second = None
    try:
        wait_for(lambda: len(receiver.accepted_ids()) == 1, "the first event to arrive")
        second = DelivererProcess(database_url, receiver.url)
        wait_for(lambda: "another deliverer is active" in second.log_text(), "the second to wait")

        # The first, frozen, stops renewing its lease: once it expires the second takes over.
        first.process.send_signal(signal.SIGSTOP)
        identify(client, {"email": "b@x.io"})
        wait_for(lambda: len(receiver.accepted_ids()) == 2, "the second deliverer to take over")
        assert '"delivering"' in second.log_text()

        # Thawed, the first finds its lease gone and delivers nothing more.
        first.process.send_signal(signal.SIGCONT)
        wait_for(lambda: "lease lost" in first.log_text(), "the first to notice")
        identify(client, {"email": "c@x.io"})
        wait_for(lambda: len(receiver.accepted_ids()) == 3, "the third event")
        assert first.kill(signal.SIGTERM) == 0
        assert second.kill(signal.SIGTERM) == 0
    finally:
        for deliverer in (first, second):
            if deliverer and deliverer.process.poll() is None:
                deliverer.kill()
        receiver.close()
    assert receiver.accepted == [[1], [2], [3]]


def test_a_stopped_deliverer_hands_its_subscriber_over_at_once(db, database_url, subscribers):
    receiver = Receiver()
    first = DelivererProcess(database_url, receiver.url)
    try:
        first.wait_until_active()
        assert lease_holder(db) is not None
        assert first.kill(signal.SIGTERM) == 0
        assert lease_holder(db) is None  # released: a successor need not wait for the expiry
    finally:
        if first.process.poll() is None:
            first.kill()
        receiver.close()


def lease_holder(db, name: str = "default") -> str | None:
    with db.cursor() as cur:
        cur.execute("SELECT leaseHolder FROM webhook_subscriber WHERE name = %s", (name,))
        return cur.fetchone()[0]


def test_a_deliverer_stops_gracefully_and_resumes_from_its_cursor(
    client, db, database_url, subscribers
):
    receiver = Receiver()
    for n in range(12):
        identify(client, {"email": f"r{n}@x.io"})
    try:
        deliverer = DelivererProcess(database_url, receiver.url)
        deliverer.wait_until_active()
        wait_for(lambda: subscriber(db)[0] == 12, "the first dozen")
        assert deliverer.kill(signal.SIGTERM) == 0
        for n in range(12, 15):
            identify(client, {"email": f"r{n}@x.io"})
        deliverer = DelivererProcess(database_url, receiver.url)
        deliverer.wait_until_active()
        wait_for(lambda: subscriber(db)[0] == 15, "the three new events")
        assert deliverer.kill(signal.SIGTERM) == 0
    finally:
        receiver.close()
    # Stopped gracefully, nothing is sent twice.
    assert [event_id for batch in receiver.accepted for event_id in batch] == list(range(1, 16))


def test_metrics_show_a_subscriber_falling_behind(client, db, subscribers):
    with db.cursor() as cur:
        cur.execute("INSERT INTO webhook_subscriber (name) VALUES ('crm')")
    for n in range(3):
        identify(client, {"email": f"lag{n}@x.io"})
    figures = scraped(client, "crm")
    assert figures["identity_webhook_lag_events"] == 3
    assert figures["identity_webhook_lag_seconds"] > 0
    assert figures["identity_webhook_events_delivered_total"] == 0


def test_backoff_doubles_up_to_its_cap_with_jitter():
    delays = [backoff_s(attempt, 0.5, 60) for attempt in range(12)]
    assert all(0.25 * 2**n <= delays[n] <= 0.5 * 2**n for n in range(7))
    assert all(30 <= delay <= 60 for delay in delays[7:])
    assert 30 <= backoff_s(10_000, 0.5, 60) <= 60  # no overflow after days of retries
    assert len(set(delays)) == len(delays)


def test_the_deliverer_refuses_to_start_without_its_settings(runner, monkeypatch):
    monkeypatch.delenv("WEBHOOK_URL", raising=False)
    result = runner.invoke(args=["deliver"])
    assert result.exit_code == 2 and "WEBHOOK_URL" in result.output


def test_the_lease_must_outlast_a_post():
    settings = {"WEBHOOK_URL": "http://127.0.0.1:9/", "WEBHOOK_SECRET": SECRET}
    assert WebhookConfig.from_environment(settings).lease_s == 30
    assert WebhookConfig.from_environment({**settings, "WEBHOOK_TIMEOUT_S": "20"}).lease_s == 60
    too_short = {**settings, "WEBHOOK_LEASE_S": "2", "WEBHOOK_TIMEOUT_S": "1"}
    with pytest.raises(ConfigError, match="WEBHOOK_LEASE_S"):
        WebhookConfig.from_environment(too_short)


def test_a_batch_signed_for_one_subscriber_does_not_verify_at_another(client, db, database_url):
    """Two receivers sharing a secret: the loyalty programme's batches, sent (or replayed)
    to the CRM's endpoint, fail the CRM's check of the signature."""
    identify(client, {"email": "a@x.io"})
    crm = Receiver(subscriber="crm")
    try:
        deliverer = DelivererProcess(database_url, crm.url, subscriber="loyalty")
        try:
            wait_for(lambda: crm.requests >= 2, "two attempts at the CRM")
        finally:
            deliverer.kill(signal.SIGTERM)
    finally:
        crm.close()
    assert crm.bad_signatures == crm.requests and crm.accepted_ids() == set()


def test_the_subscriber_name_must_be_plain(runner, monkeypatch):
    monkeypatch.setenv("WEBHOOK_URL", "http://127.0.0.1:9/hook")
    monkeypatch.setenv("WEBHOOK_SECRET", SECRET)
    monkeypatch.setenv("WEBHOOK_SUBSCRIBER", "crm{1}")
    result = runner.invoke(args=["deliver"])
    assert result.exit_code == 2 and "WEBHOOK_SUBSCRIBER" in result.output
