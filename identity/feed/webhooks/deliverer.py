"""The delivery loop: the feed, batch by batch, to one subscriber, at least once, in order.

    take the subscriber's lease (a second deliverer waits here until it expires)
    read the cursor
    repeat: renew the lease when half of it has passed
            read the next batch after the cursor from the feed
            POST it, signed, until the receiver answers 2xx (backing off between tries)
            move the cursor past the batch, in a transaction that renews the lease
    on a graceful stop, release the lease

The lease (identity/feed/lease.py) is a row with an expiry, not a session lock, so the
deliverer works through a transaction-mode pooler. A deliverer that finds its lease taken
over (it was frozen, or cut off longer than the lease) stops delivering and waits again.

The cursor moves only after a 2xx, so a deliverer killed at any moment resumes with the
batch it may already have delivered: a receiver sees a batch twice at worst, never a
gap. A batch is never skipped; a receiver that keeps failing holds the subscriber's feed
back, and /metrics shows its lag and failures growing.
"""

import json
import logging
import os
import random
import secrets
import socket
import threading
import time
from contextlib import closing

import psycopg2

from identity.database import connections, transaction
from identity.database.transaction import Limits
from identity.feed import events as feed
from identity.feed import lease
from identity.feed import repository as feed_repository
from identity.feed.events import FeedEvent

from . import signing, transport
from .config import WebhookConfig

logger = logging.getLogger(__name__)
_events_body = FeedEvent(many=True)
# 2^32 times the base is beyond any sensible cap; larger powers would overflow a float.
_MAX_DOUBLINGS = 32


def backoff_s(attempt: int, base_s: float, max_s: float) -> float:
    """Capped exponential backoff with jitter: half fixed, half random, so a receiver
    coming back is not met by every retry at the same instant."""
    ceiling = min(max_s, base_s * 2 ** min(attempt, _MAX_DOUBLINGS))
    return ceiling / 2 + random.uniform(0, ceiling / 2)


class LeaseLost(Exception):
    """Another deliverer holds the subscriber now: ours lapsed (a freeze, a long outage)."""


class Deliverer:
    def __init__(self, config: WebhookConfig, database: dict, stop: threading.Event):
        """database: DATABASE_URL, STATEMENT_TIMEOUT_MS and REQUEST_DEADLINE_S (how long to
        wait for a connection)."""
        self.config = config
        self.database = database
        self.stop = stop
        # Unique per run, readable in webhook_subscriber.leaseHolder by an operator.
        self.holder = f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(4)}"
        # time.monotonic() when our lease ends at the latest: counted from before we asked,
        # so it never outlasts the expiry the database set.
        self.lease_valid_until = 0.0

    def run(self) -> None:
        """Deliver until stop is set; a lost database connection is made again."""
        attempt = 0
        while not self.stop.is_set():
            try:
                with closing(self._connect()) as conn:
                    attempt = 0
                    self._serve_subscriber(conn)
            except (psycopg2.OperationalError, psycopg2.InterfaceError) as error:
                logger.warning(
                    "database unavailable; connecting again",
                    extra={"reason": connections.failure_reason(error)},
                )
                self.stop.wait(backoff_s(attempt, self.config.backoff_base_s, 10))
                attempt += 1

    def _connect(self):
        """No startup options and no session settings: a transaction-mode pooler may stand
        in between, so every transaction sets its limits for itself (transaction.py)."""
        limits = Limits(self.database["STATEMENT_TIMEOUT_MS"], lock_ms=0, idle_ms=0)
        return connections.connect(self.database, "identity-deliverer", limits)

    def _serve_subscriber(self, conn) -> None:
        subscriber_id = feed_repository.ensure_subscriber(conn, self.config.subscriber)
        if not self._wait_for_lease(conn, subscriber_id):
            return
        try:
            self._deliver(conn, subscriber_id)
        except LeaseLost:
            logger.warning(
                "lease lost: another deliverer took over this subscriber",
                extra={"subscriber": self.config.subscriber},
            )

    def _deliver(self, conn, subscriber_id: int) -> None:
        logger.info("delivering", extra={"subscriber": self.config.subscriber})
        cursor = feed.Cursor(*feed_repository.read_cursor(conn, subscriber_id))
        while not self.stop.is_set():
            self._keep_lease(conn, subscriber_id)
            page = feed.read_page(conn, cursor, self.config.batch_size)
            if not page.events:
                self.stop.wait(self.config.poll_interval_s)
            elif self._post_until_accepted(conn, subscriber_id, page.events):
                self._advance(conn, subscriber_id, page)
                cursor = page.next
        lease.release(conn, subscriber_id, self.holder)

    def _wait_for_lease(self, conn, subscriber_id: int) -> bool:
        """Hold the subscriber's lease, or wait for it until stop is set (False)."""
        if self._take(conn, subscriber_id):
            return True
        logger.info(
            "another deliverer is active for this subscriber; waiting",
            extra={"subscriber": self.config.subscriber},
        )
        while not self.stop.wait(self.config.poll_interval_s):
            if self._take(conn, subscriber_id):
                return True
        return False

    def _advance(self, conn, subscriber_id: int, page: feed.Page) -> None:
        """Move the cursor past the page in a transaction that renews the lease: the row
        stays locked until the commit, so the cursor moves only while the lease is ours."""
        with conn.cursor() as cur:
            transaction.begin(cur)
            try:
                self._renew(conn, subscriber_id)
                feed_repository.advance_cursor(
                    conn, subscriber_id, page.next.txid, page.next.event_id, len(page.events)
                )
                transaction.commit(cur)
            except BaseException:
                if not conn.closed:
                    transaction.rollback(cur)
                raise

    def _take(self, conn, subscriber_id: int) -> bool:
        asked_at = time.monotonic()
        taken = lease.take(conn, subscriber_id, self.holder, self.config.lease_s)
        if taken:
            self.lease_valid_until = asked_at + self.config.lease_s
        return taken

    def _keep_lease(self, conn, subscriber_id: int) -> None:
        """Renew the lease once half of it has passed: what is left then (at least
        1.5 x WEBHOOK_TIMEOUT_S) outlasts the next POST."""
        if time.monotonic() >= self.lease_valid_until - self.config.lease_s / 2:
            self._renew(conn, subscriber_id)

    def _renew(self, conn, subscriber_id: int) -> None:
        """Extend the lease, or raise LeaseLost if it lapsed."""
        asked_at = time.monotonic()
        if not lease.renew(conn, subscriber_id, self.holder, self.config.lease_s):
            raise LeaseLost()
        self.lease_valid_until = asked_at + self.config.lease_s

    def _post_until_accepted(self, conn, subscriber_id: int, events: list[dict]) -> bool:
        """POST the batch until a 2xx (True), or until stop is set (False)."""
        batch = {"subscriber": self.config.subscriber, "events": _events_body.dump(events)}
        body = json.dumps(batch, separators=(",", ":")).encode()
        attempt = 0
        while not self.stop.is_set():
            self._keep_lease(conn, subscriber_id)
            header = signing.signature(self.config.secret, body, int(time.time()))
            answer = transport.post(
                self.config.url, body, {signing.HEADER: header}, self.config.timeout_s
            )
            if answer.accepted:
                return True
            feed_repository.record_failure(conn, subscriber_id)
            delay = backoff_s(attempt, self.config.backoff_base_s, self.config.backoff_max_s)
            logger.warning(
                "delivery failed; retrying",
                extra={
                    "subscriber": self.config.subscriber,
                    "answer": answer.detail,
                    "attempt": attempt + 1,
                    "retry_in_s": round(delay, 3),
                },
            )
            self.stop.wait(delay)
            attempt += 1
        return False
