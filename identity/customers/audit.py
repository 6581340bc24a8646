"""The audit (`flask --app identity audit`, identity/commands.py): check SPEC §6
invariants 1-3 over the whole table.

Read-only; safe against a live database. Each check is one query or one pass, so a
reviewer can hold it against the invariant it names. Exits 1 and lists the offending rows
when any check fails.
"""

from dataclasses import dataclass

from . import linking
from .model import ContactRow

# §6.1: a live secondary must point at a live primary (no chains, nothing dangling).
# A secondary whose primary was soft-deleted is an orphan, which SPEC §2 allows: those
# are listed by ORPHANS instead.
BROKEN_LINKS = """
SELECT row.id, row.linkedId
  FROM contact AS row
  JOIN contact AS target ON target.id = row.linkedId
 WHERE row.deletedAt IS NULL
   AND row.linkPrecedence = 'secondary'
   AND target.deletedAt IS NULL
   AND target.linkPrecedence <> 'primary'
 ORDER BY row.id
"""

# Live secondaries of a soft-deleted row, with that row's id: shown as SPEC §2 says and
# stored that way by the next write that touches them.
ORPHANS = """
SELECT row.linkedId, array_agg(row.id ORDER BY row.id)
  FROM contact AS row
  JOIN contact AS target ON target.id = row.linkedId
 WHERE row.deletedAt IS NULL AND target.deletedAt IS NOT NULL
 GROUP BY row.linkedId
 ORDER BY row.linkedId
"""

# §6.3: a customer's primary is its oldest live row (orphans are presented with their
# oldest row as primary, so they cannot break it).
OLDER_THAN_PRIMARY = """
SELECT row.id, row.linkedId
  FROM contact AS row
  JOIN contact AS primary_row ON primary_row.id = row.linkedId AND primary_row.deletedAt IS NULL
 WHERE row.deletedAt IS NULL
   AND (row.createdAt, row.id) < (primary_row.createdAt, primary_row.id)
 ORDER BY row.id
"""

# §6.2 is checked in Python over every live row; `orphan` marks rows whose stored primary
# is soft-deleted.
LIVE_ROWS = """
SELECT row.id, row.email, row.phoneNumber, row.linkedId, row.linkPrecedence, row.createdAt,
       target.deletedAt IS NOT NULL AS orphan
  FROM contact AS row
  LEFT JOIN contact AS target ON target.id = row.linkedId
 WHERE row.deletedAt IS NULL
"""


@dataclass(frozen=True)
class Violation:
    invariant: str
    description: str
    row_ids: tuple[int, ...]

    def __str__(self) -> str:
        return f"{self.invariant}: {self.description}: rows {', '.join(map(str, self.row_ids))}"


@dataclass(frozen=True)
class Orphans:
    """Live rows whose primary was soft-deleted: allowed (SPEC §2), not a violation."""

    deleted_primary: int
    row_ids: tuple[int, ...]

    def __str__(self) -> str:
        return (
            f"note: rows {', '.join(map(str, self.row_ids))} are orphans of the soft-deleted "
            f"primary {self.deleted_primary}; shown per SPEC §2, re-linked at the next write"
        )


def _broken_links(cur) -> list[Violation]:
    cur.execute(BROKEN_LINKS)
    return [
        Violation("§6.1", f"secondary links to {linked}, which is not a live primary", (row,))
        for row, linked in cur.fetchall()
    ]


def _older_than_primary(cur) -> list[Violation]:
    cur.execute(OLDER_THAN_PRIMARY)
    return [
        Violation("§6.3", f"row is older than its primary {linked}", (row, linked))
        for row, linked in cur.fetchall()
    ]


def find_orphans(conn) -> list[Orphans]:
    with conn.cursor() as cur:
        cur.execute(ORPHANS)
        return [Orphans(primary, tuple(row_ids)) for primary, row_ids in cur.fetchall()]


def _customers_sharing_values(cur) -> list[Violation]:
    """§6.2: rows that share a value, directly or through other rows, have one primary.

    Orphans count as the customer SPEC §2 presents them in. The converse (a customer's
    rows are connected through shared values) is not checked: a bridging checkout that
    brings nothing new merges two customers without a row of its own (SPEC §5, worked
    example B), so their rows need not share a value.
    """
    cur.execute(LIVE_ROWS)
    live = [(ContactRow(*row[:6]), orphan) for *row, orphan in cur.fetchall()]
    customer_of = {row.id: row.linked_id or row.id for row, _ in live}
    orphans_of: dict[int, list[ContactRow]] = {}
    for row, orphan in live:
        if orphan and row.linked_id is not None:  # an orphan is a secondary: always linked
            orphans_of.setdefault(row.linked_id, []).append(row)
    for deleted_primary, rows in orphans_of.items():
        for customer in linking.relink(rows, deleted_primary):
            customer_of.update(
                dict.fromkeys((row.id for row in customer.rows), customer.primary.id)
            )
    customers_per_component = (
        {customer_of[row.id] for row in component}
        for component in linking.components([row for row, _ in live])
    )
    return [
        Violation("§6.2", "customers share an e-mail or phone number", tuple(sorted(customers)))
        for customers in customers_per_component
        if len(customers) > 1
    ]


def find_violations(conn) -> list[Violation]:
    with conn.cursor() as cur:
        return _broken_links(cur) + _older_than_primary(cur) + _customers_sharing_values(cur)
