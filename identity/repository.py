"""Every SQL statement of the service, named and commented.

Functions take the connection first: the caller owns the transaction. Parameters are
always bound, never formatted into the SQL. Column names are unquoted in the schema, so
PostgreSQL spells them in lower case (linkedid, linkprecedence, ...).
"""

from datetime import datetime
from typing import NamedTuple


class ContactRow(NamedTuple):
    id: int
    email: str | None
    phone_number: str | None
    linked_id: int | None
    link_precedence: str
    created_at: datetime

    @property
    def is_primary(self) -> bool:
        return self.link_precedence == "primary"


# The whole customer (SPEC §5, set C) of the rows in `matched`, oldest row first. The
# look-ups below differ only in how they find `matched`.
#
#   ancestry   Walks linkedId upwards from every matched row until it reaches rows that
#              link to nothing: the primaries of the customers the matched rows touch.
#              Invariant §6.1 keeps every walk to one step; UNION (not UNION ALL) drops
#              repeats, so the walk ends even on data that breaks the invariant. The
#              parent is fetched in a LATERAL subquery with LIMIT 1, which the planner
#              cannot turn into a hash join: always a primary-key look-up, even while the
#              table's statistics are stale (a young, fast-growing table).
#   customer   C: those primaries and every row that links to them (an index look-up
#              each: by id, then by linkedId), live rows only.
_CUSTOMER_OF_MATCHED = """
ancestry (id, linkedId) AS (
    SELECT id, linkedId FROM matched
    UNION
    SELECT parent.id, parent.linkedId
      FROM ancestry
     CROSS JOIN LATERAL (
           SELECT id, linkedId FROM contact
            WHERE id = ancestry.linkedId AND deletedAt IS NULL
            LIMIT 1) AS parent
),
primaries AS (
    SELECT id FROM ancestry WHERE linkedId IS NULL
),
customer AS (
    SELECT contact.* FROM primaries JOIN contact ON contact.id = primaries.id
    UNION ALL
    SELECT contact.* FROM primaries JOIN contact ON contact.linkedId = primaries.id
)
SELECT id, email, phoneNumber, linkedId, linkPrecedence, createdAt
  FROM customer
 WHERE deletedAt IS NULL
 ORDER BY createdAt, id
"""

# C for a request's e-mail ($1) and phone number ($2): `matched` is M of SPEC §5, the
# live rows with either value (`= NULL` is never true, so an absent value matches
# nothing); two partial-index scans. Prepared once per connection (PREPARED_STATEMENTS).
RESOLVE_CUSTOMER = (
    """
WITH RECURSIVE
matched AS (
    SELECT id, linkedId
      FROM contact
     WHERE deletedAt IS NULL
       AND (email = $1 OR phoneNumber = $2)
),
"""
    + _CUSTOMER_OF_MATCHED
)

# C of one row, by its id (GET /contacts/{id}); nothing when the row is deleted.
RESOLVE_CUSTOMER_OF_CONTACT = (
    """
WITH RECURSIVE
matched AS (
    SELECT id, linkedId FROM contact WHERE id = %(contact_id)s AND deletedAt IS NULL
),
"""
    + _CUSTOMER_OF_MATCHED
)

# Statements run at almost every request, prepared on a connection's first use (db.get_db).
PREPARED_STATEMENTS = {
    "resolve_customer": ("text", "text", RESOLVE_CUSTOMER),
}

EXECUTE_RESOLVE_CUSTOMER = "EXECUTE resolve_customer(%(email)s, %(phone_number)s)"

# Starts the write transaction and takes, in one fixed global order, every lock the
# write needs (see README, "Concurrency"):
#   1. one transaction-scoped advisory lock per request value, in key order: a writer
#      that may store a value holds that value's lock, so no two writers can both see a
#      value as new;
#   2. a row lock on each primary the caller saw, in id order: only the holder of a
#      primary's lock may demote it or add, re-point or change rows under it.
# Advisory locks before row locks, each kind sorted: two writers can never wait on each
# other in a cycle. The customer is then read again by a new statement, which in READ
# COMMITTED sees everything committed before the locks were granted.
LOCK_VALUES = """
SELECT pg_advisory_xact_lock(key)
  FROM (SELECT DISTINCT hashtextextended(value, 0) AS key
          FROM unnest(%(values)s::text[]) AS value
         ORDER BY key) AS keys
"""

LOCK_PRIMARIES = """
SELECT id FROM contact WHERE id = ANY(%(primary_ids)s) ORDER BY id FOR UPDATE
"""

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

# The row this session inserted last (see write_and_commit). currval() is volatile: as a
# scalar subquery it is evaluated once, so the look-up stays a primary-key index scan
# instead of calling it for every row of the table.
SELECT_INSERTED_CONTACT = """
SELECT id, email, phoneNumber, linkedId, linkPrecedence, createdAt
  FROM contact
 WHERE id = (SELECT currval(pg_get_serial_sequence('contact', 'id')))
"""

# The history of a customer: every event about one of its rows, oldest first. Events are
# written after the writer's locks, so id order is the order of the changes.
CUSTOMER_HISTORY = """
SELECT id, occurredAt, requestId, kind, contactId, primaryId, email, phoneNumber, repointedIds
  FROM contact_event
 WHERE contactId = ANY(%(row_ids)s)
 ORDER BY id
"""


def _lock_keys(email: str | None, phone_number: str | None) -> list[str]:
    keys = []
    if email is not None:
        keys.append("email:" + email)
    if phone_number is not None:
        keys.append("phone:" + phone_number)
    return keys


def prepare_statements(conn) -> None:
    with conn.cursor() as cur:
        for name, (*types, sql) in PREPARED_STATEMENTS.items():
            cur.execute(f"PREPARE {name} ({', '.join(types)}) AS {sql}")


def find_customer(conn, email: str | None, phone_number: str | None) -> list[ContactRow]:
    """The customer C of the given values, oldest row first; [] when nothing matches."""
    with conn.cursor() as cur:
        cur.execute(EXECUTE_RESOLVE_CUSTOMER, {"email": email, "phone_number": phone_number})
        return [ContactRow(*row) for row in cur]


def begin_locked(
    conn, email: str | None, phone_number: str | None, primary_ids: list[int]
) -> list[ContactRow]:
    """BEGIN, take the locks of a write, and re-read the customer: one round trip."""
    params = {
        "values": _lock_keys(email, phone_number),
        "primary_ids": sorted(primary_ids),
        "email": email,
        "phone_number": phone_number,
    }
    with conn.cursor() as cur:
        cur.execute(
            ";".join(["BEGIN", LOCK_VALUES, LOCK_PRIMARIES, EXECUTE_RESOLVE_CUSTOMER]), params
        )
        return [ContactRow(*row) for row in cur]


def find_customer_of_contact(conn, contact_id: int) -> list[ContactRow]:
    """The customer of one live row, oldest row first; [] for an unknown or deleted row."""
    with conn.cursor() as cur:
        cur.execute(RESOLVE_CUSTOMER_OF_CONTACT, {"contact_id": contact_id})
        return [ContactRow(*row) for row in cur]


def write_and_commit(
    conn,
    request: dict,
    demotion: dict | None,
    linked_id: int | None,
    insert: bool,
) -> ContactRow | None:
    """The write's statements and COMMIT, in one round trip; the new row, if any.

    request: the checkout's email, phone_number and request_id. demotion: survivor_id
    and loser_ids for DEMOTE_PRIMARIES, or None. insert: whether to INSERT_CONTACT a row
    linked to linked_id. The new row is read back after the COMMIT through currval,
    which stays set in this session. (The connection is in autocommit mode and the
    transaction began with an explicit BEGIN, so psycopg2's conn.commit() would do
    nothing: the COMMIT is ours to send.)"""
    statements = ([DEMOTE_PRIMARIES] if demotion else []) + ([INSERT_CONTACT] if insert else [])
    statements.append("COMMIT")
    if insert:
        statements.append(SELECT_INSERTED_CONTACT)
    params = {**request, **(demotion or {}), "linked_id": linked_id}
    with conn.cursor() as cur:
        cur.execute(";".join(statements), params)
        return ContactRow(*cur.fetchone()) if insert else None


def customer_history(conn, row_ids: list[int]) -> list[tuple]:
    with conn.cursor() as cur:
        cur.execute(CUSTOMER_HISTORY, {"row_ids": row_ids})
        return cur.fetchall()


def schema_present(conn) -> bool:
    """True when the contact table exists (the readiness probe's one round trip)."""
    with conn.cursor() as cur:
        cur.execute("SELECT to_regclass('contact') IS NOT NULL")
        return cur.fetchone()[0]


# --- The migration ledger (identity/migrations.py) -----------------------------------

# One key for every migration run: concurrent runs wait for each other. A session lock,
# since every migration commits on its own.
LOCK_MIGRATIONS = "SELECT pg_advisory_lock(hashtextextended('identity schema migrations', 0))"

CREATE_MIGRATION_LEDGER = """
CREATE TABLE IF NOT EXISTS schema_migration (
    name       text PRIMARY KEY,
    checksum   text NOT NULL,  -- SHA-256 of the file as applied, in hex
    appliedAt  timestamptz NOT NULL DEFAULT now()
)
"""

APPLIED_MIGRATIONS = "SELECT name, checksum FROM schema_migration"

RECORD_MIGRATION = "INSERT INTO schema_migration (name, checksum) VALUES (%(name)s, %(checksum)s)"


def lock_migrations(conn) -> None:
    with conn.cursor() as cur:
        cur.execute(LOCK_MIGRATIONS)


def create_migration_ledger(conn) -> None:
    with conn.cursor() as cur:
        cur.execute(CREATE_MIGRATION_LEDGER)


def applied_migrations(conn) -> dict[str, str]:
    """name -> checksum of every migration the database has applied."""
    with conn.cursor() as cur:
        cur.execute(APPLIED_MIGRATIONS)
        return dict(cur.fetchall())


def record_migration(conn, name: str, checksum: str) -> None:
    with conn.cursor() as cur:
        cur.execute(RECORD_MIGRATION, {"name": name, "checksum": checksum})
