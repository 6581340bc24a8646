"""The JSON the service reads and writes: SPEC §3 shapes, SPEC §4 normalisation, the
junk-value guard on requests, and the shapes of the look-ups and the history."""

from marshmallow import (
    EXCLUDE,
    Schema,
    ValidationError,
    fields,
    post_load,
    validate,
    validates_schema,
)

from identity.customers.blocklist import Blocklist, Blocks
from identity.customers.normalise import (
    FIELD_NAMES,
    Blocked,
    check_identifiers,
    normalise_email,
    normalise_phone_number,
)
from identity.feed import events as feed
from identity.feed.events import FeedEvent
from identity.feed.kinds import HISTORY_KINDS


class NormalisedEmail(fields.Field):
    """A string, trimmed, validated and normalised; blank means absent (SPEC §4).

    The form stored and matched: the local part NFC-normalised and lower-cased; the
    domain in Unicode (IDNA-decoded), so the a-label and u-label spellings of one domain
    (xn--bcher-kva.de, bücher.de, BÜCHER.DE) are one value: bücher.de."""

    def _deserialize(self, value, attr, data, **kwargs):
        return normalise_email(value, self.parent.blocklist)


class NormalisedPhoneNumber(fields.Field):
    """A string or a non-negative integer; separators removed; blank means absent; E.164
    when PHONE_REGION is set and the number fits a plan (SPEC §4)."""

    def _deserialize(self, value, attr, data, **kwargs):
        return normalise_phone_number(value, self.parent.blocklist, self.parent.phone_region)


class IdentifyRequest(Schema):
    class Meta:
        unknown = EXCLUDE  # checkout events carry more than we need

    email = NormalisedEmail(
        allow_none=True,
        load_default=None,
        metadata={
            "type": "string",
            "maxLength": 254,
            "description": "trimmed, lower-cased, the domain in Unicode form",
        },
    )
    phoneNumber = NormalisedPhoneNumber(
        allow_none=True,
        load_default=None,
        attribute="phone_number",
        metadata={
            "oneOf": [{"type": "string"}, {"type": "integer", "minimum": 0}],
            "description": "digits with optional leading +; spaces, hyphens, dashes, dots, "
            "parentheses ignored",
        },
    )

    def __init__(
        self, blocklist: Blocks | None = None, phone_region: str | None = None, **kwargs
    ):
        super().__init__(**kwargs)
        # No list blocks nothing; apispec builds the class without one to document it.
        self.blocklist = blocklist or Blocklist({})
        self.phone_region = phone_region  # PHONE_REGION

    @validates_schema
    def at_least_one_identifier(self, data, **kwargs):
        check_identifiers(data)

    @post_load
    def set_blocked_values_aside(self, data, **kwargs):
        """Blocked values become absent; `ignored` names their fields for the answer."""
        data["ignored"] = sorted(
            FIELD_NAMES[name] for name, value in data.items() if isinstance(value, Blocked)
        )
        for name in ("email", "phone_number"):
            if isinstance(data[name], Blocked):
                data[name] = None
        return data


class ConsolidatedContact(Schema):
    primaryContactId = fields.Integer(attribute="primary_contact_id", required=True)
    emails = fields.List(fields.String(), required=True)
    phoneNumbers = fields.List(fields.String(), attribute="phone_numbers", required=True)
    secondaryContactIds = fields.List(
        fields.Integer(), attribute="secondary_contact_ids", required=True
    )


class IdentifyResponse(Schema):
    contact = fields.Nested(ConsolidatedContact, required=True)
    ignored = fields.List(
        fields.String(),
        metadata={
            "description": "request fields whose values are on the junk-value "
            "blocklist and were treated as absent; only present when not empty"
        },
    )


class HistoryEvent(Schema):
    id = fields.Integer(required=True)
    occurredAt = fields.DateTime(required=True, attribute="occurred_at")
    requestId = fields.String(allow_none=True, attribute="request_id")
    kind = fields.String(
        required=True,
        metadata={
            "enum": list(HISTORY_KINDS),
        },
    )
    contactId = fields.Integer(required=True, attribute="contact_id")
    primaryId = fields.Integer(required=True, attribute="primary_id")
    email = fields.String(allow_none=True)
    phoneNumber = fields.String(allow_none=True, attribute="phone_number")
    repointedIds = fields.List(fields.Integer(), allow_none=True, attribute="repointed_ids")
    valueKind = fields.String(
        allow_none=True,
        attribute="value_kind",
        metadata={"enum": ["email", "phoneNumber", None], "description": "hub_suspected only"},
    )


class CustomerHistory(Schema):
    primaryContactId = fields.Integer(required=True, attribute="primary_contact_id")
    events = fields.List(fields.Nested(HistoryEvent), required=True)


class SuspectedHub(Schema):
    kind = fields.String(required=True, metadata={"enum": ["email", "phoneNumber"]})
    value = fields.String(required=True)
    primaryContactId = fields.Integer(
        required=True,
        attribute="primary_contact_id",
        metadata={"description": "the primary of the value's customer when it was found"},
    )
    partners = fields.Integer(
        required=True,
        metadata={"description": "distinct values of the other kind on its rows when found"},
    )
    since = fields.DateTime(required=True, metadata={"description": "when it was found"})


class SuspectedHubs(Schema):
    hubs = fields.List(
        fields.Nested(SuspectedHub),
        required=True,
        metadata={"description": "unresolved suspected hubs, newest first"},
    )


class FeedCursor(fields.Field):
    """The opaque position string of GET /events (feed.Cursor)."""

    def _deserialize(self, value, attr, data, **kwargs):
        try:
            return feed.Cursor.decode(value)
        except feed.InvalidCursor:
            raise ValidationError("is not a cursor this service handed out") from None

    def _serialize(self, value, attr, obj, **kwargs):
        return value.encode()


class FeedQuery(Schema):
    class Meta:
        unknown = EXCLUDE

    after = FeedCursor(
        load_default=feed.START,
        metadata={
            "type": "string",
            "description": "a `next` from an earlier answer; absent: the start",
        },
    )
    limit = fields.Integer(
        load_default=feed.DEFAULT_LIMIT,
        validate=validate.Range(1, feed.MAX_LIMIT),
    )
    wait = fields.Float(
        load_default=0,
        allow_nan=False,
        validate=validate.Range(0, feed.MAX_WAIT_S),
        metadata={"description": "seconds to wait for an event when there is none yet (long poll)"},
    )


class FeedPage(Schema):
    events = fields.List(fields.Nested(FeedEvent), required=True)
    next = FeedCursor(
        required=True,
        metadata={"type": "string", "description": "pass as `after` to read on; opaque"},
    )


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


identify_response = IdentifyResponse()
customer_history = CustomerHistory()
suspected_hubs = SuspectedHubs()
feed_query = FeedQuery()
feed_page = FeedPage()


class DetachRequest(Schema):
    """SPEC §9: exactly one of email or phoneNumber, normalised as in §4, and `block`.

    The junk-value blocklist does not apply here: support may detach any stored value."""

    class Meta:
        unknown = EXCLUDE

    email = NormalisedEmail(allow_none=True, load_default=None, metadata={"type": "string"})
    phoneNumber = NormalisedPhoneNumber(
        allow_none=True,
        load_default=None,
        attribute="phone_number",
        metadata={"oneOf": [{"type": "string"}, {"type": "integer", "minimum": 0}]},
    )
    block = fields.Boolean(
        load_default=False,
        truthy={True},
        falsy={False},
        metadata={"description": "also put the value on the stored blocklist"},
    )
    blocklist = Blocklist({})  # blocks nothing: the fields above only normalise

    def __init__(self, phone_region: str | None = None, **kwargs):
        super().__init__(**kwargs)
        self.phone_region = phone_region  # PHONE_REGION, as for checkouts

    @validates_schema
    def exactly_one_value(self, data, **kwargs):
        given = [name for name in ("email", "phone_number") if data.get(name) is not None]
        if not given:
            raise ValidationError("exactly one of email and phoneNumber is required")
        if len(given) > 1:
            both = "give only one of email and phoneNumber"
            raise ValidationError({"email": [both], "phoneNumber": [both]})

    @post_load
    def to_kind_and_value(self, data, **kwargs):
        kind = "email" if data["email"] is not None else "phoneNumber"
        return {
            "kind": kind,
            "value": data["email"] if kind == "email" else data["phone_number"],
            "block": data["block"],
        }


class DetachResponse(Schema):
    customers = fields.List(fields.Nested(ConsolidatedContact), required=True)


class ErasedCustomer(Schema):
    primaryContactId = fields.Integer(attribute="primary_contact_id", required=True)
    contactIds = fields.List(fields.Integer(), attribute="contact_ids", required=True)


class EraseResponse(Schema):
    erased = fields.Nested(ErasedCustomer, required=True)


detach_response = DetachResponse()
erase_response = EraseResponse()
