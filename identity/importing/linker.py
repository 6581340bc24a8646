"""SPEC §5 for a batch of orders, in memory: what a one-at-a-time replay would write.

Start from what the database holds for the batch's values (their owners: the primary of
the customer holding each value, and its createdAt), then take the orders oldest first,
each as POST /identify would (identity.customers.reconcile's rules):

- its customers C are the owners of its values, after the merges of earlier orders
  (a union-find whose roots are the current primaries);
- it inserts a row when it brings a value C lacks;
- the oldest of C's primaries survives and the others are demoted. A new row competes
  too: in /identify it is always the newest, but an imported order may be older than a
  customer it joins, and then its row becomes the primary (SPEC §6.3 by createdAt).

Values held only by orphans (SPEC §2: live rows of a soft-deleted primary) belong to the
customers that linking.relink presents for them, as for /identify: each group of orphans
sharing values, its oldest row the primary. An order that writes into such a customer
stores those links first, for every orphan of the same deleted primary (as /identify's
write does); an order that changes nothing stores nothing.

The result is the batch's writes with final links: new rows pointing straight at their
customer's primary after the whole batch, the existing primaries that were demoted, and
the orphans to relink.
"""

from dataclasses import dataclass, field
from datetime import datetime
from typing import NamedTuple

from identity.customers.linking import creation_order, relink
from identity.customers.model import ContactRow
from identity.customers.reconcile import Outcome, brings_new_value, outcome_of
from identity.database.transaction import RetryTransaction

from .orders import Order

# New rows get provisional ids above any real one, in creation order, so creation_order()
# puts them after every stored row of the same createdAt, as their real ids will.
_PROVISIONAL = 1 << 62


class Owner(NamedTuple):
    """A value the database already holds: its kind, the value, the root its row's stored
    links lead to (the row a writer locks), and that root when it is a live primary: its
    id and createdAt, both None for an orphan (the root is a soft-deleted primary)."""

    email: str | None
    phone_number: str | None
    root_id: int
    primary_id: int | None
    primary_created_at: datetime | None


class _Primary(NamedTuple):
    id: int
    created_at: datetime


@dataclass
class NewRow:
    provisional_id: int
    email: str | None
    phone_number: str | None
    created_at: datetime
    order_line: int


@dataclass
class BatchPlan:
    new_rows: list[NewRow]
    links: dict[int, int]  # every new row and stored primary -> its final primary
    demoted: dict[int, tuple[str | None, str | None]]  # stored primary -> bridging values
    outcomes: dict[Outcome, int] = field(default_factory=dict)
    relinks: dict[int, int | None] = field(default_factory=dict)  # orphan -> its linkedId

    @property
    def changes_nothing(self) -> bool:
        return not self.new_rows and not self.demoted


class BatchLinker:
    def __init__(self, owners: list[Owner], orphans: list[ContactRow]):
        """orphans: every live row linked to the soft-deleted roots among the owners'."""
        self._email_owner: dict[str, int] = {}
        self._phone_owner: dict[str, int] = {}
        self._parent: dict[int, int] = {}  # union-find over primaries; a root is a primary
        self._primary: dict[int, _Primary] = {}
        self.stored_primaries: set[int] = set()
        orphan_primary, self._relinks_of = _present_orphans(orphans)
        self._orphan_roots: dict[int, set[int]] = {}  # primary -> deleted roots it holds
        self._relinked: set[int] = set()  # deleted roots whose orphans this batch relinks
        for owner in owners:
            is_email, value = owner.email is not None, owner.email or owner.phone_number or ""
            if owner.primary_id is None or owner.primary_created_at is None:
                primary = _orphan_owner(orphan_primary, is_email, value)
                self._orphan_roots[primary.id] = {owner.root_id}
            else:
                primary = _Primary(owner.primary_id, owner.primary_created_at)
            index = self._email_owner if is_email else self._phone_owner
            index.setdefault(value, primary.id)
            self._primary[primary.id] = primary
            self._parent[primary.id] = primary.id
            self.stored_primaries.add(primary.id)
        self._new_rows: list[NewRow] = []
        self._bridged_by: dict[int, tuple[str | None, str | None]] = {}
        self._outcomes = dict.fromkeys(Outcome, 0)

    def _find(self, item: int) -> int:
        root = item
        while self._parent[root] != root:
            root = self._parent[root]
        while self._parent[item] != root:  # path compression
            self._parent[item], item = root, self._parent[item]
        return root

    def add(self, order: Order) -> None:
        """One order, as /identify would take it after every earlier order of the batch."""
        email, phone_number = order.email, order.phone_number
        owners = [
            index[value]
            for index, value in ((self._email_owner, email), (self._phone_owner, phone_number))
            if value is not None and value in index
        ]
        customers = {self._find(owner) for owner in owners}
        candidates = [self._primary[root] for root in customers]
        inserted = brings_new_value(email, phone_number, self._email_owner, self._phone_owner)
        if inserted:
            row = NewRow(
                _PROVISIONAL + len(self._new_rows),
                email,
                phone_number,
                order.created_at,
                order.line,
            )
            self._new_rows.append(row)
            self._primary[row.provisional_id] = _Primary(row.provisional_id, row.created_at)
            self._parent[row.provisional_id] = row.provisional_id
            candidates.append(self._primary[row.provisional_id])
        survivor = min(candidates, key=creation_order).id
        demoted = [root for root in customers if root != survivor]
        if inserted or demoted:
            for root in customers:
                self._relinked |= self._orphan_roots.get(root, set())
        for loser in demoted:
            self._parent[loser] = survivor
            self._bridged_by.setdefault(loser, (email, phone_number))
            self._orphan_roots.setdefault(survivor, set()).update(self._orphan_roots.pop(loser, ()))
        if inserted and survivor != row.provisional_id:
            self._parent[row.provisional_id] = survivor
        if email is not None:
            self._email_owner.setdefault(email, survivor)
        if phone_number is not None:
            self._phone_owner.setdefault(phone_number, survivor)
        self._outcomes[outcome_of(bool(demoted), inserted, bool(customers))] += 1

    def plan(self) -> BatchPlan:
        links = {item: self._find(item) for item in self._parent}
        demoted = {
            primary: self._bridged_by[primary]
            for primary in self.stored_primaries
            if links[primary] != primary
        }
        relinks = {
            row_id: linked_id
            for root in sorted(self._relinked)
            for row_id, linked_id in self._relinks_of[root].items()
        }
        return BatchPlan(self._new_rows, links, demoted, self._outcomes, relinks)


class OrphansChanged(RetryTransaction):
    """A value's orphan row was not among the orphans read after it: a writer relinked
    them in between. The batch starts again."""


def _orphan_owner(primary_of: dict, is_email: bool, value: str) -> _Primary:
    try:
        return primary_of[(is_email, value)]
    except KeyError:
        raise OrphansChanged() from None


def _present_orphans(
    orphans: list[ContactRow],
) -> tuple[dict[tuple[bool, str], _Primary], dict[int, dict[int, int | None]]]:
    """SPEC §2 for orphans, by /identify's own rule (linking.relink): the primary of the
    customer presented for each value, keyed (is an e-mail, value), and per deleted root
    the links that store those customers."""
    by_root: dict[int, list[ContactRow]] = {}
    for row in orphans:  # every one of them has a linkedId: the deleted root
        by_root.setdefault(row.linked_id or 0, []).append(row)
    primary_of: dict[tuple[bool, str], _Primary] = {}
    relinks_of: dict[int, dict[int, int | None]] = {}
    for root_id, rows in by_root.items():
        relinks_of[root_id] = {}
        for customer in relink(rows, root_id):
            relinks_of[root_id].update(customer.relinks)
            primary = _Primary(customer.primary.id, customer.primary.created_at)
            for row in customer.rows:
                if row.email is not None:
                    primary_of[(True, row.email)] = primary
                if row.phone_number is not None:
                    primary_of[(False, row.phone_number)] = primary
    return primary_of, relinks_of
