"""HTTP routes: parse the request, call one function, serialise the answer."""

import json

from flask import Blueprint, Response, current_app, g, request
from werkzeug.routing import IntegerConverter

from identity.customers import corrections, lookups, reconcile, repository
from identity.customers.model import Customer
from identity.database.connections import DatabaseUnavailable, SchemaMissing, run_unit
from identity.feed import events as feed
from identity.feed import repository as feed_repository

from . import access
from .errors import ApiError
from .schemas import (
    customer_history,
    detach_response,
    erase_response,
    feed_page,
    feed_query,
    identify_response,
    suspected_hubs,
)

# Every view declares who may call it (identity/web/access.py); one that does not is refused.
bp = Blueprint("identity", __name__)
# In the WSGI environ, False on a server thread that must not wait for long: a long poll
# arriving on one is refused (identity/process/server.py sets it; absent elsewhere).
LONG_POLL_ALLOWED = "identity.long_poll_allowed"


class ContactIdConverter(IntegerConverter):
    """A row id in a path (`<contact_id:…>`, registered by create_app): ASCII digits only.
    Werkzeug's int accepts any Unicode digit (/contacts/١ would be row 1); row ids are
    PostgreSQL integers, so a larger id is simply not found."""

    regex = r"[0-9]+"

    def __init__(self, url_map):
        super().__init__(url_map, max=2**31 - 1)


def _reject_constant(name: str):
    raise ValueError(f"{name} is not JSON")


def _json_object() -> dict:
    """The request body as a JSON object, or the SPEC §7 error that says why not."""
    if not request.is_json:
        raise ApiError(
            415, "unsupported_media_type", "the body must be JSON (Content-Type: application/json)"
        )
    try:
        # Our own parse rather than request.get_json(): deeply nested input raises
        # RecursionError, which must be a 400 like any other malformed body; and Python
        # accepts NaN and Infinity, which RFC 8259 does not.
        body = json.loads(request.get_data(), parse_constant=_reject_constant)
    except (ValueError, RecursionError):
        raise ApiError(400, "malformed_json", "the body is not valid JSON") from None
    if not isinstance(body, dict):
        raise ApiError(400, "not_an_object", "the body must be a JSON object")
    return body


def _load_identifiers(data: dict) -> dict:
    # The stored blocklist is read here when due, never inside the schema's validation.
    current_app.extensions["identity_blocklist"].refresh_if_stale()
    return current_app.extensions["identity_request_schema"].load(data)


def _answer(customer: Customer, ignored: list[str]) -> dict:
    return identify_response.dump(
        {"contact": customer, **({"ignored": ignored} if ignored else {})}
    )


@bp.post("/identify")
@access.role("checkout")
def identify():
    body = _json_object()
    checkout = _load_identifiers(body)
    try:
        result = _record(checkout)
    except repository.ValueBlocked:  # blocked in another process a moment ago
        current_app.extensions["identity_blocklist"].refresh_now()
        checkout = _load_identifiers(body)
        result = _record(checkout)
    if result.blocked_hub:  # HUB_ACTION=block: this process reads the table again
        current_app.extensions["identity_blocklist"].expire()
    g.outcome = result.outcome.value  # counted and logged by observability
    g.new_hubs = result.new_hubs  # likewise
    return _answer(result.customer, checkout["ignored"])


def _record(checkout: dict) -> reconcile.Checkout:
    hub_rule = current_app.extensions["identity_hub_rule"]
    return run_unit(
        lambda conn: reconcile.identify(
            conn, checkout["email"], checkout["phone_number"], g.request_id, hub_rule
        )
    )


@bp.get("/identify")
@access.role("support")
def look_up():
    query = _load_identifiers(request.args.to_dict())
    customer = run_unit(
        lambda conn: lookups.customer_by_values(conn, query["email"], query["phone_number"])
    )
    return _answer(customer, query["ignored"])


@bp.get("/contacts/<contact_id:contact_id>")
@access.role("support")
def contact(contact_id: int):
    return _answer(run_unit(lambda conn: lookups.customer_by_contact(conn, contact_id)), [])


@bp.get("/contacts/<contact_id:contact_id>/history")
@access.role("support")
def contact_history(contact_id: int):
    return customer_history.dump(run_unit(lambda conn: lookups.history(conn, contact_id)))


@bp.post("/contacts/<contact_id:contact_id>/detach")
@access.role("support")
def detach(contact_id: int):
    order = current_app.extensions["identity_detach_schema"].load(_json_object())
    customers = run_unit(
        lambda conn: corrections.detach(
            conn, contact_id, order["kind"], order["value"], order["block"], g.request_id
        )
    )
    if order["block"]:
        current_app.extensions["identity_blocklist"].expire()
    return detach_response.dump({"customers": customers})


@bp.delete("/contacts/<contact_id:contact_id>")
@access.role("support")
def erase(contact_id: int):
    erased = run_unit(lambda conn: corrections.erase(conn, contact_id, g.request_id))
    return erase_response.dump({"erased": erased})


@bp.get("/hubs")
@access.role("support")
def hubs():
    return suspected_hubs.dump({"hubs": run_unit(lookups.suspected_hubs)})


@bp.get("/events")
@access.role("feed")
def events():
    query = feed_query.load(request.args.to_dict())
    if query["wait"] and not request.environ.get(LONG_POLL_ALLOWED, True):
        # Every long-poll thread of this worker is taken (identity/process/server.py):
        # waiting here would hold a thread that checkouts need.
        raise ApiError(
            429,
            "too_many_long_polls",
            "too many long polls are waiting in this server; retry, or read without wait",
            retry_after=current_app.config["RETRY_AFTER_S"],
        )
    page = feed.wait_for_page(
        lambda: _read_events(query),
        query["wait"],
        # A long poll ends early when the server drains, so SIGTERM is not held up.
        stopping=lambda: current_app.extensions.get("identity_draining", False),
    )
    return feed_page.dump(page)


def _read_events(query: dict) -> feed.Page:
    """One read of the feed in an application context of its own: it has its own database
    deadline (a long poll outlasts the request's), and its pooled connection goes back
    when it ends, so a waiting long poll holds none."""
    with current_app.app_context():
        return run_unit(lambda conn: feed.read_page(conn, query["after"], query["limit"]))


@bp.get("/healthz")
@access.open_route
def healthz():
    return {"status": "ok"}


@bp.get("/readyz")
@access.open_route
def readyz():
    if not run_unit(repository.schema_present):
        raise SchemaMissing("no contact table")
    return {"status": "ok"}


@bp.get("/metrics")
@access.open_route
def metrics():
    registry = current_app.extensions["identity_metrics"]
    registry.webhooks.subscribers = _webhook_figures()
    body, content_type = registry.exposition()
    return Response(body, content_type=content_type)


def _webhook_figures() -> list[feed_repository.SubscriberStats]:
    """The deliverers' figures, from the database. While it is unreachable a scrape
    leaves them out, so that the service's own metrics still arrive."""
    try:
        return run_unit(feed_repository.subscriber_stats)
    except DatabaseUnavailable:
        return []


@bp.get("/openapi.json")
@access.open_route
def openapi():
    return current_app.extensions["identity_openapi"]
