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

The result is the batch's writes with final links: new rows pointing straight at their
customer's primary after the whole batch, and the existing primaries that were demoted.
"""

from dataclasses import dataclass, field
from datetime import datetime
from typing import NamedTuple

from identity.customers.linking import creation_order
from identity.customers.reconcile import Outcome, brings_new_value, outcome_of

from .orders import Order

# New rows get provisional ids above any real one, in creation order, so creation_order()
# puts them after every stored row of the same createdAt, as their real ids will.
_PROVISIONAL = 1 << 62


class Owner(NamedTuple):
    """A value the database already holds: its kind, the value, its customer's primary."""

    email: str | None
    phone_number: str | None
    primary_id: int
    primary_created_at: datetime


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

    @property
    def changes_nothing(self) -> bool:
        return not self.new_rows and not self.demoted


class BatchLinker:
    def __init__(self, owners: list[Owner]):
        self._email_owner: dict[str, int] = {}
        self._phone_owner: dict[str, int] = {}
        self._parent: dict[int, int] = {}  # union-find over primaries; a root is a primary
        self._primary: dict[int, _Primary] = {}
        self.stored_primaries: set[int] = set()
        for owner in owners:
            if owner.email is not None:
                self._email_owner.setdefault(owner.email, owner.primary_id)
            elif owner.phone_number is not None:  # every owner holds one of the two
                self._phone_owner.setdefault(owner.phone_number, owner.primary_id)
            self._primary[owner.primary_id] = _Primary(owner.primary_id, owner.primary_created_at)
            self._parent[owner.primary_id] = owner.primary_id
            self.stored_primaries.add(owner.primary_id)
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
        for loser in demoted:
            self._parent[loser] = survivor
            self._bridged_by.setdefault(loser, (email, phone_number))
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
        return BatchPlan(self._new_rows, links, demoted, self._outcomes)
