"""The import's SQL, named and commented; the connection (or cursor) comes first.

The locks are /identify's own statements (identity.customers.repository.LOCK_VALUE_KEYS and
LOCK_ROOTS) with the lock keys built by its own function, so a batch and a checkout
that touch the same value or customer always wait for each other.
"""

import io
from datetime import datetime

from identity.customers import repository as service
from identity.customers.model import ContactRow
from identity.database import transaction

from .linker import Owner

# The owners of the batch's values: for every e-mail and phone number that a live row
# holds, the root that row's stored links lead to (SPEC §6.1: a secondary's linkedId is
# its primary) and, when the root is a live primary, its id and createdAt; for an orphan
# (SPEC §2: its primary was soft-deleted) those two are null.
# One value at a time (unnest, then a LATERAL look-up): an index look-up by e-mail or
# phone number on the partial indexes of live rows, then a primary-key look-up of the
# row's root, whatever the table's size when the plan was made. One row per value is
# enough: under the batch's locks every row holding a value has the same root (§6.2).
VALUE_OWNERS = """
SELECT value, NULL, owner.root_id, owner.primary_id, owner.primary_created_at
  FROM unnest(%(emails)s::text[]) AS value
 CROSS JOIN LATERAL (
       SELECT COALESCE(row.linkedId, row.id) AS root_id,
              primary_row.id AS primary_id, primary_row.createdAt AS primary_created_at
         FROM contact AS row
         LEFT JOIN LATERAL (
              SELECT id, createdAt FROM contact
               WHERE id = COALESCE(row.linkedId, row.id) AND deletedAt IS NULL
               LIMIT 1) AS primary_row ON true
        WHERE row.email = value AND row.deletedAt IS NULL
        LIMIT 1) AS owner
UNION ALL
SELECT NULL, value, owner.root_id, owner.primary_id, owner.primary_created_at
  FROM unnest(%(phone_numbers)s::text[]) AS value
 CROSS JOIN LATERAL (
       SELECT COALESCE(row.linkedId, row.id) AS root_id,
              primary_row.id AS primary_id, primary_row.createdAt AS primary_created_at
         FROM contact AS row
         LEFT JOIN LATERAL (
              SELECT id, createdAt FROM contact
               WHERE id = COALESCE(row.linkedId, row.id) AND deletedAt IS NULL
               LIMIT 1) AS primary_row ON true
        WHERE row.phoneNumber = value AND row.deletedAt IS NULL
        LIMIT 1) AS owner
"""

# Every live row linked to these soft-deleted primaries (the orphans, SPEC §2), which
# linking.relink presents as customers: an index look-up by linkedId. Sent only for a
# batch that meets an orphan's value.
ORPHAN_ROWS = """
SELECT id, email, phoneNumber, linkedId, linkPrecedence, createdAt
  FROM contact
 WHERE linkedId = ANY(%(root_ids)s::integer[]) AND deletedAt IS NULL
 ORDER BY createdAt, id
"""

# Statistics for the planner, refreshed as the import grows the table (see
# Loader._keep_statistics): plans made for a young table (a scan of a whole index, a
# foreign-key check by sequential scan) get slower with every batch. ANALYZE reads a
# sample, takes no lock that a reader or writer waits for, and makes cached plans
# (the foreign keys' checks among them) be made again.
ANALYZE_CONTACTS = "ANALYZE contact"

# How many live rows the planner believes the table has (-1: never analysed).
ESTIMATED_ROWS = "SELECT reltuples::bigint FROM pg_class WHERE oid = 'contact'::regclass"

# Ids for the batch's new rows, taken from the table's own identity sequence, so rows
# inserted by /identify and by the import never collide. A batch needs its ids before it
# writes: new secondaries name new primaries of the same batch.
RESERVE_IDS = """
SELECT nextval(pg_get_serial_sequence('contact', 'id')) FROM generate_series(1, %(count)s)
"""

# The batch's new rows with their ids, links and the createdAt of their orders. COPY
# writes given values into the identity column (as INSERT's OVERRIDING SYSTEM VALUE).
COPY_CONTACTS = """
COPY contact (id, email, phoneNumber, linkedId, linkPrecedence, createdAt) FROM STDIN
"""

# customer_created / secondary_added for the batch's new rows, as /identify's
# INSERT_CONTACT records them, naming each row's primary after the batch; in id order,
# which is creation order. Written before the demotions, so replaying the history in
# event order rebuilds every link.
RECORD_NEW_ROWS = """
INSERT INTO contact_event (requestId, kind, contactId, primaryId, email, phoneNumber)
SELECT %(request_id)s,
       CASE WHEN linkedId IS NULL THEN 'customer_created' ELSE 'secondary_added' END,
       id, COALESCE(linkedId, id), email, phoneNumber
  FROM contact
 WHERE id = ANY(%(new_ids)s::integer[])
 ORDER BY id
"""

# The write path's DEMOTE_PRIMARIES for many losers at once, each with its own survivor:
# every loser becomes a secondary of its survivor and every live row that pointed at it
# now points at the survivor (no chains, §6.1; two updates, of disjoint rows: losers are
# primaries, so none of them points at another); the history gets the same events as a
# merge by /identify: primary_demoted with the values that bridged the customers, and
# rows_repointed naming the secondaries that followed. The parts of one WITH statement
# share one snapshot, so `former_links` sees the links before the update.
DEMOTE_PRIMARIES_BATCH = """
WITH demotion AS (
    SELECT * FROM unnest(%(loser_ids)s::integer[], %(survivor_ids)s::integer[],
                         %(emails)s::text[], %(phone_numbers)s::text[])
           AS d (loser_id, survivor_id, email, phone_number)
),
former_links AS (
    SELECT demotion.loser_id, demotion.survivor_id,
           array_agg(contact.id ORDER BY contact.id) AS row_ids
      FROM demotion JOIN contact ON contact.linkedId = demotion.loser_id
     WHERE contact.deletedAt IS NULL
     GROUP BY demotion.loser_id, demotion.survivor_id
),
demoted AS (
    UPDATE contact
       SET linkedId = demotion.survivor_id, linkPrecedence = 'secondary'
      FROM demotion
     WHERE contact.id = demotion.loser_id AND contact.deletedAt IS NULL
),
repointed AS (
    UPDATE contact
       SET linkedId = demotion.survivor_id
      FROM demotion
     WHERE contact.linkedId = demotion.loser_id AND contact.deletedAt IS NULL
)
INSERT INTO contact_event (requestId, kind, contactId, primaryId, email, phoneNumber, repointedIds)
SELECT %(request_id)s, 'primary_demoted', loser_id, survivor_id, email, phone_number, NULL
  FROM demotion
UNION ALL
SELECT %(request_id)s, 'rows_repointed', loser_id, survivor_id, NULL, NULL, row_ids
  FROM former_links
"""

_COPY_ESCAPES = str.maketrans({"\\": "\\\\", "\t": "\\t", "\n": "\\n", "\r": "\\r"})


def _copy_field(value) -> str:
    if value is None:
        return "\\N"
    if isinstance(value, datetime):
        return value.isoformat()
    return str(value).translate(_COPY_ESCAPES)


def _copy_data(rows: list[tuple]) -> io.StringIO:
    """COPY's text format: tab-separated, \\N for null, backslash escapes."""
    return io.StringIO("".join("\t".join(map(_copy_field, row)) + "\n" for row in rows))


def analyze(cur) -> None:
    transaction.execute(cur, ANALYZE_CONTACTS)


def estimated_rows(cur) -> int:
    transaction.execute(cur, ESTIMATED_ROWS)
    return max(0, cur.fetchone()[0])


def begin_and_lock_values(cur, emails: list[str], phone_numbers: list[str]) -> list[Owner]:
    """BEGIN, take /identify's value locks for every value of the batch (in key order),
    and read the values' owners under them: one round trip."""
    keys = [
        *(key for email in emails for key in service.value_lock_keys(email, None)),
        *(key for phone in phone_numbers for key in service.value_lock_keys(None, phone)),
    ]
    params = {"value_keys": keys, "emails": emails, "phone_numbers": phone_numbers}
    transaction.begin(cur, ";".join([service.LOCK_VALUE_KEYS, VALUE_OWNERS]), params)
    return [Owner(*row) for row in cur]


def lock_primaries(
    cur, emails: list[str], phone_numbers: list[str], root_ids: list[int]
) -> list[Owner]:
    """Take /identify's locks on these customers' roots (their primaries, or the deleted
    primary of orphans; in id order) and read the owners again under them: one round
    trip."""
    params = {
        "space": service.ROOT_LOCK_SPACE,
        "root_ids": root_ids,
        "emails": emails,
        "phone_numbers": phone_numbers,
    }
    transaction.execute(cur, ";".join([service.LOCK_ROOTS, VALUE_OWNERS]), params)
    return [Owner(*row) for row in cur]


def orphan_rows(cur, root_ids: list[int]) -> list[ContactRow]:
    transaction.execute(cur, ORPHAN_ROWS, {"root_ids": root_ids})
    return [ContactRow(*row) for row in cur]


def relink_orphans(cur, relinks: dict[int, int | None], request_id: str) -> None:
    """/identify's RELINK_ROWS: the orphans stored as linking.relink presents them, with
    their customer_split events."""
    params = {
        "relinked_ids": list(relinks),
        "relinked_to": list(relinks.values()),
        "request_id": request_id,
    }
    transaction.execute(cur, service.RELINK_ROWS, params)


def reserve_ids(cur, count: int) -> list[int]:
    transaction.execute(cur, RESERVE_IDS, {"count": count})
    return sorted(row[0] for row in cur)


def copy_contacts(cur, rows: list[tuple]) -> None:
    """rows: (id, email, phone_number, linked_id, link_precedence, created_at)."""
    cur.copy_expert(COPY_CONTACTS, _copy_data(rows))


def record_and_commit(cur, new_ids: list[int], demotions: list[tuple], request_id: str) -> None:
    """RECORD_NEW_ROWS, DEMOTE_PRIMARIES_BATCH for (loser_id, survivor_id, email,
    phone_number) tuples, then the COMMIT: one round trip."""
    statements = [RECORD_NEW_ROWS] if new_ids else []
    params = {"request_id": request_id, "new_ids": new_ids}
    if demotions:
        statements.append(DEMOTE_PRIMARIES_BATCH)
        loser_ids, survivor_ids, emails, phone_numbers = map(list, zip(*demotions, strict=True))
        params.update(
            loser_ids=loser_ids,
            survivor_ids=survivor_ids,
            emails=emails,
            phone_numbers=phone_numbers,
        )
    transaction.commit(cur, ";".join(statements), params)
