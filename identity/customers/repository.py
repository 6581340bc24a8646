"""Every SQL statement of the service, named and commented; the customer look-up itself
is the function customer_rows (sql/013_customer_rows.sql), called from here.

Functions take the connection first. Transactions belong to
identity/database/transaction.py: the statements here never say BEGIN, COMMIT or ROLLBACK;
they travel with it in one round trip. Nothing is prepared by the client (a pooler in
transaction mode would hand a prepared statement's session to someone else). Parameters
are always bound, never formatted into the SQL. Column names are unquoted in the schema, so
PostgreSQL spells them in lower case (linkedid, linkprecedence, ...).
"""

import hashlib

from identity.database import transaction

from .model import ContactRow

# Every live row of the stored groups that the rows matching the values belong to,
# oldest row first: SPEC §5's set C, or more when orphans are involved (reconcile and
# linking decide which of these rows form the customer). The recursive CTE itself is the
# function customer_rows, sql/013_customer_rows.sql, so that PostgreSQL plans it once per
# server session, not at every checkout; an absent value is NULL and matches nothing.
RESOLVE_CUSTOMER = """
SELECT * FROM customer_rows(%(email)s, %(phone_number)s, NULL) ORDER BY createdAt, id
"""

# C of one row, by its id (GET /contacts/{id}); nothing when the row is deleted.
RESOLVE_CUSTOMER_OF_CONTACT = """
SELECT * FROM customer_rows(NULL, NULL, %(contact_id)s) ORDER BY createdAt, id
"""

# Takes, as the first statements of the write transaction, in one fixed global order,
# every lock the write needs (see docs/design.md, "The write path in detail"):
#   1. one transaction-scoped advisory lock per request value, in key order: a writer
#      that may store a value holds that value's lock, so no two writers can both see a
#      value as new. The keys are 64-bit hashes computed in Python (value_lock_keys):
#      no e-mail or phone number appears in this statement's text, which PostgreSQL
#      logs when a lock times out;
#   2. one transaction-scoped advisory lock per customer root the caller saw, in id
#      order, in the two-key space (ROOT_LOCK_SPACE, id), which never overlaps the
#      one-key space of the value locks: only the holder of a root's lock may demote it
#      or add, re-point or change rows under it.
# Advisory locks only, never a row lock: a lock on a row id stays harmless when the row
# has meanwhile stopped being a primary, so two writers can never wait on each other in
# a cycle, whatever the order of ids and creation times. And no row is touched before the
# first write, so the transaction gets its id (xid) only after every lock is held.
# The caller then reads the customer again by a new statement, which in READ COMMITTED
# sees everything committed before the locks were granted. Last, under the value locks,
# the statement finds which of the values support has blocked since the request was
# validated (BLOCK_VALUE runs under the same lock), by key: the values stay out of it.
ROOT_LOCK_SPACE = 1

LOCK_VALUE_KEYS = """
SELECT pg_advisory_xact_lock(key)
  FROM (SELECT DISTINCT key FROM unnest(%(value_keys)s::bigint[]) AS key ORDER BY key) AS keys
"""
LOCK_ROOTS = """
SELECT pg_advisory_xact_lock(%(space)s, root_id)
  FROM (SELECT DISTINCT root_id FROM unnest(%(root_ids)s::integer[]) AS root_id
         ORDER BY root_id) AS roots
"""
LOCK_ALL = ";".join(
    [
        LOCK_VALUE_KEYS,
        LOCK_ROOTS,
        "SELECT lockKey FROM blocked_value WHERE lockKey = ANY(%(value_keys)s::bigint[])",
    ]
)

# SPEC §5.2, first bullet: the losing primaries become secondaries of the survivor, and
# every live row that pointed at a loser now points at the survivor (no chains, §6.1).
# The updatedAt trigger stamps each changed row. The same statement records the history:
# one primary_demoted event per loser, with the request's values that bridged them, and
# one rows_repointed event per loser that had secondaries. All parts of one WITH
# statement read the same snapshot, so `former_links` sees the links before the update.
DEMOTE_PRIMARIES = """
WITH former_links AS (
    SELECT linkedId AS loser_id, array_agg(id ORDER BY id) AS row_ids
      FROM contact
     WHERE deletedAt IS NULL AND linkedId = ANY(%(loser_ids)s)
     GROUP BY linkedId
),
demoted AS (
    UPDATE contact
       SET linkedId = %(survivor_id)s, linkPrecedence = 'secondary'
     WHERE deletedAt IS NULL
       AND (id = ANY(%(loser_ids)s) OR linkedId = ANY(%(loser_ids)s))
)
INSERT INTO contact_event (requestId, kind, contactId, primaryId, email, phoneNumber, repointedIds)
SELECT %(request_id)s, 'primary_demoted', loser_id, %(survivor_id)s,
       %(email)s, %(phone_number)s, NULL
  FROM unnest(%(loser_ids)s::integer[]) AS loser_id
UNION ALL
SELECT %(request_id)s, 'rows_repointed', loser_id, %(survivor_id)s, NULL, NULL, row_ids
  FROM former_links
"""

# Stores the links that linking.relink decided (orphans of a deleted primary, or the
# rows left after a detach): relinked_ids[n] now points at relinked_to[n] (null: it
# becomes a primary). One customer_split event per resulting customer that changed, with
# its primary and the rows that now point at it.
RELINK_ROWS = """
WITH new_link AS (
    SELECT * FROM unnest(%(relinked_ids)s::integer[], %(relinked_to)s::integer[])
               AS link (id, linkedId)
),
relinked AS (
    UPDATE contact
       SET linkedId = new_link.linkedId,
           linkPrecedence = CASE WHEN new_link.linkedId IS NULL THEN 'primary' ELSE 'secondary' END
      FROM new_link
     WHERE contact.id = new_link.id AND contact.deletedAt IS NULL
)
INSERT INTO contact_event (requestId, kind, contactId, primaryId, repointedIds)
SELECT %(request_id)s, 'customer_split', primary_id, primary_id,
       array_agg(id ORDER BY id) FILTER (WHERE linkedId IS NOT NULL)
  FROM (SELECT id, linkedId, COALESCE(linkedId, id) AS primary_id FROM new_link) AS link
 GROUP BY primary_id
 ORDER BY primary_id
"""

# A new row, primary when linked_id is null, and its customer_created or secondary_added
# event. createdAt is the clock at insert time, not the transaction's start: a writer
# inserts only after it holds its locks, so creation order agrees with the order in
# which conflicting writers ran (§6.3).
INSERT_CONTACT = """
WITH new_row AS (
    INSERT INTO contact (email, phoneNumber, linkedId, linkPrecedence, createdAt, updatedAt)
    VALUES (%(email)s, %(phone_number)s, %(linked_id)s,
            CASE WHEN %(linked_id)s::integer IS NULL THEN 'primary' ELSE 'secondary' END,
            clock_timestamp(), clock_timestamp())
    RETURNING id, email, phoneNumber, linkedId, linkPrecedence, createdAt
),
event AS (
    INSERT INTO contact_event (requestId, kind, contactId, primaryId, email, phoneNumber)
    SELECT %(request_id)s,
           CASE WHEN linkedId IS NULL THEN 'customer_created' ELSE 'secondary_added' END,
           id, COALESCE(linkedId, id), email, phoneNumber
      FROM new_row
)
SELECT id, email, phoneNumber, linkedId, linkPrecedence, createdAt FROM new_row
"""

# SPEC §9, detach: the value leaves every row in row_ids (the customer's rows holding it);
# a row left with neither value is soft-deleted. One value_detached event per row, with
# the value and the customer's primary at the time. kind is 'email' or 'phoneNumber'.
DETACH_VALUE = """
WITH detached AS (
    UPDATE contact
       SET email = CASE WHEN %(kind)s = 'email' THEN NULL ELSE email END,
           phoneNumber = CASE WHEN %(kind)s = 'phoneNumber' THEN NULL ELSE phoneNumber END,
           deletedAt = CASE WHEN (CASE WHEN %(kind)s = 'email' THEN phoneNumber ELSE email END)
                                 IS NULL
                            THEN clock_timestamp() END
     WHERE id = ANY(%(row_ids)s) AND deletedAt IS NULL
 RETURNING id
)
INSERT INTO contact_event (requestId, kind, contactId, primaryId, email, phoneNumber)
SELECT %(request_id)s, 'value_detached', id, %(primary_id)s,
       CASE WHEN %(kind)s = 'email' THEN %(value)s END,
       CASE WHEN %(kind)s = 'phoneNumber' THEN %(value)s END
  FROM detached
 ORDER BY id
"""

# The stored blocklist (SPEC §9, "block": true): every server process reads it.
BLOCK_VALUE = """
INSERT INTO blocked_value (kind, value, lockKey, requestId)
VALUES (%(kind)s, %(value)s, %(lock_key)s, %(request_id)s)
ON CONFLICT (kind, value) DO NOTHING
"""

BLOCKED_VALUES = "SELECT kind, value FROM blocked_value"

# SPEC §9, erase: the values of the customer's rows (row_ids) leave every history event
# (by row, and by value for events about other rows), every soft-deleted row, and the
# rows themselves, which are soft-deleted; then one customer_erased event without
# personal data. The values are found by subqueries, never sent: the statement text,
# which PostgreSQL may log, names only row ids. The history's trigger allows this one
# change only in a transaction that set identity.erasing (sql/004_corrections.sql).
# Each statement sees the previous ones' changes: the rows keep their values until the
# last one.
ERASE_CUSTOMER = """
SELECT set_config('identity.erasing', 'on', true);

UPDATE contact_event
   SET email = NULL, phoneNumber = NULL
 WHERE (email IS NOT NULL OR phoneNumber IS NOT NULL)
   AND (contactId = ANY(%(row_ids)s)
        OR email IN (SELECT email FROM contact WHERE id = ANY(%(row_ids)s))
        OR phoneNumber IN (SELECT phoneNumber FROM contact WHERE id = ANY(%(row_ids)s)));

UPDATE contact
   SET email = CASE WHEN email IN (SELECT email FROM contact WHERE id = ANY(%(row_ids)s))
                    THEN NULL ELSE email END,
       phoneNumber = CASE WHEN phoneNumber IN (SELECT phoneNumber FROM contact
                                                WHERE id = ANY(%(row_ids)s))
                          THEN NULL ELSE phoneNumber END
 WHERE deletedAt IS NOT NULL
   AND (email IN (SELECT email FROM contact WHERE id = ANY(%(row_ids)s))
        OR phoneNumber IN (SELECT phoneNumber FROM contact WHERE id = ANY(%(row_ids)s)));

WITH erased AS (
    UPDATE contact
       SET email = NULL, phoneNumber = NULL, deletedAt = clock_timestamp()
     WHERE id = ANY(%(row_ids)s) AND deletedAt IS NULL
 RETURNING id
)
INSERT INTO contact_event (requestId, kind, contactId, primaryId, repointedIds)
SELECT %(request_id)s, 'customer_erased', %(primary_id)s, %(primary_id)s,
       array_agg(id ORDER BY id)
  FROM erased
"""

# SPEC §9, a correction run again after its COMMIT's answer was lost: what this request id
# already did, found through the partial index of sql/012_correction_requests.sql.
#   DETACHED_BY_REQUEST  the customer's primary at the time of the detach of the value, and
#                        the primaries of the customers it split into; nothing when this
#                        request detached nothing.
#   ERASED_BY_REQUEST    the erased customer's primary and rows, when this request erased
#                        the customer of the row.
DETACHED_BY_REQUEST = """
WITH detached AS (
    SELECT primaryId
      FROM contact_event
     WHERE requestId = %(request_id)s AND kind = 'value_detached'
       AND (CASE WHEN %(kind)s = 'email' THEN email ELSE phoneNumber END) = %(value)s
)
SELECT primaryId FROM detached
UNION
SELECT contactId
  FROM contact_event
 WHERE requestId = %(request_id)s AND kind = 'customer_split' AND EXISTS (SELECT FROM detached)
"""
ERASED_BY_REQUEST = """
SELECT contactId, repointedIds
  FROM contact_event
 WHERE requestId = %(request_id)s AND kind = 'customer_erased'
   AND %(contact_id)s = ANY(repointedIds)
"""

# The id and createdAt of the row this session inserted last (see write_and_commit); its
# values are the request's. Read after the COMMIT, when a correction waiting for the
# write's locks may already have changed the row: an erase would show it emptied, so only
# what no correction changes is read. currval() is volatile: as a scalar subquery it is
# evaluated once, so the look-up stays a primary-key index scan instead of calling it for
# every row of the table.
SELECT_INSERTED_CONTACT = """
SELECT id, createdAt
  FROM contact
 WHERE id = (SELECT currval(pg_get_serial_sequence('contact', 'id')))
"""

# SPEC §13: records the suspected hubs a write found (hubs.suspected), each only if no
# unresolved row of the same value exists (the partial unique index
# suspected_hub_unresolved), and one hub_suspected history event per hub newly recorded:
# its row, its customer's primary and the kind of value, never the value. With block
# (HUB_ACTION=block) every hub found also goes on the stored blocklist, recorded before or
# not: a shop that switches to block stops a known hub at its next partner. Runs in the
# write's transaction, after its locks (the value's lock among them, which BLOCK_VALUE
# also holds); only a write that finds a hub sends it. Answers ('recorded', kind) per hub
# newly recorded and ('blocked', kind) per value newly blocked.
RECORD_SUSPECTED_HUBS = """
WITH found AS (
    SELECT *
      FROM unnest(%(kinds)s::text[], %(hub_values)s::text[], %(contact_ids)s::integer[],
                  %(partners)s::integer[], %(lock_keys)s::bigint[])
           AS hub (kind, value, contact_id, partners, lock_key)
),
recorded AS (
    INSERT INTO suspected_hub (kind, value, contactId, primaryContactId, partners, requestId)
    SELECT kind, value, contact_id, %(primary_id)s, partners, %(request_id)s FROM found
        ON CONFLICT (kind, value) WHERE resolvedAt IS NULL DO NOTHING
    RETURNING kind, contactId, primaryContactId
),
event AS (
    INSERT INTO contact_event (requestId, kind, contactId, primaryId, valueKind)
    SELECT %(request_id)s, 'hub_suspected', contactId, primaryContactId, kind FROM recorded
),
blocked AS (
    INSERT INTO blocked_value (kind, value, lockKey, requestId)
    SELECT kind, value, lock_key, %(request_id)s FROM found WHERE %(block)s
        ON CONFLICT (kind, value) DO NOTHING
    RETURNING kind
)
SELECT 'recorded', kind FROM recorded
UNION ALL
SELECT 'blocked', kind FROM blocked
"""

# SPEC §13: support detached the value (DETACH_VALUE), so its hub is resolved. The value
# is on no live row any more; should it glue people again, it is a new hub.
RESOLVE_HUB = """
UPDATE suspected_hub SET resolvedAt = clock_timestamp()
 WHERE kind = %(kind)s AND value = %(value)s AND resolvedAt IS NULL
"""

# SPEC §9 and §13: erasure leaves no erased value in any table. Before ERASE_CUSTOMER
# empties the rows (row_ids, the customer's live rows), the hubs recorded for their rows
# or their values go, and so do their values on the stored blocklist: a value that the
# alarm blocked (HUB_ACTION=block) is still on the rows it glued. A value support
# detached and blocked is on no live row, so it stays blocked. As in ERASE_CUSTOMER, the
# values are found by subqueries, never sent.
FORGET_ERASED_VALUES = """
DELETE FROM suspected_hub
 WHERE contactId = ANY(%(row_ids)s)
    OR (kind = 'email' AND value IN (SELECT email FROM contact WHERE id = ANY(%(row_ids)s)))
    OR (kind = 'phoneNumber'
        AND value IN (SELECT phoneNumber FROM contact WHERE id = ANY(%(row_ids)s)));

DELETE FROM blocked_value
 WHERE (kind = 'email' AND value IN (SELECT email FROM contact WHERE id = ANY(%(row_ids)s)))
    OR (kind = 'phoneNumber'
        AND value IN (SELECT phoneNumber FROM contact WHERE id = ANY(%(row_ids)s)))
"""

# GET /hubs: the unresolved suspected hubs, newest first.
UNRESOLVED_HUBS = """
SELECT kind, value, contactId, primaryContactId, partners, since
  FROM suspected_hub
 WHERE resolvedAt IS NULL
 ORDER BY since DESC, id DESC
"""

# The history of a customer: every event about one of its rows, oldest first. Events are
# written after the writer's locks, so id order is the order of the changes.
CUSTOMER_HISTORY = """
SELECT id, occurredAt, requestId, kind, contactId, primaryId, email, phoneNumber, repointedIds,
       valueKind
  FROM contact_event
 WHERE contactId = ANY(%(row_ids)s)
 ORDER BY id
"""

# One page of a customer's history, newest first (the support console pages a customer
# of thousands of rows), the number of its events, and its merges (primary_demoted:
# the console's graph draws each). row_ids: the customer's rows.
CUSTOMER_HISTORY_PAGE = """
SELECT id, occurredAt, requestId, kind, contactId, primaryId, email, phoneNumber, repointedIds,
       valueKind
  FROM contact_event
 WHERE contactId = ANY(%(row_ids)s)
 ORDER BY id DESC
 LIMIT %(limit)s OFFSET %(offset)s
"""
CUSTOMER_HISTORY_SIZE = "SELECT count(*) FROM contact_event WHERE contactId = ANY(%(row_ids)s)"
CUSTOMER_MERGES = """
SELECT contactId, primaryId
  FROM contact_event
 WHERE contactId = ANY(%(row_ids)s) AND kind = 'primary_demoted'
 ORDER BY id
"""


def value_lock_keys(email: str | None, phone_number: str | None) -> list[int]:
    """The advisory-lock keys of a request's values: 64-bit BLAKE2b hashes, sorted."""
    keys = set()
    for kind, value in (("email", email), ("phone", phone_number)):
        if value is not None:
            digest = hashlib.blake2b(f"{kind}:{value}".encode(), digest_size=8).digest()
            keys.add(int.from_bytes(digest, "big", signed=True))
    return sorted(keys)


def find_customer(conn, email: str | None, phone_number: str | None) -> list[ContactRow]:
    """The customer C of the given values, oldest row first; [] when nothing matches."""
    with conn.cursor() as cur:
        transaction.execute(cur, RESOLVE_CUSTOMER, {"email": email, "phone_number": phone_number})
        return [ContactRow(*row) for row in cur]


class ValueBlocked(Exception):
    """Support blocked one of the values after the request was validated (begin_locked
    has rolled the transaction back): validate the request again against the stored
    blocklist, read anew."""


def begin_locked(
    conn, email: str | None, phone_number: str | None, root_ids: list[int]
) -> list[ContactRow]:
    """BEGIN, take the locks of a write, and re-read the customer. root_ids: the
    customers' roots the caller saw (linking.LinkedCustomer.root_id; for customers
    without orphans, their primaries' ids).

    Two round trips: the locks first, in a statement without any value, then the
    re-read, so that a lock timeout never logs the request's values. Raises ValueBlocked,
    after a rollback, when one of the values is on the stored blocklist."""
    if lock_all(conn, value_lock_keys(email, phone_number), root_ids):
        with conn.cursor() as cur:
            transaction.rollback(cur)
        raise ValueBlocked()
    return find_customer(conn, email, phone_number)


def lock_all(conn, value_keys: list[int], root_ids: list[int]) -> list[int]:
    """BEGIN and take the value locks, then the root locks (LOCK_ALL); the keys among
    value_keys that are on the stored blocklist."""
    params = {"value_keys": value_keys, "space": ROOT_LOCK_SPACE, "root_ids": sorted(root_ids)}
    with conn.cursor() as cur:
        transaction.begin(cur, LOCK_ALL, params)
        return [key for (key,) in cur.fetchall()]


def find_customer_of_contact(conn, contact_id: int) -> list[ContactRow]:
    """The customer of one live row, oldest row first; [] for an unknown or deleted row."""
    with conn.cursor() as cur:
        transaction.execute(cur, RESOLVE_CUSTOMER_OF_CONTACT, {"contact_id": contact_id})
        return [ContactRow(*row) for row in cur]


def write_and_commit(
    conn,
    request: dict,
    relinks: dict[int, int | None],
    demotion: dict | None,
    linked_id: int | None,
    insert: bool,
) -> ContactRow | None:
    """The write's statements and the COMMIT, in one round trip; the new row, if any.

    request: the checkout's email, phone_number and request_id. relinks: {row id: new
    linkedId} for RELINK_ROWS (orphans stored as SPEC §2 presents them), applied first.
    demotion: survivor_id and loser_ids for DEMOTE_PRIMARIES, or None. insert: whether
    to INSERT_CONTACT a row linked to linked_id. The new row's id and createdAt are read
    back after the COMMIT (SELECT_INSERTED_CONTACT), in the same round trip and so on the
    same server session (a pooler switches sessions only between round trips), through
    currval; its values are the request's, as they were when the write committed."""
    statements = (
        ([RELINK_ROWS] if relinks else [])
        + ([DEMOTE_PRIMARIES] if demotion else [])
        + ([INSERT_CONTACT] if insert else [])
    )
    params = {
        **request,
        **(demotion or {}),
        **_relink_params(relinks),
        "linked_id": linked_id,
    }
    with conn.cursor() as cur:
        transaction.commit(
            cur, ";".join(statements), params, then=SELECT_INSERTED_CONTACT if insert else None
        )
        if not insert:
            return None
        row_id, created_at = cur.fetchone()
    precedence = "primary" if linked_id is None else "secondary"
    email, phone_number = request["email"], request["phone_number"]
    return ContactRow(row_id, email, phone_number, linked_id, precedence, created_at)


def record_suspected_hubs(
    conn, hubs: list, primary_id: int, request_id: str | None, block: bool
) -> tuple[set[str], set[str]]:
    """RECORD_SUSPECTED_HUBS for hubs.SuspectedHub values: the kinds of the hubs newly
    recorded, and of the values newly blocked."""
    params = {
        "kinds": [hub.kind for hub in hubs],
        "hub_values": [hub.value for hub in hubs],
        "contact_ids": [hub.contact_id for hub in hubs],
        "partners": [hub.partners for hub in hubs],
        "lock_keys": [_lock_key(hub.kind, hub.value) for hub in hubs],
        "primary_id": primary_id,
        "request_id": request_id,
        "block": block,
    }
    with conn.cursor() as cur:
        transaction.execute(cur, RECORD_SUSPECTED_HUBS, params)
        written = cur.fetchall()
    return (
        {kind for what, kind in written if what == "recorded"},
        {kind for what, kind in written if what == "blocked"},
    )


def _lock_key(kind: str, value: str) -> int:
    """The advisory-lock key of one value, as LOCK_ALL takes it."""
    email, phone_number = (value, None) if kind == "email" else (None, value)
    return value_lock_keys(email, phone_number)[0]


def unresolved_hubs(conn) -> list[tuple]:
    """(kind, value, contactId, primaryContactId, partners, since) of every unresolved hub,
    newest first."""
    with conn.cursor() as cur:
        transaction.execute(cur, UNRESOLVED_HUBS)
        return cur.fetchall()


def _relink_params(relinks: dict[int, int | None]) -> dict:
    return {"relinked_ids": list(relinks), "relinked_to": list(relinks.values())}


def _begin_snapshot_with_groups_of(cur, contact_id: int) -> None:
    """BEGIN a read-only REPEATABLE READ transaction and read the stored groups of a row:
    every statement after it sees the same committed state."""
    transaction.begin(
        cur,
        RESOLVE_CUSTOMER_OF_CONTACT,
        {"contact_id": contact_id},
        isolation="ISOLATION LEVEL REPEATABLE READ READ ONLY",
    )


def customer_with_history(conn, contact_id: int) -> tuple[list[ContactRow], list[tuple]]:
    """The stored group of a row and every event about its rows, in one snapshot.

    A read-only REPEATABLE READ transaction: both statements see the same committed
    state, so a merge that commits in between shows in both or in neither."""
    with conn.cursor() as cur:
        _begin_snapshot_with_groups_of(cur, contact_id)
        rows = [ContactRow(*row) for row in cur]
        cur.execute(CUSTOMER_HISTORY, {"row_ids": [row.id for row in rows]})
        events = cur.fetchall()
        transaction.commit(cur)
        return rows, events


def customer_with_history_page(
    conn, contact_id: int, customer_of, offset: int, limit: int
) -> tuple[list[ContactRow], list[tuple], int, list[tuple[int, int]]]:
    """The rows of a row's customer, one page of its history (newest first), the number
    of its events and its merges, in one read-only snapshot (see customer_with_history).

    customer_of(rows, contact_id) picks the customer's rows among the stored groups."""
    with conn.cursor() as cur:
        _begin_snapshot_with_groups_of(cur, contact_id)
        try:
            rows = customer_of([ContactRow(*row) for row in cur], contact_id)
            params = {"row_ids": [row.id for row in rows], "offset": offset, "limit": limit}
            cur.execute(CUSTOMER_HISTORY_PAGE, params)
            events = cur.fetchall()
            cur.execute(CUSTOMER_HISTORY_SIZE, params)
            (size,) = cur.fetchone()
            cur.execute(CUSTOMER_MERGES, params)
            merges = cur.fetchall()
        finally:
            transaction.commit(cur)  # read only: ends the snapshot, also after NotFound
        return rows, events, size, merges


def detach_and_commit(
    conn, detach: dict, relinks: dict[int, int | None], block: bool
) -> None:
    """DETACH_VALUE, then RELINK_ROWS, BLOCK_VALUE if asked, RESOLVE_HUB, and COMMIT:
    one round trip.

    detach: kind, value, row_ids, primary_id and request_id."""
    statements = [DETACH_VALUE] + ([RELINK_ROWS] if relinks else []) + (
        [BLOCK_VALUE] if block else []
    ) + [RESOLVE_HUB]
    with conn.cursor() as cur:
        transaction.commit(cur, ";".join(statements), {**detach, **_relink_params(relinks)})


def erase_and_commit(conn, row_ids: list[int], primary_id: int, request_id: str | None) -> None:
    """FORGET_ERASED_VALUES, ERASE_CUSTOMER and COMMIT: one round trip."""
    params = {"row_ids": row_ids, "primary_id": primary_id, "request_id": request_id}
    with conn.cursor() as cur:
        transaction.commit(cur, FORGET_ERASED_VALUES + ";" + ERASE_CUSTOMER, params)


def detached_by_request(conn, request_id: str, kind: str, value: str) -> list[int]:
    """DETACHED_BY_REQUEST: primaries whose customers this request's detach left."""
    params = {"request_id": request_id, "kind": kind, "value": value}
    with conn.cursor() as cur:
        transaction.execute(cur, DETACHED_BY_REQUEST, params)
        return [primary_id for (primary_id,) in cur]


def erased_by_request(conn, request_id: str, contact_id: int) -> tuple[int, list[int]] | None:
    """ERASED_BY_REQUEST: (primary id, row ids), or None."""
    with conn.cursor() as cur:
        transaction.execute(
            cur, ERASED_BY_REQUEST, {"request_id": request_id, "contact_id": contact_id}
        )
        return cur.fetchone()


def blocked_values(conn) -> list[tuple[str, str]]:
    """The stored blocklist: (kind, value) pairs."""
    with conn.cursor() as cur:
        transaction.execute(cur, BLOCKED_VALUES)
        return cur.fetchall()


def schema_present(conn) -> bool:
    """True when the contact table exists (the readiness probe's one round trip)."""
    with conn.cursor() as cur:
        transaction.execute(cur, "SELECT to_regclass('contact') IS NOT NULL")
        return cur.fetchone()[0]
