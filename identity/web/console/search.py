"""The console's one search box: an e-mail, a phone number or a contact id → customers.

Values are normalised exactly as POST /identify normalises them (the same marshmallow
schema, with the service's junk-value blocklist). A plain number is both a possible phone
number and a possible contact id: both are looked up, and the page lets the person choose
when they lead to different customers. `#42` means contact id 42 only.
"""

import re
from dataclasses import dataclass

from marshmallow import ValidationError

from identity.customers import lookups
from identity.customers.normalise import AllValuesBlocked
from identity.web.schemas import IdentifyRequest

# Row ids are PostgreSQL integers.
MAX_CONTACT_ID = 2**31 - 1
_CONTACT_ID = re.compile(r"#?([0-9]{1,10})")


class SearchError(Exception):
    """The text is no e-mail, phone number or contact id; the message says why."""

    def __init__(self, message: str):
        super().__init__(message)
        self.message = message


@dataclass(frozen=True)
class Match:
    what: str  # how the text matched, for the page: "e-mail", "phone number", "contact id"
    primary_contact_id: int
    # The row to show the customer from, highlighted: the one searched for by id, or the
    # oldest row that holds the value searched for.
    contact_id: int


def _contact_id(text: str) -> int | None:
    found = _CONTACT_ID.fullmatch(text)
    if found is None or int(found.group(1)) > MAX_CONTACT_ID:
        return None
    return int(found.group(1))


def _normalised(schema: IdentifyRequest, field: str, text: str) -> str:
    try:
        loaded = schema.load({field: text})
    except AllValuesBlocked:
        raise SearchError(
            "that value is on the junk-value blocklist: it never links anyone"
        ) from None
    except ValidationError as error:
        reasons = error.normalized_messages().get(field, ["is not valid"])
        label = "e-mail" if field == "email" else "phone number"
        raise SearchError(f"the {label} {' '.join(reasons)}") from None
    return loaded["email"] if field == "email" else loaded["phone_number"]


def _customer_of_value(conn, email: str | None, phone_number: str | None) -> tuple | None:
    """(primary id, the oldest row holding the value), or None."""
    try:
        row = lookups.first_row_holding(conn, email, phone_number)
        return lookups.customer_by_contact(conn, row.id).primary_contact_id, row.id
    except lookups.NotFound:
        return None


def _customer_of_contact(conn, contact_id: int) -> tuple | None:
    try:
        return lookups.customer_by_contact(conn, contact_id).primary_contact_id, contact_id
    except lookups.NotFound:
        return None



def search(conn, schema: IdentifyRequest, text: str) -> list[Match]:
    """Every customer the text leads to, one match per customer; [] when none."""
    text = text.strip()
    if not text:
        raise SearchError("type an e-mail address, a phone number or a contact id")
    if "@" in text:
        email = _normalised(schema, "email", text)
        found: list[tuple[str, tuple[int, int] | None]] = [
            ("e-mail", _customer_of_value(conn, email, None))
        ]
    elif text.startswith("#"):
        contact_id = _contact_id(text)
        if contact_id is None:
            raise SearchError("a contact id is # followed by a number")
        found = [("contact id", _customer_of_contact(conn, contact_id))]
    else:
        contact_id = _contact_id(text)
        try:
            phone_number = _normalised(schema, "phoneNumber", text)
        except SearchError:
            if contact_id is None:
                raise
            phone_number = None  # a blocked phone number may still be a contact id
        found = []
        if phone_number is not None:
            found.append(("phone number", _customer_of_value(conn, None, phone_number)))
        if contact_id is not None:
            found.append(("contact id", _customer_of_contact(conn, contact_id)))
    matches: dict[int, Match] = {}
    for what, customer in found:
        if customer is not None and customer[0] not in matches:
            matches[customer[0]] = Match(what, *customer)
    return list(matches.values())
