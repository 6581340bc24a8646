"""Which live rows form one customer, and how to link rows again by SPEC §5's rule.

Pure functions over ContactRow lists; no SQL. Two situations need more than "a primary and
the rows that point at it":

- Orphans (SPEC §2): a primary soft-deleted directly in the database leaves its live
  secondaries pointing at a deleted row. They stay one customer wherever they share
  values, each such group with its oldest row as primary. Reads present them that way;
  the next write that touches them stores it (relink).
- Corrections (SPEC §9): after a value is detached, the customer's remaining rows are
  linked again by the same rule, so one customer may become several.

Both use `relink`: connected components by shared values, oldest row = primary.
"""

from dataclasses import dataclass, field

from .model import ContactRow


@dataclass
class LinkedCustomer:
    """One customer as SPEC §2 presents it.

    root_id: the row id its stored links lead to (its primary, or the deleted primary of
    orphans): the id a writer locks before changing any of its rows. rows: oldest first,
    with linkedId and linkPrecedence as presented. relinks: {row id: new linkedId} for
    every row whose stored link differs from the presented one (empty when the customer
    is stored as presented)."""

    root_id: int
    rows: list[ContactRow]
    relinks: dict[int, int | None] = field(default_factory=dict)

    @property
    def primary(self) -> ContactRow:
        return next(row for row in self.rows if row.is_primary)


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


def components(rows: list[ContactRow]) -> list[list[ContactRow]]:
    """Rows connected through shared e-mails or phone numbers; each oldest first."""
    union_find = _Components()
    first_row_with: dict[tuple[str, str], int] = {}
    for row in rows:
        union_find.find(row.id)
        for kind, value in (("email", row.email), ("phone", row.phone_number)):
            if value is not None:
                union_find.union(row.id, first_row_with.setdefault((kind, value), row.id))
    grouped: dict[int, list[ContactRow]] = {}
    for row in sorted(rows, key=creation_order):
        grouped.setdefault(union_find.find(row.id), []).append(row)
    return sorted(grouped.values(), key=lambda group: creation_order(group[0]))


def relink(rows: list[ContactRow], root_id: int | None = None) -> list[LinkedCustomer]:
    """SPEC §5's rule over rows: each component by shared values is one customer whose
    oldest row is primary and the others its secondaries. Oldest customer first."""
    customers = []
    for group in components(rows):
        primary = group[0]
        presented, relinks = [], {}
        for row in group:
            linked_id = None if row is primary else primary.id
            if row.linked_id != linked_id or row.is_primary != (linked_id is None):
                relinks[row.id] = linked_id
            presented.append(
                row._replace(
                    linked_id=linked_id,
                    link_precedence="primary" if linked_id is None else "secondary",
                )
            )
        customers.append(LinkedCustomer(root_id or primary.id, presented, relinks))
    return customers


def customers(rows: list[ContactRow]) -> list[LinkedCustomer]:
    """The customers among whole stored groups of live rows (as the resolve query returns
    them), oldest first. A group whose root is a live primary is one customer as stored;
    a group whose root is gone (orphans) is presented by `relink`."""
    by_id = {row.id: row for row in rows}
    groups: dict[int, list[ContactRow]] = {}
    for row in rows:
        groups.setdefault(_root(row, by_id), []).append(row)
    found = []
    for root_id, group in groups.items():
        root = by_id.get(root_id)
        if root is not None and root.is_primary:
            found.append(LinkedCustomer(root_id, sorted(group, key=creation_order)))
        else:
            found.extend(relink(group, root_id))
    return sorted(found, key=lambda customer: creation_order(customer.primary))


def touched(
    found: list[LinkedCustomer], email: str | None, phone_number: str | None
) -> list[LinkedCustomer]:
    """The customers holding the e-mail or the phone number (M of SPEC §5 touches them)."""
    return [
        customer
        for customer in found
        if any(
            (email is not None and row.email == email)
            or (phone_number is not None and row.phone_number == phone_number)
            for row in customer.rows
        )
    ]


def _root(row: ContactRow, by_id: dict[int, ContactRow]) -> int:
    """Follow stored links within the rows until a primary or a row that is not among them
    (a deleted primary). Chains break SPEC §6.1 but must not hang a request."""
    seen = set()
    while row.linked_id is not None and row.linked_id in by_id and row.id not in seen:
        seen.add(row.id)
        row = by_id[row.linked_id]
    return row.id if row.linked_id is None else row.linked_id


def creation_order(row) -> tuple:
    """SPEC §5's "oldest": createdAt, then id. Any row-like object with both will do."""
    return (row.created_at, row.id)
