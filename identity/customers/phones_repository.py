"""The SQL of renormalise.py: stored phone numbers rewritten to a new normal form.

Connection first, parameters bound, as in repository.py. The reads and the locks of a
rewrite are repository.py's own (find_customer, lock_all); only the rewrite is here.
"""

from .repository import value_lock_keys

# Every distinct phone number the service stores: on rows (live or soft-deleted), on the
# stored blocklist and among the suspected hubs. One sequential scan of contact.
STORED_PHONE_NUMBERS = """
SELECT phoneNumber FROM contact WHERE phoneNumber IS NOT NULL
UNION
SELECT value FROM blocked_value WHERE kind = 'phoneNumber'
UNION
SELECT value FROM suspected_hub WHERE kind = 'phoneNumber'
"""

# One phone's stored spellings become its normal form, under the locks of the phone and
# of its spellings (renormalise.py takes them first):
#   1. live rows (an index scan per spelling; updatedAt is stamped by the trigger);
#   2. the stored blocklist: the spellings' entries become one entry for the normal form,
#      with its lock key, the oldest entry's request id and time;
#   3. suspected hubs: at most one unresolved entry per value (the partial unique index),
#      so of the unresolved entries of the phone and its spellings all but the first are
#      resolved; then every entry takes the normal form.
# Each statement sees the previous ones' changes.
RESPELL_PHONE_NUMBER = """
UPDATE contact SET phoneNumber = %(phone_number)s
 WHERE deletedAt IS NULL AND phoneNumber = ANY(%(spellings)s);

WITH former AS (
    DELETE FROM blocked_value
     WHERE kind = 'phoneNumber' AND value = ANY(%(spellings)s)
    RETURNING blockedAt, requestId
)
INSERT INTO blocked_value (kind, value, lockKey, blockedAt, requestId)
SELECT 'phoneNumber', %(phone_number)s, %(lock_key)s, blockedAt, requestId
  FROM former
 ORDER BY blockedAt
 LIMIT 1
    ON CONFLICT (kind, value) DO NOTHING;

UPDATE suspected_hub AS hub SET resolvedAt = clock_timestamp()
 WHERE kind = 'phoneNumber' AND resolvedAt IS NULL
   AND (value = %(phone_number)s OR value = ANY(%(spellings)s))
   AND EXISTS (SELECT FROM suspected_hub AS earlier
                WHERE earlier.kind = 'phoneNumber' AND earlier.resolvedAt IS NULL
                  AND (earlier.value = %(phone_number)s OR earlier.value = ANY(%(spellings)s))
                  AND earlier.id < hub.id);

UPDATE suspected_hub SET value = %(phone_number)s
 WHERE kind = 'phoneNumber' AND value = ANY(%(spellings)s)
"""

# Soft-deleted rows keep no customer and need no lock, but erasure finds values on them
# (repository.ERASE_CUSTOMER): they take the normal form too, all in one statement
# (old_spellings[n] becomes new_forms[n]).
RESPELL_DELETED_ROWS = """
UPDATE contact SET phoneNumber = respelling.new_form
  FROM unnest(%(old_spellings)s::text[], %(new_forms)s::text[]) AS respelling (old, new_form)
 WHERE contact.deletedAt IS NOT NULL AND contact.phoneNumber = respelling.old
"""


def stored_phone_numbers(conn) -> list[str]:
    with conn.cursor() as cur:
        cur.execute(STORED_PHONE_NUMBERS)
        return [value for (value,) in cur]


def respell(conn, phone_number: str, spellings: list[str]) -> None:
    """RESPELL_PHONE_NUMBER, in the caller's transaction."""
    params = {
        "phone_number": phone_number,
        "spellings": spellings,
        "lock_key": value_lock_keys(None, phone_number)[0],
    }
    with conn.cursor() as cur:
        cur.execute(RESPELL_PHONE_NUMBER, params)


def respell_deleted_rows(conn, new_forms: dict[str, str]) -> int:
    """RESPELL_DELETED_ROWS for {stored spelling: normal form}; the rows changed."""
    with conn.cursor() as cur:
        cur.execute(
            RESPELL_DELETED_ROWS,
            {"old_spellings": list(new_forms), "new_forms": list(new_forms.values())},
        )
        return cur.rowcount
