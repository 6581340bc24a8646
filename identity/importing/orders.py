"""SPEC §4 on each order, with the service's own rules (identity/customers/normalise.py),
and createdAt.

The rules are the functions the request schema calls; their results are remembered per
raw value (bounded caches), since a shop's orders repeat the same e-mails and phone
numbers over and over. A bad order becomes a Reject with the code and message that
POST /identify would answer with.
"""

from dataclasses import dataclass
from datetime import UTC, datetime
from functools import lru_cache, partial

from marshmallow import ValidationError

from identity.customers.normalise import (
    AllValuesBlocked,
    Blocked,
    blocked_values_detail,
    check_identifiers,
    normalise_email,
    normalise_phone_number,
    validation_error_detail,
)

from .reader import RawOrder, Reject

# Distinct raw values remembered per kind, each at most CACHED_LENGTH characters long
# (a valid e-mail has at most 254): bounds the memory of the caches, whatever the input.
CACHE_SIZE = 200_000
CACHED_LENGTH = 512
_INVALID_TIME = "must be an ISO 8601 date and time"


@dataclass(frozen=True, slots=True)
class Order:
    line: int
    email: str | None
    phone_number: str | None
    created_at: datetime


class OrderValidator:
    def __init__(self, blocklist, default_time: datetime, phone_region: str | None = None):
        """default_time stands in for a missing createdAt (the time of the import);
        phone_region is PHONE_REGION, as for POST /identify."""
        self.default_time = default_time
        self._email = lru_cache(CACHE_SIZE, typed=True)(_outcome_of(normalise_email, blocklist))
        normalise_phone = partial(normalise_phone_number, region=phone_region)
        self._phone_number = lru_cache(CACHE_SIZE, typed=True)(
            _outcome_of(normalise_phone, blocklist)
        )

    def validate(self, raw: RawOrder) -> Order | Reject:
        email, email_error = self._field(self._email, raw.email)
        phone_number, phone_error = self._field(self._phone_number, raw.phone_number)
        created_at = parse_created_at(raw.created_at, self.default_time)
        field_errors = {
            name: [message]
            for name, message in (
                ("email", email_error),
                ("phoneNumber", phone_error),
                ("createdAt", None if created_at else _INVALID_TIME),
            )
            if message
        }
        try:
            if field_errors or created_at is None:
                raise ValidationError(field_errors)
            check_identifiers({"email": email, "phone_number": phone_number})
        except ValidationError as error:
            return Reject(raw.line, *validation_error_detail(error))
        except AllValuesBlocked as error:
            return Reject(raw.line, *blocked_values_detail(error))
        return Order(raw.line, _present(email), _present(phone_number), created_at)

    @staticmethod
    def _field(normalise, value) -> tuple[object, str | None]:
        if value is None:
            return None, None
        if isinstance(value, str) and len(value) > CACHED_LENGTH:
            return normalise.__wrapped__(value)
        try:
            return normalise(value)
        except TypeError:  # unhashable (a JSON object or array): no cache, same rule
            return normalise.__wrapped__(value)


def _outcome_of(normalise, blocklist):
    """normalise(value, blocklist) as (value, None) or (None, message): cacheable."""

    def outcome(value):
        try:
            return normalise(value, blocklist), None
        except ValidationError as error:
            return None, " ".join(error.messages)

    return outcome


def _present(value):
    return None if isinstance(value, Blocked) else value


def parse_created_at(value, default: datetime) -> datetime | None:
    """ISO 8601; no offset means UTC; missing or blank means `default`; None if invalid."""
    if value is None or (isinstance(value, str) and not value.strip()):
        return default
    if not isinstance(value, str):
        return None
    try:
        moment = datetime.fromisoformat(value.strip())
    except ValueError:
        return None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)
