"""SPEC §5: link a checkout's e-mail and phone number into one customer.

The common checkout brings nothing new; it is answered from one read, outside any
transaction (a single statement sees one consistent snapshot). Anything else runs as one
write transaction that first takes the locks described in repository.LOCK_ALL,
reads the customer again under them, decides, writes and commits.

Customers are read as SPEC §2 presents them (linking.customers): orphans of a
soft-deleted primary are grouped by shared values, and a write that touches them stores
those links before it applies §5.
"""

import enum
from dataclasses import dataclass
from typing import NamedTuple

from identity.database.transaction import RetryTransaction

from . import hubs, linking, repository
from .linking import LinkedCustomer
from .model import ContactRow, Customer, consolidate


class Outcome(enum.Enum):
    UNCHANGED = "unchanged"
    NEW_CUSTOMER = "new_customer"
    NEW_SECONDARY = "new_secondary"
    MERGE = "merge"


class Checkout(NamedTuple):
    """What one POST /identify did: its customer, its outcome, the suspected hubs it
    recorded, and whether it put a hub on the stored blocklist (SPEC §13; empty and
    False for nearly every checkout)."""

    customer: Customer
    outcome: Outcome
    new_hubs: list[hubs.SuspectedHub]
    blocked_hub: bool = False


class CustomerChanged(RetryTransaction):
    """Another writer changed the customer between our read and our locks: start again."""


@dataclass(frozen=True)
class _Plan:
    """What SPEC §5 asks of a customer C for one request."""

    customers: list[LinkedCustomer]  # the customers M touches, oldest primary first
    survivor: ContactRow | None  # the oldest primary; None when C is empty (§5.1)
    losers: list[int]  # the other primaries, to demote (§5.2, first bullet)
    insert: bool  # the request brings a value C lacks (§5.2, second bullet), or C is empty
    relinks: dict[int, int | None]  # orphans of the groups involved, stored as presented

    @property
    def changes_nothing(self) -> bool:
        # Orphans alone are no reason to write: reads present them as SPEC §2 says.
        return not self.insert and not self.losers

    @property
    def rows(self) -> list[ContactRow]:
        """The rows of C, every customer M touches, as stored: oldest customer first."""
        return [row for customer in self.customers for row in customer.rows]

    @property
    def root_ids(self) -> list[int]:
        return sorted({customer.root_id for customer in self.customers})

    @property
    def survivor_id(self) -> int:
        """Asked only when C is not empty (there are losers, or hubs among its rows)."""
        assert self.survivor is not None
        return self.survivor.id

    def answer_rows(self, new_row: ContactRow | None) -> list[ContactRow]:
        """C as the plan leaves it: relinked, demoted, with the new row."""
        rows = self.rows
        if self.losers:
            rows = [_demoted(row, self.survivor_id, self.losers) for row in rows]
        return sorted(rows, key=lambda row: (row.created_at, row.id)) + (
            [new_row] if new_row else []
        )


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
    found = linking.customers(rows)
    touched = linking.touched(found, email, phone_number)
    if not touched:
        return _Plan(customers=[], survivor=None, losers=[], insert=True, relinks={})
    touched_roots = {customer.root_id for customer in touched}
    relinks = {
        row_id: linked_id
        for customer in found
        if customer.root_id in touched_roots
        for row_id, linked_id in customer.relinks.items()
    }
    rows_of_c = [row for customer in touched for row in customer.rows]
    known_emails = {row.email for row in rows_of_c}
    known_phones = {row.phone_number for row in rows_of_c}
    return _Plan(
        customers=touched,
        survivor=touched[0].primary,
        losers=[customer.primary.id for customer in touched[1:]],
        insert=brings_new_value(email, phone_number, known_emails, known_phones),
        relinks=relinks,
    )


_DEFAULT_HUB_RULE = hubs.Rule()


def identify(
    conn,
    email: str | None,
    phone_number: str | None,
    request_id: str | None = None,
    hub_rule: hubs.Rule = _DEFAULT_HUB_RULE,
) -> Checkout:
    """Record one checkout; answer with its whole customer. Retry-safe as a unit.

    request_id goes into the merge history with every change the checkout makes."""
    plan = _plan(repository.find_customer(conn, email, phone_number), email, phone_number)
    if plan.changes_nothing:
        return Checkout(consolidate(plan.answer_rows(None)), Outcome.UNCHANGED, [])
    return _write(conn, email, phone_number, plan.root_ids, request_id, hub_rule)


def _write(
    conn,
    email: str | None,
    phone_number: str | None,
    seen_root_ids: list[int],
    request_id: str | None,
    hub_rule: hubs.Rule,
) -> Checkout:
    rows = repository.begin_locked(conn, email, phone_number, seen_root_ids)
    plan = _plan(rows, email, phone_number)
    if not set(plan.root_ids) <= set(seen_root_ids):
        # A customer we do not hold appeared (a merge, a new customer or a relink
        # committed while we waited). Locking it now could break the lock order:
        # run_unit rolls back and starts again.
        raise CustomerChanged()

    demotion = {"survivor_id": plan.survivor_id, "loser_ids": plan.losers} if plan.losers else None
    linked_id = plan.survivor.id if plan.survivor else None
    new_hubs, blocked_hub = _record_hubs(conn, plan, email, phone_number, request_id, hub_rule)
    request = {"email": email, "phone_number": phone_number, "request_id": request_id}
    new_row = repository.write_and_commit(
        conn, request, plan.relinks, demotion, linked_id, plan.insert
    )
    customer = consolidate(plan.answer_rows(new_row))
    return Checkout(customer, _outcome(plan), new_hubs, blocked_hub)


def _record_hubs(
    conn,
    plan: _Plan,
    email: str | None,
    phone_number: str | None,
    request_id: str | None,
    hub_rule: hubs.Rule,
) -> tuple[list[hubs.SuspectedHub], bool]:
    """SPEC §13, from the rows this write has just read under its locks: the hubs newly
    recorded, and whether a value went on the stored blocklist (HUB_ACTION=block). Only
    a new row adds a partner to a value (hubs.py says why), so a write without one
    checks nothing, and a write that finds no hub sends no statement: the extra round
    trip is paid only while a hub is growing. This write still stores its row: the
    block applies from the next request on."""
    if not plan.insert:
        return [], False
    found = hubs.suspected(plan.rows, email, phone_number, hub_rule.max_partners)
    if not found:
        return [], False
    recorded, blocked = repository.record_suspected_hubs(
        conn, found, plan.survivor_id, request_id, hub_rule.block
    )
    return [hub for hub in found if hub.kind in recorded], bool(blocked)


def _outcome(plan: _Plan) -> Outcome:
    return outcome_of(bool(plan.losers), plan.insert, plan.survivor is not None)


def _demoted(row: ContactRow, survivor_id: int, loser_ids: list[int]) -> ContactRow:
    """The row as DEMOTE_PRIMARIES leaves it."""
    if row.id in loser_ids or row.linked_id in loser_ids:
        return row._replace(linked_id=survivor_id, link_precedence="secondary")
    return row
