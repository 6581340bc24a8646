"""The change feed: history rows become events, in an order no late commit can break.

A position in the feed is (txid, event id): the writing transaction's id, then the
history row's id. feed_repository.READ_EVENTS serves only events whose transaction lies
below the oldest transaction still running, so an event can never commit behind a
position already handed out (docs/feed.md says why). Consumers see the position as an
opaque cursor string.
"""

import base64
import binascii
import time
from collections.abc import Callable
from dataclasses import dataclass

from marshmallow import Schema, fields

from . import repository as feed_repository
from .kinds import FEED_KINDS, feed_kind
from .repository import EventRow

DEFAULT_LIMIT = 100
MAX_LIMIT = 1000
MAX_WAIT_S = 30
# How often a long poll looks again: a consumer hears of a change within this.
POLL_INTERVAL_S = 0.2
_MAX_TXID = 2**64 - 1
_MAX_EVENT_ID = 2**63 - 1


class InvalidCursor(ValueError):
    """The `after` string is not a cursor this service handed out."""


@dataclass(frozen=True, order=True)
class Cursor:
    txid: int = 0
    event_id: int = 0

    def encode(self) -> str:
        raw = f"{self.txid}.{self.event_id}".encode()
        return base64.urlsafe_b64encode(raw).decode().rstrip("=")

    @classmethod
    def decode(cls, text: str) -> "Cursor":
        try:
            raw = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4)).decode("ascii")
            txid, event_id = (int(part) for part in raw.split("."))
        except (binascii.Error, UnicodeDecodeError, ValueError):
            raise InvalidCursor() from None
        if not (0 <= txid <= _MAX_TXID and 0 <= event_id <= _MAX_EVENT_ID):
            raise InvalidCursor()
        return cls(txid, event_id)


START = Cursor()


@dataclass(frozen=True)
class Page:
    events: list[dict]
    next: Cursor


def to_event(row: EventRow) -> dict:
    """The public event for a history row: ids only, never a personal value."""
    event = {"id": row.id, "kind": feed_kind(row.kind), "occurredAt": row.occurred_at}
    if row.kind == "primary_demoted":
        # One history row per demoted primary: one merge event each.
        event["primaryContactId"] = row.primary_id
        event["demotedPrimaryContactIds"] = [row.contact_id]
    else:
        event["primaryContactId"] = row.primary_id
        event["contactIds"] = [row.contact_id]
    if row.kind == "hub_suspected":
        # The kind of value only: the value itself is personal data (GET /hubs has it).
        event["valueKind"] = row.value_kind
    return event


def read_page(conn, after: Cursor, limit: int) -> Page:
    rows = feed_repository.read_events(conn, after.txid, after.event_id, limit)
    following = Cursor(rows[-1].txid, rows[-1].id) if rows else after
    return Page([to_event(row) for row in rows], following)


def wait_for_page(
    read: Callable[[], Page], wait_s: float, stopping: Callable[[], bool] = lambda: False
) -> Page:
    """read() until it brings events, wait_s has passed, or stopping() says so."""
    deadline = time.monotonic() + wait_s
    page = read()
    while not page.events and time.monotonic() < deadline and not stopping():
        time.sleep(min(POLL_INTERVAL_S, max(0.0, deadline - time.monotonic())))
        page = read()
    return page


# One event as the feed and the webhooks send it (docs/feed.md).
class FeedEvent(Schema):
    id = fields.Integer(
        required=True, metadata={"description": "unique; repeats mean a redelivery"}
    )
    kind = fields.String(
        required=True,
        metadata={
            "enum": FEED_KINDS,
        },
    )
    occurredAt = fields.DateTime(required=True)
    primaryContactId = fields.Integer(
        required=True, metadata={"description": "the customer's primary after the change"}
    )
    contactIds = fields.List(fields.Integer(), metadata={"description": "the rows concerned"})
    demotedPrimaryContactIds = fields.List(
        fields.Integer(),
        metadata={
            "description": "customers_merged: the primaries now secondaries of primaryContactId"
        },
    )
    valueKind = fields.String(
        metadata={
            "enum": ["email", "phoneNumber"],
            "description": "hub_suspected: the kind of value suspected (never the value); "
            "contactIds holds one of its rows",
        },
    )
