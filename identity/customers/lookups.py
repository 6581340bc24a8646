"""Read-only look-ups for support staff: never a transaction that writes, never a lock."""

from dataclasses import dataclass
from datetime import datetime

from . import linking, repository
from .model import ContactRow, Customer, consolidate


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
    value_kind: str | None  # hub_suspected: the kind of value, never the value


@dataclass(frozen=True)
class History:
    primary_contact_id: int
    events: list[Event]


@dataclass(frozen=True)
class Hub:
    """A suspected hub (SPEC §13) as it was when found."""

    kind: str
    value: str
    contact_id: int  # the oldest row that carried it when found
    primary_contact_id: int
    partners: int
    since: datetime


def customer_by_values(conn, email: str | None, phone_number: str | None) -> Customer:
    """The customer the values belong to, as POST /identify would see it, without writing."""
    rows = repository.find_customer(conn, email, phone_number)
    touched = linking.touched(linking.customers(rows), email, phone_number)
    if not touched:
        raise NotFound()
    if len(touched) > 1:
        raise ValuesSpanCustomers()
    return consolidate(touched[0].rows)


def first_row_holding(conn, email: str | None, phone_number: str | None) -> ContactRow:
    """The oldest live row that holds the e-mail or the phone number: the row a search
    for that value leads to (the support console)."""
    for row in repository.find_customer(conn, email, phone_number):
        if (email is not None and row.email == email) or (
            phone_number is not None and row.phone_number == phone_number
        ):
            return row
    raise NotFound()


def _customer_of_contact(rows: list[ContactRow], contact_id: int) -> list:
    """The rows of the customer that contact_id belongs to, as SPEC §2 presents them."""
    for customer in linking.customers(rows):
        if any(row.id == contact_id for row in customer.rows):
            return customer.rows
    raise NotFound()


def customer_by_contact(conn, contact_id: int) -> Customer:
    return consolidate(customer_rows(conn, contact_id))


def suspected_hubs(conn) -> list[Hub]:
    """The unresolved suspected hubs, newest first."""
    return [Hub(*row) for row in repository.unresolved_hubs(conn)]


def history(conn, contact_id: int) -> History:
    """Every change to the customer of contact_id, including customers merged into it.

    The customer and its events are read in one snapshot: a merge committing in between
    cannot give events that contradict the answer's primary."""
    rows, events = repository.customer_with_history(conn, contact_id)
    customer = _customer_of_contact(rows, contact_id)
    ids = {row.id for row in customer}
    return History(
        consolidate(customer).primary_contact_id,
        [Event(*event) for event in events if event[4] in ids],
    )


@dataclass(frozen=True)
class HistoryPage:
    events: list[Event]  # newest first
    offset: int  # newer events before this page
    size: int  # events in the whole history
    merges: list[tuple[int, int]]  # (demoted primary, the primary it joined), oldest first


def customer_with_history_page(
    conn, contact_id: int, offset: int, limit: int
) -> tuple[list[ContactRow], HistoryPage]:
    """The rows of the customer of contact_id, oldest first, and `limit` events of its
    history from `offset` on, newest first, in one snapshot: a customer of thousands of
    rows is shown a page at a time (the support console)."""
    rows, events, size, merges = repository.customer_with_history_page(
        conn, contact_id, _customer_of_contact, offset, limit
    )
    return rows, HistoryPage([Event(*event) for event in events], offset, size, merges)


def customer_rows(conn, contact_id: int) -> list[ContactRow]:
    """Every live row of the customer of contact_id, oldest first (the support console)."""
    rows = repository.find_customer_of_contact(conn, contact_id)
    return _customer_of_contact(rows, contact_id)
