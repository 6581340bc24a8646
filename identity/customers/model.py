"""The customer model every capability shares: a stored row, a customer as the API
answers it (SPEC §3), and the rule that turns one into the other."""

from dataclasses import dataclass
from datetime import datetime
from typing import NamedTuple


class ContactRow(NamedTuple):
    id: int
    email: str | None
    phone_number: str | None
    linked_id: int | None
    link_precedence: str
    created_at: datetime

    @property
    def is_primary(self) -> bool:
        return self.link_precedence == "primary"


@dataclass(frozen=True)
class Customer:
    primary_contact_id: int
    emails: list[str]
    phone_numbers: list[str]
    secondary_contact_ids: list[int]


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
