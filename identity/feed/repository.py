"""Every SQL statement of the change feed and the webhook deliverer, named and commented.

Functions take the connection first, as in repository.py, and send their statements
through identity/database/transaction.py. The feed reads contact_event
but never its email and phoneNumber columns: no statement here names them.
"""

from datetime import datetime
from typing import NamedTuple

from identity.database import transaction

from .kinds import FEED_SOURCE_KINDS


class EventRow(NamedTuple):
    txid: int
    id: int
    kind: str
    occurred_at: datetime
    contact_id: int
    primary_id: int
    value_kind: str | None = None  # hub_suspected: "email" or "phoneNumber"


class SubscriberStats(NamedTuple):
    name: str
    delivered_events: int
    failed_attempts: int
    lag_events: int
    lag_seconds: float


# FEED_SOURCE_KINDS (kinds.py): the history kinds that become feed events.

# The events after a cursor, in feed order, that no running transaction can precede.
# pg_current_snapshot() is the snapshot this statement reads with; its xmin is the oldest
# transaction still running when it was taken. Every transaction below it has ended, so
# its events are all visible now, and any event that commits later carries a txid at or
# above it: greater than every position this page can hand out. The row comparison and
# the ORDER BY follow the index contact_event_feed_order, so a page is one range scan.
# The ORDER BY names the table's xid8 column, which sorts by number: the text form the
# driver reads (position_txid) would sort 1000 before 999 and lose events for good.
READ_EVENTS = """
SELECT txid::text AS position_txid, id, kind, occurredAt, contactId, primaryId, valueKind
  FROM contact_event
 WHERE (txid, id) > (%(txid)s::xid8, %(event_id)s)
   AND txid < pg_snapshot_xmin(pg_current_snapshot())
   AND kind = ANY(%(kinds)s)
 ORDER BY contact_event.txid, contact_event.id
 LIMIT %(limit)s
"""

# The subscriber's row id, the row created at its deliverer's first start.
ENSURE_SUBSCRIBER = """
INSERT INTO webhook_subscriber (name) VALUES (%(name)s) ON CONFLICT (name) DO NOTHING;
SELECT id FROM webhook_subscriber WHERE name = %(name)s
"""

# Where the subscriber stands; read only under its lock, after any earlier holder is gone.
READ_CURSOR = """
SELECT cursorTxid::text, cursorEventId FROM webhook_subscriber WHERE id = %(subscriber_id)s
"""

# One active deliverer per subscriber: a session-level advisory lock that PostgreSQL
# releases when the deliverer's connection ends, however the process died. The
# two-key form lives in its own key space, apart from the write path's value locks.
TRY_LOCK_SUBSCRIBER = """
SELECT pg_try_advisory_lock(hashtext('webhook_subscriber'), %(subscriber_id)s)
"""

# A 2xx: the subscriber has the batch; move its cursor past it and count it.
ADVANCE_CURSOR = """
UPDATE webhook_subscriber
   SET cursorTxid = %(txid)s::xid8, cursorEventId = %(event_id)s,
       deliveredEvents = deliveredEvents + %(count)s, lastDeliveredAt = now()
 WHERE id = %(subscriber_id)s
"""

# Anything else: count the failed attempt; the cursor stays.
RECORD_FAILURE = """
UPDATE webhook_subscriber
   SET failedAttempts = failedAttempts + 1, lastFailedAt = now()
 WHERE id = %(subscriber_id)s
"""

# For /metrics, per subscriber: its counters, how many feed events it has not yet
# acknowledged, and how old the oldest of them is (0 when it is up to date). Counts
# events still held back by a running transaction too: they are lag all the same.
SUBSCRIBER_STATS = """
SELECT s.name, s.deliveredEvents, s.failedAttempts,
       (SELECT count(*) FROM contact_event AS e
         WHERE (e.txid, e.id) > (s.cursorTxid, s.cursorEventId) AND e.kind = ANY(%(kinds)s)),
       COALESCE(EXTRACT(EPOCH FROM now() - (
           SELECT e.occurredAt FROM contact_event AS e
            WHERE (e.txid, e.id) > (s.cursorTxid, s.cursorEventId) AND e.kind = ANY(%(kinds)s)
            ORDER BY e.txid, e.id LIMIT 1)), 0)::float8
  FROM webhook_subscriber AS s
 ORDER BY s.name
"""


def read_events(conn, txid: int, event_id: int, limit: int) -> list[EventRow]:
    params = {"txid": str(txid), "event_id": event_id, "kinds": FEED_SOURCE_KINDS, "limit": limit}
    with conn.cursor() as cur:
        transaction.execute(cur, READ_EVENTS, params)
        return [EventRow(int(row[0]), *row[1:]) for row in cur]


def ensure_subscriber(conn, name: str) -> int:
    with conn.cursor() as cur:
        transaction.execute(cur, ENSURE_SUBSCRIBER, {"name": name})
        return cur.fetchone()[0]


def read_cursor(conn, subscriber_id: int) -> tuple[int, int]:
    """(txid, event id) of the last event the subscriber acknowledged."""
    with conn.cursor() as cur:
        transaction.execute(cur, READ_CURSOR, {"subscriber_id": subscriber_id})
        txid, event_id = cur.fetchone()
        return int(txid), event_id


def try_lock_subscriber(conn, subscriber_id: int) -> bool:
    with conn.cursor() as cur:
        cur.execute(TRY_LOCK_SUBSCRIBER, {"subscriber_id": subscriber_id})
        return cur.fetchone()[0]


def advance_cursor(conn, subscriber_id: int, txid: int, event_id: int, count: int) -> None:
    params = {"subscriber_id": subscriber_id, "txid": str(txid), "event_id": event_id}
    with conn.cursor() as cur:
        transaction.execute(cur, ADVANCE_CURSOR, {**params, "count": count})


def record_failure(conn, subscriber_id: int) -> None:
    with conn.cursor() as cur:
        transaction.execute(cur, RECORD_FAILURE, {"subscriber_id": subscriber_id})


def subscriber_stats(conn) -> list[SubscriberStats]:
    with conn.cursor() as cur:
        transaction.execute(cur, SUBSCRIBER_STATS, {"kinds": FEED_SOURCE_KINDS})
        return [SubscriberStats(*row) for row in cur]
