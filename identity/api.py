"""HTTP routes: parse the request, call one function, serialise the answer."""

import json

from flask import Blueprint, Response, current_app, g, request

from . import reconcile, repository
from .db import run_unit
from .errors import ApiError
from .openapi import build_spec
from .schemas import identify_request, identify_response

bp = Blueprint("identity", __name__)
_openapi_document = build_spec()


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


@bp.post("/identify")
def identify():
    checkout = identify_request.load(_json_object())
    customer, outcome = run_unit(
        lambda conn: reconcile.identify(conn, checkout["email"], checkout["phone_number"])
    )
    g.outcome = outcome.value
    current_app.extensions["identity_metrics"].outcomes.labels(outcome.value).inc()
    return identify_response.dump({"contact": customer})


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
