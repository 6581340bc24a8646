"""Per-request bookkeeping: a request id, one JSON log line, Prometheus metrics.

Log lines carry the method, the path (never the query string), the status, the latency,
the /identify outcome, the request id (and the client's own, if it sent one), and the role
and token id access control found (identity/web/access.py); a newly suspected hub (SPEC
§13) adds a warning line with its kind and row id. No e-mail or phone number, which are
personal data, and no token ever reaches a log.
"""

import logging
import re
import time
import uuid

from flask import Flask, current_app, g, request

from .errors import ApiError

REQUEST_ID_HEADER = "X-Request-Id"
# Every request gets an id of ours, which the history stores with its changes and the
# answer's X-Request-Id carries: were it the client's, a client could make its changes
# carry another request's id. A client's own id is only logged beside ours (as
# client_request_id) for correlation, if it is short and plain.
_CLIENT_REQUEST_ID = re.compile(r"[A-Za-z0-9._:-]{1,128}")
# The methods a metric label may name: any other method a client makes up is "other",
# so that made-up methods cannot grow /metrics without bound.
_KNOWN_METHODS = frozenset(
    {"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "TRACE", "CONNECT"}
)
# Probes and scrapes arrive every few seconds; they are logged at DEBUG only.
_QUIET_PATHS = frozenset({"/healthz", "/readyz", "/metrics"})

access_log = logging.getLogger("identity.web.access")
hub_log = logging.getLogger("identity.customers.hubs")


def _metrics():
    return current_app.extensions["identity_metrics"]


# The hooks below run at every request. Each read of Flask's `g`, `request` or
# `current_app` looks the object up in a context variable through a proxy, so they look
# each one up once.


def _start_request() -> None:
    state, metrics = g._get_current_object(), _metrics()
    state.request_started = time.perf_counter()
    metrics.in_flight.inc()
    incoming = request.headers.get(REQUEST_ID_HEADER, "")
    state.client_request_id = incoming if _CLIENT_REQUEST_ID.fullmatch(incoming) else None
    state.request_id = uuid.uuid4().hex
    if current_app.extensions.get("identity_draining"):
        raise ApiError(503, "shutting_down", "the server is shutting down; retry", retry_after=1)


def _finish_request(response):
    state, incoming, metrics = g._get_current_object(), request._get_current_object(), _metrics()
    latency = time.perf_counter() - state.get("request_started", time.perf_counter())
    route = incoming.url_rule.rule if incoming.url_rule else "unmatched"
    method = incoming.method if incoming.method in _KNOWN_METHODS else "other"
    metrics.requests.labels(method, route, str(response.status_code)).observe(latency)
    outcome = state.get("outcome")
    if outcome:
        metrics.outcomes.labels(outcome).inc()
    _report_hubs(state.get("new_hubs", []))
    denied = state.get("access_denied")
    if denied:
        metrics.access_denied.labels(route, denied).inc()
    request_id = state.get("request_id") or uuid.uuid4().hex
    response.headers[REQUEST_ID_HEADER] = request_id
    path = incoming.path
    access_log.log(
        logging.DEBUG if path in _QUIET_PATHS else logging.INFO,
        "request",
        extra={
            "method": method,
            "path": path,
            "status": response.status_code,
            "latency_ms": round(latency * 1000, 3),
            "outcome": outcome,
            "request_id": request_id,
            "client_request_id": state.get("client_request_id"),
            "role": state.get("access_role"),
            "token_id": state.get("access_token_id"),
            "access_denied": denied,
        },
    )
    return response


def _report_hubs(new_hubs) -> None:
    """A newly suspected hub (SPEC §13): counted, and one warning line without the value."""
    for hub in new_hubs:
        _metrics().hubs_suspected.labels(hub.kind).inc()
        hub_log.warning(
            "hub suspected",
            extra={
                "kind": hub.kind,
                "contact_id": hub.contact_id,
                "partners": hub.partners,
                "request_id": g.get("request_id"),
            },
        )


def _end_request(_exception=None) -> None:
    if "request_started" in g:
        _metrics().in_flight.dec()


def init_app(app: Flask) -> None:
    app.before_request(_start_request)
    app.after_request(_finish_request)
    app.teardown_request(_end_request)
