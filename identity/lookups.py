"""Read-only look-ups for support staff: never a transaction that writes, never a lock."""

from dataclasses import dataclass
from datetime import datetime

from . import repository
from .reconcile import Customer, consolidate


class NotFound(Exception):
    """No live row matches (HTTP 404)."""


class ValuesSpanCustomers(Exception):
    """The e-mail and the phone number belong to different customers (HTTP 409)."""


@dataclass(frozen=True)
class Event:
    id: int
    occurred_at: datetime
    request_id: str | None
    kind: str
    contact_id: int
    primary_id: int
    email: str | None
    phone_number: str | None
    repointed_ids: list[int] | None


@dataclass(frozen=True)
class History:
    primary_contact_id: int
    events: list[Event]


def customer_by_values(conn, email: str | None, phone_number: str | None) -> Customer:
    """The customer the values belong to, as POST /identify would see it, without writing."""
    rows = repository.find_customer(conn, email, phone_number)
    if not rows:
        raise NotFound()
    if sum(row.is_primary for row in rows) > 1:
        raise ValuesSpanCustomers()
    return consolidate(rows)


def _rows_of_contact(conn, contact_id: int) -> list[repository.ContactRow]:
    rows = repository.find_customer_of_contact(conn, contact_id)
    if not rows:
        raise NotFound()
    return rows


def customer_by_contact(conn, contact_id: int) -> Customer:
    return consolidate(_rows_of_contact(conn, contact_id))


def history(conn, contact_id: int) -> History:
    """Every change to the customer of contact_id, including customers merged into it."""
    rows = _rows_of_contact(conn, contact_id)
    events = repository.customer_history(conn, [row.id for row in rows])
    return History(consolidate(rows).primary_contact_id, [Event(*event) for event in events])


def customer_rows(conn, contact_id: int) -> list[repository.ContactRow]:
    """Every live row of the customer of contact_id, oldest first (the support console)."""
    return _rows_of_contact(conn, contact_id)
