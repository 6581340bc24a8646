"""The JSON of POST /identify: SPEC §3 shapes and SPEC §4 normalisation."""

import re

from marshmallow import EXCLUDE, Schema, ValidationError, fields, validate, validates_schema

MAX_EMAIL_LENGTH = 254
# What remains of a phone number once its separators are gone: 1 to 15 digits, with an
# optional leading +. [0-9], not \d: \d also matches digits of other scripts.
_PHONE_DIGITS = re.compile(r"\+?[0-9]{1,15}")
_PHONE_SEPARATORS = re.compile(r"[ .()\-]")
_email_syntax = validate.Email(error="is not a valid e-mail address")


class NormalisedEmail(fields.Field):
    """A string, trimmed and lower-cased; blank means absent (SPEC §4)."""

    def _deserialize(self, value, attr, data, **kwargs):
        if not isinstance(value, str):
            raise ValidationError("must be a string or null")
        email = value.strip().lower()
        if not email:
            return None
        if len(email) > MAX_EMAIL_LENGTH:
            raise ValidationError(f"must be at most {MAX_EMAIL_LENGTH} characters")
        return _email_syntax(email)


class NormalisedPhoneNumber(fields.Field):
    """A string or a non-negative integer; separators removed; blank means absent (SPEC §4)."""

    def _deserialize(self, value, attr, data, **kwargs):
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
        if not _PHONE_DIGITS.fullmatch(phone_number):
            raise ValidationError(
                "must be 1 to 15 digits, optionally after a leading +, "
                "with only spaces, hyphens, dots and parentheses between them"
            )
        return phone_number


class IdentifyRequest(Schema):
    class Meta:
        unknown = EXCLUDE  # checkout events carry more than we need

    email = NormalisedEmail(
        allow_none=True,
        load_default=None,
        metadata={"type": "string", "maxLength": 254, "description": "trimmed, lower-cased"},
    )
    phoneNumber = NormalisedPhoneNumber(
        allow_none=True,
        load_default=None,
        attribute="phone_number",
        metadata={
            "oneOf": [{"type": "string"}, {"type": "integer", "minimum": 0}],
            "description": "digits with optional leading +; spaces, hyphens, dots, parentheses ignored",
        },
    )

    @validates_schema
    def at_least_one_identifier(self, data, **kwargs):
        if data.get("email") is None and data.get("phone_number") is None:
            raise ValidationError("at least one of email and phoneNumber is required")


class ConsolidatedContact(Schema):
    primaryContactId = fields.Integer(attribute="primary_contact_id", required=True)
    emails = fields.List(fields.String(), required=True)
    phoneNumbers = fields.List(fields.String(), attribute="phone_numbers", required=True)
    secondaryContactIds = fields.List(
        fields.Integer(), attribute="secondary_contact_ids", required=True
    )


class IdentifyResponse(Schema):
    contact = fields.Nested(ConsolidatedContact, required=True)


class ErrorDetail(Schema):
    code = fields.String(required=True)
    message = fields.String(required=True)
    fields_ = fields.Dict(
        data_key="fields",
        keys=fields.String(),
        values=fields.List(fields.String()),
        metadata={"description": "present only when single request fields are at fault"},
    )


class Error(Schema):
    error = fields.Nested(ErrorDetail, required=True)


class Status(Schema):
    status = fields.String(required=True)


identify_request = IdentifyRequest()
identify_response = IdentifyResponse()
