"""SPEC §4: the one copy of the normalisation rules, for requests (web/schemas.py) and
for the bulk import alike, and the words both use when a value fails them."""

import re
from dataclasses import dataclass

import email_validator
import phonenumbers
from marshmallow import ValidationError

from .blocklist import Blocks

MAX_EMAIL_LENGTH = 254
# SPEC §4 validates syntax only: example.com, .test, .local and the other special-use
# names are addresses like any other here. The library's documented way to allow them
# is to take them off this list.
email_validator.SPECIAL_USE_DOMAIN_NAMES.clear()
# What remains of a phone number once its separators are gone: 1 to 15 digits, with an
# optional leading +. [0-9], not \d: \d also matches digits of other scripts.
_PHONE_DIGITS = re.compile(r"\+?[0-9]{1,15}")
# Separators people type between digits: space, no-break space (U+00A0) and narrow
# no-break space (U+202F); hyphen-minus, hyphen (U+2010), non-breaking hyphen (U+2011),
# figure dash (U+2012), en dash (U+2013) and minus sign (U+2212); dots; parentheses.
_PHONE_SEPARATORS = re.compile(r"[ \u00a0\u202f\-\u2010-\u2013\u2212.()]")
# Loaded attribute name -> the request field's name, for messages and `ignored`.
FIELD_NAMES = {"email": "email", "phone_number": "phoneNumber"}


@dataclass(frozen=True)
class Blocked:
    """A value on the junk-value blocklist: treated as absent."""

    value: str


class AllValuesBlocked(Exception):
    """Every identifier the request carried is on the blocklist (HTTP 400)."""

    def __init__(self, fields_: list[str]):
        super().__init__("blocked")
        self.fields = fields_


def normalise_email(value, blocklist: Blocks) -> str | Blocked | None:
    """SPEC §4 for an e-mail: trimmed, lower-cased, valid; blank means absent.

    The one copy of the rule: the request schema and the bulk import both call it."""
    if not isinstance(value, str):
        raise ValidationError("must be a string or null")
    email = value.strip().lower()
    if not email:
        return None
    if blocklist.blocks_email(email):  # placeholders such as "n/a", as typed
        return Blocked(email)
    if len(email) > MAX_EMAIL_LENGTH:
        raise ValidationError(f"must be at most {MAX_EMAIL_LENGTH} characters")
    email = _normalised_email(email)
    return Blocked(email) if blocklist.blocks_email(email) else email


def _normalised_email(email: str) -> str:
    """Syntax check and normalisation by email-validator, which also refuses what must
    never be inside an address: white space of any kind, control and invisible format
    characters, unpaired surrogates, private-use and unassigned code points."""
    try:
        address = email_validator.validate_email(email, check_deliverability=False)
    except email_validator.EmailNotValidError:
        # The library's message may quote the address: ours never does.
        raise ValidationError("is not a valid e-mail address") from None
    return address.normalized.lower()


def normalise_phone_number(
    value, blocklist: Blocks, region: str | None = None
) -> str | Blocked | None:
    """SPEC §4 for a phone number: a string or a non-negative integer, separators removed;
    blank means absent. With region (PHONE_REGION), a number of that region's plan, or an
    international one, becomes E.164 (to_e164). The one copy of the rule (see
    normalise_email): requests, look-ups, detach, the console's search and the import."""
    # bool is a subclass of int: true must not become the phone number "1".
    if isinstance(value, int) and not isinstance(value, bool):
        if value < 0:
            raise ValidationError("must not be negative")
        value = str(value)
    if not isinstance(value, str):
        raise ValidationError("must be a string, an integer or null")
    if not value.strip():
        return None
    phone_number = _PHONE_SEPARATORS.sub("", value.strip())
    well_formed = _PHONE_DIGITS.fullmatch(phone_number) is not None
    if blocklist.blocks_phone_number(value, phone_number if well_formed else None):
        return Blocked(phone_number)
    if not well_formed:
        raise ValidationError(
            "must be 1 to 15 digits, optionally after a leading +, "
            "with only spaces, hyphens, dashes, dots and parentheses between them"
        )
    if region is None:
        return phone_number
    e164 = to_e164(phone_number, region)
    # A list's digit patterns were written for the digits as typed: both forms are checked.
    if e164 != phone_number and blocklist.blocks_phone_number(e164, e164):
        return Blocked(e164)
    return e164


def to_e164(phone_number: str, region: str) -> str:
    """The E.164 form (+447700900123) of separator-free digits when they are a number of
    `region`'s plan, or an international number written with + or 00; else unchanged.

    Bare digits are read as libphonenumber reads them for the region: a leading national
    prefix is dropped (07700900123), and digits that start with the region's country code
    and fit its plan without it are international (447700900123 with GB)."""
    international = phone_number.startswith(("+", "00"))
    digits = phone_number.removeprefix("+").removeprefix("00")
    text = "+" + digits if international else phone_number
    try:
        number = phonenumbers.parse(text, None if international else region)
    except phonenumbers.NumberParseException:
        return phone_number
    if not international and number.country_code != phonenumbers.country_code_for_region(region):
        return phone_number
    if not _fits_plan(number):
        return phone_number
    return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)


def _fits_plan(number: phonenumbers.PhoneNumber) -> bool:
    """A valid number, or one of a full possible length that matches its country's
    numbering plan. Wider than phonenumbers.is_valid_number on purpose: that one refuses
    ranges reserved for drama and tests (07700 900xxx) and ranges assigned after the
    library's release, which would then stay a second spelling of one phone."""
    if phonenumbers.is_valid_number(number):
        return True
    possible = phonenumbers.is_possible_number_with_reason(number)
    if possible != phonenumbers.ValidationResult.IS_POSSIBLE:  # too short, or local only
        return False
    if number.country_code is None:
        return False
    main_region = phonenumbers.region_code_for_country_code(number.country_code)
    metadata = phonenumbers.PhoneMetadata.metadata_for_region(main_region)
    plan = metadata.general_desc if metadata else None
    if plan is None or plan.national_number_pattern is None:
        return False
    national = phonenumbers.national_significant_number(number)
    return re.fullmatch(plan.national_number_pattern, national) is not None


def known_region(region: str) -> bool:
    """PHONE_REGION must name a region libphonenumber has a plan for (GB, IN, ...)."""
    return region in phonenumbers.SUPPORTED_REGIONS


def check_identifiers(values: dict) -> None:
    """SPEC §4 across fields: at least one identifier, and not every one of them blocked.

    values maps the loaded attribute names (email, phone_number) to normalised values."""
    present = {name: value for name, value in values.items() if value is not None}
    if not present:
        raise ValidationError("at least one of email and phoneNumber is required")
    if all(isinstance(value, Blocked) for value in present.values()):
        raise AllValuesBlocked(sorted(FIELD_NAMES[name] for name in present))


def validation_error_detail(error: ValidationError) -> tuple[str, str, dict | None]:
    """The code, message and fields of a request that fails SPEC §4 (also the import's
    rejects, so both say the same)."""
    messages = error.normalized_messages()
    schema_messages = messages.pop("_schema", [])
    if messages:
        summary = "; ".join(f"{name} {' '.join(text)}" for name, text in messages.items())
        return "invalid_field", summary, messages
    return "missing_identifier", " ".join(schema_messages), None


def blocked_values_detail(error: AllValuesBlocked) -> tuple[str, str, None]:
    message = "every value given is on the junk-value blocklist: " + ", ".join(error.fields)
    return "blocked_values", message, None
