"""The delivery loop: the feed, batch by batch, to one subscriber, at least once, in order.

    take the subscriber's lock (a second deliverer waits here)
    read the cursor
    repeat: read the next batch after the cursor from the feed
            POST it, signed, until the receiver answers 2xx (backing off between tries)
            move the cursor past the batch

The cursor moves only after a 2xx, so a deliverer killed at any moment resumes with the
batch it may already have delivered: a receiver sees a batch twice at worst, never a
gap. A batch is never skipped; a receiver that keeps failing holds the subscriber's feed
back, and /metrics shows its lag and failures growing.
"""

import json
import logging
import random
import threading
import time
from contextlib import closing

import psycopg2

from identity.database.connections import connect_timeout_s
from identity.feed import events as feed
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


class Deliverer:
    def __init__(self, config: WebhookConfig, database: dict, stop: threading.Event):
        """database: DATABASE_URL, STATEMENT_TIMEOUT_MS and REQUEST_DEADLINE_S (how long to
        wait for a connection)."""
        self.config = config
        self.database = database
        self.stop = stop

    def run(self) -> None:
        """Deliver until stop is set; a lost database connection is made again."""
        attempt = 0
        while not self.stop.is_set():
            try:
                with closing(self._connect()) as conn:
                    attempt = 0
                    self._serve_subscriber(conn)
            except (psycopg2.OperationalError, psycopg2.InterfaceError):
                logger.warning("database unavailable; connecting again")
                self.stop.wait(backoff_s(attempt, self.config.backoff_base_s, 10))
                attempt += 1

    def _connect(self):
        conn = psycopg2.connect(
            self.database["DATABASE_URL"],
            connect_timeout=connect_timeout_s(self.database["REQUEST_DEADLINE_S"]),
            options=f"-c statement_timeout={self.database['STATEMENT_TIMEOUT_MS']}",
            application_name="identity-deliverer",
        )
        conn.autocommit = True
        return conn

    def _serve_subscriber(self, conn) -> None:
        subscriber_id = feed_repository.ensure_subscriber(conn, self.config.subscriber)
        if not self._wait_for_lock(conn, subscriber_id):
            return
        logger.info("delivering", extra={"subscriber": self.config.subscriber})
        cursor = feed.Cursor(*feed_repository.read_cursor(conn, subscriber_id))
        while not self.stop.is_set():
            page = feed.read_page(conn, cursor, self.config.batch_size)
            if not page.events:
                self.stop.wait(self.config.poll_interval_s)
            elif self._post_until_accepted(conn, subscriber_id, page.events):
                feed_repository.advance_cursor(
                    conn, subscriber_id, page.next.txid, page.next.event_id, len(page.events)
                )
                cursor = page.next

    def _wait_for_lock(self, conn, subscriber_id: int) -> bool:
        """Hold the subscriber's lock, or wait for it until stop is set (False)."""
        if feed_repository.try_lock_subscriber(conn, subscriber_id):
            return True
        logger.info(
            "another deliverer is active for this subscriber; waiting",
            extra={"subscriber": self.config.subscriber},
        )
        while not self.stop.wait(self.config.poll_interval_s):
            if feed_repository.try_lock_subscriber(conn, subscriber_id):
                return True
        return False

    def _post_until_accepted(self, conn, subscriber_id: int, events: list[dict]) -> bool:
        """POST the batch until a 2xx (True), or until stop is set (False)."""
        batch = {"subscriber": self.config.subscriber, "events": _events_body.dump(events)}
        body = json.dumps(batch, separators=(",", ":")).encode()
        attempt = 0
        while not self.stop.is_set():
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
