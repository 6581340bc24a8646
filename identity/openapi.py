"""The OpenAPI 3 document of every route, generated from the marshmallow schemas."""

from apispec import APISpec
from apispec.ext.marshmallow import MarshmallowPlugin

from .schemas import (
    CustomerHistory,
    DetachRequest,
    DetachResponse,
    EraseResponse,
    Error,
    IdentifyRequest,
    IdentifyResponse,
    Status,
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

    spec.path(
        path="/identify",
        operations={
            "post": {
                "summary": "Record a checkout's e-mail and/or phone number; answer with its customer",
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
