"""HTTP routes: parse the request, call one function, serialise the answer."""

import json

from flask import Blueprint, Response, current_app, g, request

from . import corrections, lookups, reconcile, repository
from .db import run_unit
from .errors import ApiError
from .openapi import build_spec
from .schemas import (
    customer_history,
    detach_request,
    detach_response,
    erase_response,
    identify_response,
)

bp = Blueprint("identity", __name__)
_openapi_document = build_spec()
# Row ids are PostgreSQL integers: a larger id in a path is simply not found.
_MAX_ID = 2**31 - 1


def _json_object() -> dict:
    """The request body as a JSON object, or the SPEC §7 error that says why not."""
    if not request.is_json:
        raise ApiError(
            415, "unsupported_media_type", "the body must be JSON (Content-Type: application/json)"
        )
    try:
        # Our own parse rather than request.get_json(): deeply nested input raises
        # RecursionError, which must be a 400 like any other malformed body.
        body = json.loads(request.get_data())
    except (ValueError, RecursionError):
        raise ApiError(400, "malformed_json", "the body is not valid JSON") from None
    if not isinstance(body, dict):
        raise ApiError(400, "not_an_object", "the body must be a JSON object")
    return body


def _load_identifiers(data: dict) -> dict:
    return current_app.extensions["identity_request_schema"].load(data)


def _answer(customer: reconcile.Customer, ignored: list[str]) -> dict:
    return identify_response.dump(
        {"contact": customer, **({"ignored": ignored} if ignored else {})}
    )


@bp.post("/identify")
def identify():
    body = _json_object()
    checkout = _load_identifiers(body)
    try:
        customer, outcome = _record(checkout)
    except repository.ValueBlocked:  # blocked in another process a moment ago
        current_app.extensions["identity_blocklist"].expire()
        checkout = _load_identifiers(body)
        customer, outcome = _record(checkout)
    g.outcome = outcome.value  # counted and logged by observability
    return _answer(customer, checkout["ignored"])


def _record(checkout: dict) -> tuple[reconcile.Customer, reconcile.Outcome]:
    return run_unit(
        lambda conn: reconcile.identify(
            conn, checkout["email"], checkout["phone_number"], g.request_id
        )
    )


@bp.get("/identify")
def look_up():
    query = _load_identifiers(request.args.to_dict())
    customer = run_unit(
        lambda conn: lookups.customer_by_values(conn, query["email"], query["phone_number"])
    )
    return _answer(customer, query["ignored"])


@bp.get(f"/contacts/<int(max={_MAX_ID}):contact_id>")
def contact(contact_id: int):
    return _answer(run_unit(lambda conn: lookups.customer_by_contact(conn, contact_id)), [])


@bp.get(f"/contacts/<int(max={_MAX_ID}):contact_id>/history")
def contact_history(contact_id: int):
    return customer_history.dump(run_unit(lambda conn: lookups.history(conn, contact_id)))


# role: support
@bp.post(f"/contacts/<int(max={_MAX_ID}):contact_id>/detach")
def detach(contact_id: int):
    order = detach_request.load(_json_object())
    customers = run_unit(
        lambda conn: corrections.detach(
            conn, contact_id, order["kind"], order["value"], order["block"], g.request_id
        )
    )
    if order["block"]:
        current_app.extensions["identity_blocklist"].expire()
    return detach_response.dump({"customers": customers})


# role: support
@bp.delete(f"/contacts/<int(max={_MAX_ID}):contact_id>")
def erase(contact_id: int):
    erased = run_unit(lambda conn: corrections.erase(conn, contact_id, g.request_id))
    return erase_response.dump({"erased": erased})


@bp.get("/healthz")
def healthz():
    return {"status": "ok"}


@bp.get("/readyz")
def readyz():
    # Taking a connection prepares the service's statements, which needs the schema:
    # a missing table is a 503 schema_missing before this query runs.
    run_unit(repository.schema_present)
    return {"status": "ok"}


@bp.get("/metrics")
def metrics():
    body, content_type = current_app.extensions["identity_metrics"].exposition()
    return Response(body, content_type=content_type)


@bp.get("/openapi.json")
def openapi():
    return _openapi_document
