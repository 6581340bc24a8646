"""One JSON error shape for every failure (SPEC §7):

    {"error": {"code": "...", "message": "...", "fields": {...}}}

`fields` appears only when single request fields are at fault. Messages are ours, never
str(exception): database errors can carry SQL, values and other internals.
"""

import logging
import traceback

from flask import Flask, current_app, g, jsonify, request
from marshmallow import ValidationError
from werkzeug.exceptions import HTTPException

from identity.customers.corrections import ValueNotInCustomer
from identity.customers.lookups import NotFound, ValuesSpanCustomers
from identity.customers.normalise import (
    AllValuesBlocked,
    blocked_values_detail,
    validation_error_detail,
)
from identity.database.connections import DatabaseUnavailable

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
        headers: dict | None = None,
    ):
        super().__init__(code)
        self.status, self.code, self.message, self.fields = status, code, message, fields
        self.retry_after, self.headers = retry_after, headers


def _error_response(
    status: int,
    code: str,
    message: str,
    fields: dict | None = None,
    retry_after: int | None = None,
    headers: dict | None = None,
):
    error: dict[str, object] = {"code": code, "message": message}
    if fields:
        error["fields"] = fields
    response = jsonify({"error": error})
    response.status_code = status
    if retry_after is not None:
        response.headers["Retry-After"] = str(retry_after)
    response.headers.update(headers or {})
    return response


def _api_error(error: ApiError):
    return _error_response(
        error.status, error.code, error.message, error.fields, error.retry_after, error.headers
    )


def _validation_error(error: ValidationError):
    return _error_response(400, *validation_error_detail(error))


def _all_values_blocked(error: AllValuesBlocked):
    return _error_response(400, *blocked_values_detail(error))


# The look-ups' and corrections' outcomes that are not a customer.
_LOOKUP_ERRORS = {
    NotFound: (404, "not_found", "no customer matches"),
    ValuesSpanCustomers: (
        409,
        "values_span_customers",
        "the e-mail and the phone number belong to different customers; look them up one at a time",
    ),
    ValueNotInCustomer: (409, "value_not_in_customer", "the customer does not hold this value"),
}


def _lookup_error(error: Exception):
    return _error_response(*_LOOKUP_ERRORS[type(error)])


def _http_error(error: HTTPException):
    # Start from Werkzeug's own response so headers such as Allow survive.
    response = error.get_response()
    status = error.code or 500  # a registered HTTPException always has its code
    code, message = _HTTP_CODES.get(status, ("http_error", error.name.lower()))
    response.set_data(_error_response(status, code, message).get_data())
    response.content_type = "application/json"
    return response


def _database_unavailable(error: DatabaseUnavailable):
    # Our own reason and the route's pattern, never the path or the body: no personal data.
    logger.warning(
        "503 %s: %s",
        error.code,
        error.reason,
        extra={
            "code": error.code,
            "route": request.url_rule.rule if request.url_rule else None,
            "request_id": g.get("request_id"),
        },
    )
    retry_after = current_app.config["RETRY_AFTER_S"]
    return _error_response(503, error.code, error.message, retry_after=retry_after)


def _unexpected(error: Exception):
    # The traceback without the exception's message, which may carry personal data.
    frames = "".join(traceback.format_tb(error.__traceback__))
    logger.error("unhandled %s\n%s", type(error).__name__, frames)
    return _error_response(500, "internal_error", "internal server error")


def init_app(app: Flask) -> None:
    app.register_error_handler(ApiError, _api_error)
    app.register_error_handler(ValidationError, _validation_error)
    app.register_error_handler(AllValuesBlocked, _all_values_blocked)
    for lookup_error in _LOOKUP_ERRORS:
        app.register_error_handler(lookup_error, _lookup_error)
    app.register_error_handler(HTTPException, _http_error)
    app.register_error_handler(DatabaseUnavailable, _database_unavailable)
    app.register_error_handler(Exception, _unexpected)
