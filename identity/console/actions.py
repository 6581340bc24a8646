"""The console's two corrections, detach and erase, and the one place they meet the code
that performs them (the same functions as the API's POST /contacts/{id}/detach and
DELETE /contacts/{id}).

That code is not part of this build yet: until it is, both raise NotAvailable, and the
console says so instead of pretending. Connecting them is one line in each function.
"""

from ..reconcile import Customer


class NotAvailable(Exception):
    """This build cannot perform the correction (HTTP 501 page)."""


def detach(
    conn,
    contact_id: int,
    *,
    email: str | None = None,
    phone_number: str | None = None,
    block: bool = False,
    request_id: str | None = None,
) -> list[Customer]:
    """Remove one value from the customer of contact_id; the customers it leaves, oldest
    primary first. Exactly one of email and phone_number; block also blocklists it."""
    raise NotAvailable()


def erase(conn, contact_id: int, *, request_id: str | None = None) -> dict:
    """Erase the whole customer of contact_id:
    {"primaryContactId": P, "contactIds": [...]} of the rows erased."""
    raise NotAvailable()
