"""SPEC §9: support corrects the data. Detach a value from a customer; erase a customer.

Both run as one write transaction under the same locks as /identify's writes (see
repository.LOCK_ALL): the value's advisory lock (detach), then the customer's root;
then the customer is read again and must still have that root, or the unit starts again
(CustomerChanged, retried by db.run_unit like any conflict). So a concurrent /identify
either runs wholly before or wholly after a correction.

Both are safe to run twice. When the connection is lost after the COMMIT was sent, the
service cannot know whether it went through, and runs the correction again with the same
request id. A second run that finds nothing to do (the value gone: 409; the row erased:
404) first looks for the events of its own request id: if the first run committed, it
answers as that run would have.
"""

from dataclasses import dataclass

from . import linking, repository
from .lookups import NotFound
from .model import Customer, consolidate
from .reconcile import CustomerChanged


class ValueNotInCustomer(Exception):
    """The customer does not hold the value to detach (HTTP 409)."""


@dataclass(frozen=True)
class Erased:
    primary_contact_id: int
    contact_ids: list[int]


def detach(
    conn, contact_id: int, kind: str, value: str, block: bool, request_id: str | None
) -> list[Customer]:
    """Remove the value from the customer of contact_id and link its remaining rows
    again by §5's rule; the resulting customers, oldest primary first."""
    email, phone_number = (value, None) if kind == "email" else (None, value)
    value_keys = repository.value_lock_keys(email, phone_number)
    try:
        customer, group = _lock_customer(conn, contact_id, value_keys)
        holding = [row for row in customer.rows if _holds(row, kind, value)]
        if not holding:
            raise ValueNotInCustomer()
    except (NotFound, ValueNotInCustomer):
        done = _detached_by(conn, request_id, kind, value)
        if done is None:
            raise
        return done

    remaining = [
        _without(row, kind, value)
        for row in customer.rows
        if not (_holds(row, kind, value) and _other_value(row, kind) is None)
    ]
    resulting = linking.relink(remaining, customer.root_id)
    relinks = {
        row_id: linked_id
        for other in [*resulting, *(c for c in group if c is not customer)]
        for row_id, linked_id in other.relinks.items()
    }
    detached = {
        "kind": kind,
        "value": value,
        "row_ids": [row.id for row in holding],
        "primary_id": customer.primary.id,
        "lock_key": value_keys[0],
        "request_id": request_id,
    }
    repository.detach_and_commit(conn, detached, relinks, block)
    return [consolidate(result.rows) for result in resulting]


def erase(conn, contact_id: int, request_id: str | None) -> Erased:
    """Erase the customer of contact_id: its values everywhere, its rows soft-deleted."""
    try:
        customer, _ = _lock_customer(conn, contact_id, [])
    except NotFound:
        done = request_id and repository.erased_by_request(conn, request_id, contact_id)
        if not done:
            raise
        return Erased(*done)
    row_ids = sorted(row.id for row in customer.rows)
    repository.erase_and_commit(conn, row_ids, customer.primary.id, request_id)
    return Erased(customer.primary.id, row_ids)


def _detached_by(conn, request_id: str | None, kind: str, value: str) -> list[Customer] | None:
    """The customers an earlier run of this request's detach left, as they are now
    (oldest primary first); None when this request detached nothing."""
    if request_id is None:
        return None
    primary_ids = repository.detached_by_request(conn, request_id, kind, value)
    if not primary_ids:
        return None
    found: dict[int, linking.LinkedCustomer] = {}
    for primary_id in primary_ids:
        for customer in linking.customers(repository.find_customer_of_contact(conn, primary_id)):
            found[customer.primary.id] = customer
    ordered = sorted(found.values(), key=lambda each: linking.creation_order(each.primary))
    return [consolidate(customer.rows) for customer in ordered]


def _lock_customer(conn, contact_id: int, value_keys: list[int]):
    """BEGIN, lock the values and the customer's root, read the customer again.

    Returns the customer (as SPEC §2 presents it) and every customer of its stored group
    (the other orphans of a deleted primary, which a write stores as presented)."""
    seen, _ = _customer_of(repository.find_customer_of_contact(conn, contact_id), contact_id)
    root_id = seen.root_id
    repository.lock_all(conn, value_keys, [root_id])
    customer, found = _customer_of(
        repository.find_customer_of_contact(conn, contact_id), contact_id
    )
    if customer.root_id != root_id:
        raise CustomerChanged()  # merged or re-linked while we waited for the lock
    return customer, [other for other in found if other.root_id == root_id]


def _customer_of(rows, contact_id: int):
    found = linking.customers(rows)
    for customer in found:
        if any(row.id == contact_id for row in customer.rows):
            return customer, found
    raise NotFound()


def _holds(row, kind: str, value: str) -> bool:
    return (row.email if kind == "email" else row.phone_number) == value


def _other_value(row, kind: str):
    return row.phone_number if kind == "email" else row.email


def _without(row, kind: str, value: str):
    """The row as DETACH_VALUE leaves it: without the value if it held it."""
    if not _holds(row, kind, value):
        return row
    return row._replace(**{"email" if kind == "email" else "phone_number": None})
