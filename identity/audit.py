"""`flask --app identity audit`: check SPEC §6 invariants 1-3 over the whole table.

Read-only; safe against a live database. Each check is one query or one pass, so a
reviewer can hold it against the invariant it names. Exits 1 and lists the offending rows
when any check fails.
"""

from dataclasses import dataclass

import click
import psycopg2
from flask import current_app
from flask.cli import with_appcontext

# §6.1: a live secondary must point at a live primary (no chains, nothing dangling).
BROKEN_LINKS = """
SELECT row.id, row.linkedId
  FROM contact AS row
  LEFT JOIN contact AS target ON target.id = row.linkedId AND target.deletedAt IS NULL
 WHERE row.deletedAt IS NULL
   AND row.linkPrecedence = 'secondary'
   AND (target.id IS NULL OR target.linkPrecedence <> 'primary')
 ORDER BY row.id
"""

# §6.3: a customer's primary is its oldest live row.
OLDER_THAN_PRIMARY = """
SELECT row.id, row.linkedId
  FROM contact AS row
  JOIN contact AS primary_row ON primary_row.id = row.linkedId
 WHERE row.deletedAt IS NULL
   AND (row.createdAt, row.id) < (primary_row.createdAt, primary_row.id)
 ORDER BY row.id
"""

# §6.2 is checked in Python over these: every live row with the customer it belongs to.
LIVE_ROWS = """
SELECT id, COALESCE(linkedId, id) AS customer, email, phoneNumber
  FROM contact
 WHERE deletedAt IS NULL
"""


@dataclass(frozen=True)
class Violation:
    invariant: str
    description: str
    row_ids: tuple[int, ...]

    def __str__(self) -> str:
        return f"{self.invariant}: {self.description}: rows {', '.join(map(str, self.row_ids))}"


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


class _Components:
    """Union-find over row ids: rows that share a value end up in one component."""

    def __init__(self):
        self.parent: dict[int, int] = {}

    def find(self, item: int) -> int:
        self.parent.setdefault(item, item)
        while self.parent[item] != item:
            self.parent[item] = self.parent[self.parent[item]]
            item = self.parent[item]
        return item

    def union(self, a: int, b: int) -> None:
        self.parent[self.find(a)] = self.find(b)


def _customers_sharing_values(cur) -> list[Violation]:
    """§6.2: rows that share a value, directly or through other rows, have one primary.

    The converse (a customer's rows are connected through shared values) is not checked:
    a bridging checkout that brings nothing new merges two customers without a row of its
    own (SPEC §5, worked example B), so their rows need not share a value.
    """
    cur.execute(LIVE_ROWS)
    components = _Components()
    first_row_with: dict[tuple[str, str], int] = {}
    customer_of: dict[int, int] = {}
    for row_id, customer, email, phone_number in cur:
        customer_of[row_id] = customer
        components.find(row_id)
        for value in (("email", email), ("phone", phone_number)):
            if value[1] is not None:
                components.union(row_id, first_row_with.setdefault(value, row_id))

    customers_of_component: dict[int, set[int]] = {}
    for row_id, customer in customer_of.items():
        customers_of_component.setdefault(components.find(row_id), set()).add(customer)
    return [
        Violation("§6.2", "customers share an e-mail or phone number", tuple(sorted(customers)))
        for customers in customers_of_component.values()
        if len(customers) > 1
    ]


def find_violations(conn) -> list[Violation]:
    with conn.cursor() as cur:
        return _broken_links(cur) + _older_than_primary(cur) + _customers_sharing_values(cur)


@click.command("audit")
@with_appcontext
def audit_command() -> None:
    """Check SPEC §6 invariants 1-3 over the whole contact table; exit 1 on a violation."""
    conn = psycopg2.connect(current_app.config["DATABASE_URL"])
    try:
        conn.set_session(readonly=True, isolation_level="REPEATABLE READ")
        violations = find_violations(conn)
    finally:
        conn.close()
    for violation in violations:
        click.echo(str(violation))
    if violations:
        raise SystemExit(1)
    click.echo("audit: no violations of SPEC §6 invariants 1-3")
