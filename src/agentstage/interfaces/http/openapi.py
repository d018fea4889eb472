"""The OpenAPI document, as served at /openapi.json and written to docs/openapi.json.

Error responses are described as ``application/problem+json`` with the Problem schema, which is
what the server sends (FastAPI would otherwise claim ``application/json`` and its own 422 shape)."""

from __future__ import annotations

import json
from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi

PROBLEM_REF = {"$ref": "#/components/schemas/Problem"}


def build_openapi(app: FastAPI) -> dict[str, Any]:
    if app.openapi_schema:
        return app.openapi_schema
    document = get_openapi(
        title=app.title, version=app.version, description=app.description, routes=app.routes
    )
    for operations in document.get("paths", {}).values():
        for operation in operations.values():
            for status, response in operation.get("responses", {}).items():
                if status.isdigit() and int(status) >= 400 and int(status) != 503:
                    response["content"] = {"application/problem+json": {"schema": PROBLEM_REF}}
                if status == "422":
                    response["description"] = "Unprocessable Content"
    schemas = document.get("components", {}).get("schemas", {})
    for unused in ("HTTPValidationError", "ValidationError"):
        schemas.pop(unused, None)
    app.openapi_schema = document
    return document


def openapi_json(app: FastAPI) -> str:
    return json.dumps(build_openapi(app), indent=2, sort_keys=True) + "\n"
