"""One JSON error shape for every failure (SPEC §7):

    {"error": {"code": "...", "message": "...", "fields": {...}}}

`fields` appears only when single request fields are at fault. Messages are ours, never
str(exception): database errors can carry SQL, values and other internals.
"""

import logging
import traceback

from flask import Flask, current_app, jsonify
from marshmallow import ValidationError
from werkzeug.exceptions import HTTPException

from .db import DatabaseUnavailable, SchemaMissing
from .lookups import NotFound, ValuesSpanCustomers
from .schemas import AllValuesBlocked

logger = logging.getLogger(__name__)

# Our codes for the HTTP errors Flask and Werkzeug raise themselves.
_HTTP_CODES = {
    400: ("bad_request", "the request could not be understood"),
    404: ("not_found", "no such resource"),
    405: ("method_not_allowed", "this method is not allowed here"),
    413: ("payload_too_large", "the request body is too large"),
    415: ("unsupported_media_type", "the body must be JSON (Content-Type: application/json)"),
}


class ApiError(Exception):
    """An error the service reports on purpose, with its own status, code and message."""

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        fields: dict | None = None,
        retry_after: int | None = None,
    ):
        super().__init__(code)
        self.status, self.code, self.message, self.fields = status, code, message, fields
        self.retry_after = retry_after


def error_body(code: str, message: str, fields: dict | None = None) -> dict:
    error = {"code": code, "message": message}
    if fields:
        error["fields"] = fields
    return {"error": error}


def _api_error(error: ApiError):
    response = jsonify(error_body(error.code, error.message, error.fields))
    response.status_code = error.status
    if error.retry_after is not None:
        response.headers["Retry-After"] = str(error.retry_after)
    return response


def _validation_error(error: ValidationError):
    messages = error.normalized_messages()
    schema_messages = messages.pop("_schema", [])
    if messages:
        summary = "; ".join(f"{name} {' '.join(text)}" for name, text in messages.items())
        return jsonify(error_body("invalid_field", summary, messages)), 400
    return jsonify(error_body("missing_identifier", " ".join(schema_messages))), 400


def _all_values_blocked(error: AllValuesBlocked):
    message = "every value given is on the junk-value blocklist: " + ", ".join(error.fields)
    return jsonify(error_body("blocked_values", message)), 400


def _not_found(_error: NotFound):
    return jsonify(error_body("not_found", "no customer matches")), 404


def _values_span_customers(_error: ValuesSpanCustomers):
    message = (
        "the e-mail and the phone number belong to different customers; look them up one at a time"
    )
    return jsonify(error_body("values_span_customers", message)), 409


def _http_error(error: HTTPException):
    # Start from Werkzeug's own response so headers such as Allow survive.
    response = error.get_response()
    code, message = _HTTP_CODES.get(error.code, ("http_error", error.name.lower()))
    response.set_data(jsonify(error_body(code, message)).get_data())
    response.content_type = "application/json"
    return response


def _database_unavailable(error: DatabaseUnavailable):
    if isinstance(error, SchemaMissing):
        body = error_body("schema_missing", "the database has no contact table: run make db-init")
    else:
        body = error_body("database_unavailable", "the database is unavailable; retry shortly")
    response = jsonify(body)
    response.status_code = 503
    response.headers["Retry-After"] = str(current_app.config["RETRY_AFTER_S"])
    return response


def _unexpected(error: Exception):
    # The traceback without the exception's message, which may carry personal data.
    frames = "".join(traceback.format_tb(error.__traceback__))
    logger.error("unhandled %s\n%s", type(error).__name__, frames)
    return jsonify(error_body("internal_error", "internal server error")), 500


def init_app(app: Flask) -> None:
    app.register_error_handler(ApiError, _api_error)
    app.register_error_handler(ValidationError, _validation_error)
    app.register_error_handler(AllValuesBlocked, _all_values_blocked)
    app.register_error_handler(NotFound, _not_found)
    app.register_error_handler(ValuesSpanCustomers, _values_span_customers)
    app.register_error_handler(HTTPException, _http_error)
    app.register_error_handler(DatabaseUnavailable, _database_unavailable)
    app.register_error_handler(Exception, _unexpected)
