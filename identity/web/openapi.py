"""The OpenAPI 3 document of every route, generated from the marshmallow schemas, with
each route's role taken from its access declaration."""

import re

from apispec import APISpec
from apispec.ext.marshmallow import MarshmallowPlugin
from flask import Flask

from . import access
from .schemas import (
    CustomerHistory,
    DetachRequest,
    DetachResponse,
    EraseResponse,
    Error,
    FeedPage,
    FeedQuery,
    IdentifyRequest,
    IdentifyResponse,
    Status,
    SuspectedHubs,
)

_ERRORS = {
    "400": "malformed JSON, not an object, or a field fails validation",
    "404": "unknown path",
    "405": "wrong method (see the Allow header)",
    "413": "body over the size limit",
    "415": "Content-Type is not JSON",
    "500": "unexpected error; nothing was written",
    "503": "database unavailable (see the Retry-After header)",
}


def _error(description: str) -> dict:
    return {"description": description, "content": {"application/json": {"schema": "Error"}}}


def _json(schema: str, description: str) -> dict:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _contact_operation(summary: str, answer: dict) -> dict:
    contact_id = {
        "in": "path",
        "name": "contact_id",
        "required": True,
        "schema": {"type": "integer", "minimum": 0, "maximum": 2**31 - 1},
    }
    return {
        "summary": summary,
        "parameters": [contact_id],
        "responses": {
            "200": answer,
            "404": _error("unknown or deleted row"),
            "503": _error(_ERRORS["503"]),
        },
    }


def build_spec() -> dict:
    spec = APISpec(
        title="Identity reconciliation service",
        version="1.0.0",
        openapi_version="3.0.3",
        plugins=[MarshmallowPlugin()],
    )
    spec.components.schema("IdentifyRequest", schema=IdentifyRequest)
    spec.components.schema("IdentifyResponse", schema=IdentifyResponse)
    spec.components.schema("Error", schema=Error)
    spec.components.schema("Status", schema=Status)
    spec.components.schema("CustomerHistory", schema=CustomerHistory)
    spec.components.schema("DetachRequest", schema=DetachRequest)
    spec.components.schema("DetachResponse", schema=DetachResponse)
    spec.components.schema("EraseResponse", schema=EraseResponse)
    spec.components.schema("FeedPage", schema=FeedPage)
    spec.components.schema("SuspectedHubs", schema=SuspectedHubs)

    spec.path(
        path="/identify",
        operations={
            "post": {
                "summary": (
                    "Record a checkout's e-mail and/or phone number; answer with its customer"
                ),
                "requestBody": {
                    "required": True,
                    "content": {"application/json": {"schema": "IdentifyRequest"}},
                },
                "responses": {
                    "200": _json("IdentifyResponse", "the consolidated customer"),
                    **{status: _error(text) for status, text in _ERRORS.items() if status != "404"},
                },
            },
            "get": {
                "summary": "Look up the customer of an e-mail and/or phone number; never writes",
                "parameters": [
                    {"in": "query", "name": "email", "schema": {"type": "string"}},
                    {"in": "query", "name": "phoneNumber", "schema": {"type": "string"}},
                ],
                "responses": {
                    "200": _json("IdentifyResponse", "the customer"),
                    "400": _error("a value fails validation, or none is given"),
                    "404": _error("no customer has these values"),
                    "409": _error("the e-mail and the phone number belong to different customers"),
                    "503": _error(_ERRORS["503"]),
                },
            },
        },
    )
    erase = _contact_operation(
        "Erase the customer a contact row belongs to: its values leave every row and every "
        "history event, its rows are soft-deleted (cannot be undone)",
        _json("EraseResponse", "the erased customer's primary and rows"),
    )
    spec.path(
        path="/contacts/{contact_id}",
        operations={
            "get": _contact_operation(
                "The customer a contact row belongs to; never writes",
                _json("IdentifyResponse", "the customer"),
            ),
            "delete": erase,
        },
    )
    spec.path(
        path="/contacts/{contact_id}/history",
        operations={
            "get": _contact_operation(
                "Every change to the customer of a contact row, "
                "oldest first, including the customers merged into it",
                _json("CustomerHistory", "the merge history"),
            )
        },
    )
    detach = _contact_operation(
        "Remove one e-mail or phone number from the customer a contact row belongs to and "
        "link its remaining rows again (the customer may split); optionally block the value",
        _json("DetachResponse", "the resulting customers, oldest primary first"),
    )
    detach["requestBody"] = {
        "required": True,
        "content": {"application/json": {"schema": "DetachRequest"}},
    }
    detach["responses"].update(
        {
            "400": _error(_ERRORS["400"] + "; or not exactly one of email and phoneNumber"),
            "409": _error("value_not_in_customer: the customer does not hold the value"),
            "413": _error(_ERRORS["413"]),
            "415": _error(_ERRORS["415"]),
        }
    )
    spec.path(path="/contacts/{contact_id}/detach", operations={"post": detach})
    spec.path(
        path="/hubs",
        operations={
            "get": {
                "summary": "The suspected hubs not yet resolved, newest first: values shared "
                "by more than HUB_MAX_PARTNERS values of the other kind within one customer",
                "responses": {
                    "200": _json("SuspectedHubs", "the suspected hubs"),
                    "503": _error(_ERRORS["503"]),
                },
            }
        },
    )
    spec.path(
        path="/events",
        operations={
            "get": {
                "summary": "The change feed: events after a cursor, in the order they committed",
                "parameters": [{"in": "query", "schema": FeedQuery}],
                "responses": {
                    "200": _json("FeedPage", "the next events and the cursor to read on from"),
                    "400": _error("after is not a cursor, or limit or wait is out of range"),
                    "429": _error("too many long polls wait already (see the Retry-After header)"),
                    "503": _error(_ERRORS["503"]),
                },
            }
        },
    )
    spec.path(
        path="/healthz",
        operations={
            "get": {"summary": "The process is up", "responses": {"200": _json("Status", "up")}}
        },
    )
    spec.path(
        path="/readyz",
        operations={
            "get": {
                "summary": "The database is reachable and the schema present",
                "responses": {"200": _json("Status", "ready"), "503": _error("not ready")},
            }
        },
    )
    spec.path(
        path="/metrics",
        operations={
            "get": {
                "summary": "Prometheus metrics",
                "responses": {
                    "200": {
                        "description": "Prometheus text format",
                        "content": {"text/plain": {"schema": {"type": "string"}}},
                    }
                },
            }
        },
    )
    spec.path(
        path="/openapi.json",
        operations={
            "get": {
                "summary": "This document",
                "responses": {
                    "200": {
                        "description": "OpenAPI 3 document",
                        "content": {"application/json": {"schema": {"type": "object"}}},
                    }
                },
            }
        },
    )
    return spec.to_dict()


def _openapi_path(rule: str) -> str:
    """Flask's `/contacts/<int(max=9):contact_id>` as OpenAPI's `/contacts/{contact_id}`."""
    return re.sub(r"<(?:[^<>]*:)?([^<>:]+)>", r"{\1}", rule)


def _operation_ids(app: Flask) -> dict[tuple[str, str], str]:
    """Each operation's id, from its view's name in camel case (look_up: lookUp), so that
    generated clients get real method names."""
    ids = {}
    for rule in app.url_map.iter_rules():
        first, *rest = rule.endpoint.rsplit(".", 1)[-1].split("_")
        for method in (rule.methods or set()) - {"HEAD", "OPTIONS"}:
            ids[(_openapi_path(rule.rule), method.lower())] = first + "".join(
                word.capitalize() for word in rest
            )
    return ids


def _route_roles(app: Flask) -> dict[tuple[str, str], str | None]:
    return {
        (_openapi_path(rule.rule), method.lower()): access.declared_role(app, rule.endpoint)
        for rule in app.url_map.iter_rules()
        for method in (rule.methods or set()) - {"HEAD", "OPTIONS"}
    }


def document(app: Flask) -> dict:
    """build_spec()'s document, with a bearer scheme per role and each operation's role."""
    spec = build_spec()
    error = {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}
    spec["components"]["responses"] = {
        "Unauthorized": {
            "description": "no token, or an unknown one (see the WWW-Authenticate header)",
            "content": error,
        },
        "Forbidden": {"description": "a token of another role", "content": error},
    }
    spec["components"]["securitySchemes"] = {
        role: {
            "type": "http",
            "scheme": "bearer",
            "description": f"a token from {setting}; without any, loopback clients only",
        }
        for role, setting in access.SETTINGS.items()
    }
    roles, operation_ids = _route_roles(app), _operation_ids(app)
    for path, operations in spec["paths"].items():
        for method, operation in operations.items():
            operation["operationId"] = operation_ids[(path, method)]
            role = roles.get((path, method))
            if role == access.OPEN:
                operation["security"] = []
            elif role in access.ROLES:
                operation["security"] = [{role: []}]
                operation["responses"]["401"] = {"$ref": "#/components/responses/Unauthorized"}
                operation["responses"]["403"] = {"$ref": "#/components/responses/Forbidden"}
    return spec
