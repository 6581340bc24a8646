"""The deliverer's lease on its subscriber, and the SQL it runs in each of its transactions.

A lease is the subscriber row's (leaseHolder, leaseExpiresAt): taken when nobody holds it
or its expiry has passed, renewed by its holder, released on a graceful stop. Unlike a
session advisory lock it needs no session, so it works through a transaction-mode pooler;
a deliverer that dies keeps its subscriber until the expiry, then another takes over.
Expiry is judged on the database's clock only; the holder keeps its own, shorter, count
from the moment before it asked (identity/feed/webhooks/deliverer.py).

Statements run through identity/database/transaction.py: on their own, each is one
transaction under the connection's limits; inside the deliverer's transaction, a part of it.
"""

from identity.database import transaction

# Take the lease: one row when nobody holds it, when its holder let it expire, or when we
# held it before. Concurrent takers serialise on the row lock; the loser re-evaluates the
# WHERE clause against the winner's new expiry and gets no row.
TAKE_LEASE = """
UPDATE webhook_subscriber
   SET leaseHolder = %(holder)s,
       leaseExpiresAt = clock_timestamp() + %(lease_s)s * interval '1 second'
 WHERE id = %(subscriber_id)s
   AND (leaseHolder IS NULL OR leaseHolder = %(holder)s OR leaseExpiresAt <= clock_timestamp())
RETURNING id
"""

# Renew a lease we still hold: no row once it has expired, even if nobody took it, since a
# deliverer whose lease lapsed cannot know what happened meanwhile.
RENEW_LEASE = """
UPDATE webhook_subscriber
   SET leaseExpiresAt = clock_timestamp() + %(lease_s)s * interval '1 second'
 WHERE id = %(subscriber_id)s
   AND leaseHolder = %(holder)s AND leaseExpiresAt > clock_timestamp()
RETURNING id
"""

# A graceful stop: a successor need not wait for the expiry.
RELEASE_LEASE = """
UPDATE webhook_subscriber
   SET leaseHolder = NULL, leaseExpiresAt = NULL
 WHERE id = %(subscriber_id)s AND leaseHolder = %(holder)s
"""


def take(conn, subscriber_id: int, holder: str, lease_s: float) -> bool:
    return _update(conn, TAKE_LEASE, subscriber_id, holder, lease_s)


def renew(conn, subscriber_id: int, holder: str, lease_s: float) -> bool:
    return _update(conn, RENEW_LEASE, subscriber_id, holder, lease_s)


def release(conn, subscriber_id: int, holder: str) -> None:
    with conn.cursor() as cur:
        transaction.execute(cur, RELEASE_LEASE, {"subscriber_id": subscriber_id, "holder": holder})


def _update(conn, statement: str, subscriber_id: int, holder: str, lease_s: float) -> bool:
    params = {"subscriber_id": subscriber_id, "holder": holder, "lease_s": lease_s}
    with conn.cursor() as cur:
        transaction.execute(cur, statement, params)
        return cur.fetchone() is not None
