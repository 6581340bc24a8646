"""SPEC §5: link a checkout's e-mail and phone number into one customer.

The common checkout brings nothing new; it is answered from one read, outside any
transaction (a single statement sees one consistent snapshot). Anything else runs as one
write transaction that first takes the locks described in repository.begin_locked, reads
the customer again under them, decides, writes and commits.
"""

import enum
from dataclasses import dataclass

from . import repository
from .db import RetryTransaction
from .repository import ContactRow


class Outcome(enum.Enum):
    UNCHANGED = "unchanged"
    NEW_CUSTOMER = "new_customer"
    NEW_SECONDARY = "new_secondary"
    MERGE = "merge"


@dataclass(frozen=True)
class Customer:
    primary_contact_id: int
    emails: list[str]
    phone_numbers: list[str]
    secondary_contact_ids: list[int]


class CustomerChanged(RetryTransaction):
    """Another writer changed the customer between our read and our locks: start again."""


@dataclass(frozen=True)
class _Plan:
    """What SPEC §5 asks of a customer C for one request."""

    survivor: ContactRow | None  # the oldest primary; None when C is empty (§5.1)
    losers: list[int]  # the other primaries, to demote (§5.2, first bullet)
    insert: bool  # the request brings a value C lacks (§5.2, second bullet), or C is empty

    @property
    def changes_nothing(self) -> bool:
        return not self.insert and not self.losers


def creation_order(row) -> tuple:
    """SPEC §5's "oldest": createdAt, then id. Any row-like object with both will do."""
    return (row.created_at, row.id)


def brings_new_value(email: str | None, phone_number: str | None, knows_email, knows_phone) -> bool:
    """SPEC §5.2, second bullet: the request carries a value the customer lacks.

    knows_email and knows_phone are containers of the customer's values (sets here, the
    import's value index there)."""
    return (email is not None and email not in knows_email) or (
        phone_number is not None and phone_number not in knows_phone
    )


def outcome_of(merged: bool, inserted: bool, had_customer: bool) -> Outcome:
    if merged:
        return Outcome.MERGE
    if inserted:
        return Outcome.NEW_SECONDARY if had_customer else Outcome.NEW_CUSTOMER
    return Outcome.UNCHANGED


def _plan(rows: list[ContactRow], email: str | None, phone_number: str | None) -> _Plan:
    primaries = sorted((row for row in rows if row.is_primary), key=creation_order)
    if not primaries:
        return _Plan(survivor=None, losers=[], insert=True)
    known_emails = {row.email for row in rows}
    known_phones = {row.phone_number for row in rows}
    return _Plan(
        survivor=primaries[0],
        losers=[row.id for row in primaries[1:]],
        insert=brings_new_value(email, phone_number, known_emails, known_phones),
    )


def identify(
    conn, email: str | None, phone_number: str | None, request_id: str | None = None
) -> tuple[Customer, Outcome]:
    """Record one checkout; answer with its whole customer. Retry-safe as a unit.

    request_id goes into the merge history with every change the checkout makes."""
    rows = repository.find_customer(conn, email, phone_number)
    if _plan(rows, email, phone_number).changes_nothing:
        return consolidate(rows), Outcome.UNCHANGED
    seen_primary_ids = [row.id for row in rows if row.is_primary]
    return _write(conn, email, phone_number, seen_primary_ids, request_id)


def _write(
    conn,
    email: str | None,
    phone_number: str | None,
    seen_primary_ids: list[int],
    request_id: str | None,
) -> tuple[Customer, Outcome]:
    rows = repository.begin_locked(conn, email, phone_number, seen_primary_ids)
    primary_ids = [row.id for row in rows if row.is_primary]
    if not set(primary_ids) <= set(seen_primary_ids):
        # A primary we do not hold appeared (a merge or a new customer committed while
        # we waited). Locking it now could break the lock order: run_unit rolls back and
        # starts again.
        raise CustomerChanged()

    plan = _plan(rows, email, phone_number)
    demotion = {"survivor_id": plan.survivor.id, "loser_ids": plan.losers} if plan.losers else None
    linked_id = plan.survivor.id if plan.survivor else None
    request = {"email": email, "phone_number": phone_number, "request_id": request_id}
    new_row = repository.write_and_commit(conn, request, demotion, linked_id, plan.insert)

    if plan.losers:
        rows = [_demoted(row, plan.survivor.id, plan.losers) for row in rows]
    if new_row:
        rows.append(new_row)
    return consolidate(rows), _outcome(plan)


def _outcome(plan: _Plan) -> Outcome:
    return outcome_of(bool(plan.losers), plan.insert, plan.survivor is not None)


def _demoted(row: ContactRow, survivor_id: int, loser_ids: list[int]) -> ContactRow:
    """The row as DEMOTE_PRIMARIES leaves it."""
    if row.id in loser_ids or row.linked_id in loser_ids:
        return row._replace(linked_id=survivor_id, link_precedence="secondary")
    return row


def consolidate(rows: list[ContactRow]) -> Customer:
    """SPEC §3's answer: the primary's values first, then in creation order, no repeats."""
    primary = next(row for row in rows if row.is_primary)
    ordered = [primary] + [row for row in rows if row is not primary]
    return Customer(
        primary_contact_id=primary.id,
        emails=list(dict.fromkeys(row.email for row in ordered if row.email is not None)),
        phone_numbers=list(
            dict.fromkeys(row.phone_number for row in ordered if row.phone_number is not None)
        ),
        secondary_contact_ids=[row.id for row in ordered if not row.is_primary],
    )
