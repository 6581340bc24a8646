"""SPEC §13, the hub alarm: which of a write's values now glue too many strangers together.

A value's partners, within its customer, are the distinct values of the other kind on the
rows that carry it: the e-mails of a phone number's rows, the phone numbers of an e-mail's
rows. A value with more than HUB_MAX_PARTNERS partners is a suspected hub.

Pure functions over ContactRow lists; no SQL. The write path calls `suspected` with the
customer it has already read under its locks, so the check costs no query.

Why only the request's own values need counting: a write never changes a stored row's
e-mail or phone number, so a value gains a partner only when a new row carries it, and
the only new row is the request's (email, phone_number). A merge or a re-link of orphans
moves rows between customers but never separates or joins the rows of one value: rows
that share a value are always one customer (SPEC §6), so before and after a merge every
row carrying a value is in the same customer and its partners are the same. Corrections
(detach, erase) only remove values, so they lower counts and never raise one.

A write inserts a row only when one of its values is new to the customer, and a new value
has no partner yet, so a write raises at most one hub; `suspected` does not rely on it.
"""

from dataclasses import dataclass

from .model import ContactRow

DEFAULT_MAX_PARTNERS = 10
ACTIONS = ("alert", "block")


@dataclass(frozen=True)
class SuspectedHub:
    kind: str  # "email" or "phoneNumber"
    value: str
    contact_id: int  # the oldest row of the customer that carries the value
    partners: int  # distinct values of the other kind on its rows, the new row's included


def suspected(
    rows: list[ContactRow], email: str | None, phone_number: str | None, max_partners: int
) -> list[SuspectedHub]:
    """The request's values that are hubs once its new row (email, phone_number) is added.

    rows: every live row of the customer the new row joins (the write's customer C, merged),
    oldest first, without the new row. A new row with one value adds no partner to it.
    One pass over the rows: a write to a large customer pays little for the check."""
    if email is None or phone_number is None:
        return []
    emails_of_phone, phones_of_email = {email}, {phone_number}  # the new row's
    first_with_phone = first_with_email = None
    for row in rows:
        if row.phone_number == phone_number:
            first_with_phone = first_with_phone or row
            if row.email is not None:
                emails_of_phone.add(row.email)
        if row.email == email:
            first_with_email = first_with_email or row
            if row.phone_number is not None:
                phones_of_email.add(row.phone_number)
    found = []
    # A value no stored row carries has the new row's partner only: never a hub.
    if first_with_phone and len(emails_of_phone) > max_partners:
        found.append(
            SuspectedHub("phoneNumber", phone_number, first_with_phone.id, len(emails_of_phone))
        )
    if first_with_email and len(phones_of_email) > max_partners:
        found.append(SuspectedHub("email", email, first_with_email.id, len(phones_of_email)))
    return found


@dataclass(frozen=True)
class Rule:
    """HUB_MAX_PARTNERS and HUB_ACTION, checked when the app is created."""

    max_partners: int = DEFAULT_MAX_PARTNERS
    action: str = "alert"

    def __post_init__(self):
        if self.max_partners < 1:
            raise ValueError("HUB_MAX_PARTNERS must be at least 1")
        if self.action not in ACTIONS:
            raise ValueError(f"HUB_ACTION must be one of: {', '.join(ACTIONS)}")

    @property
    def block(self) -> bool:
        """A suspected hub also goes on the stored blocklist."""
        return self.action == "block"
