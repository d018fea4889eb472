"""Exception handlers: every failure becomes problem+json; a stack trace only reaches the log."""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException
from starlette.responses import Response

from agentstage.errors import AgentstageError
from agentstage.interfaces.http.deps import request_id
from agentstage.interfaces.http.problems import problem, problem_for
from agentstage.runtime.wiring import store_error_for

log = logging.getLogger("agentstage.http")

_CODE_BY_STATUS = {
    400: "malformed_body",
    404: "not_found",
    405: "method_not_allowed",
    415: "unsupported_media_type",
}


def _field(location: tuple[Any, ...] | list[Any]) -> str:
    parts = [str(part) for part in location]
    if parts and parts[0] in ("body", "query", "path", "header"):
        parts = parts[1:] if len(parts) > 1 else parts
    return ".".join(parts) or "(body)"


async def on_agentstage_error(request: Request, error: Exception) -> Response:
    assert isinstance(error, AgentstageError)
    return problem_for(error, instance=request.url.path, request_id=request_id(request))


async def on_validation_error(request: Request, error: Exception) -> Response:
    assert isinstance(error, RequestValidationError)
    details = [
        {
            "field": _field(item.get("loc", ())),
            "message": str(item.get("msg", "")),
            "type": str(item.get("type", "")),
        }
        for item in error.errors()
    ]
    content_type = request.headers.get("content-type", "")
    if content_type and "json" not in content_type and any(d["field"] == "body" for d in details):
        return problem(
            415, "unsupported_media_type", f"send the body as JSON (Content-Type: application/json), not {content_type!r}",
            instance=request.url.path, request_id=request_id(request),
        )  # fmt: skip
    invalid_json = next((item for item in error.errors() if item.get("type") == "json_invalid"), None)
    if invalid_json is not None:
        message = str(invalid_json.get("ctx", {}).get("error") or invalid_json.get("msg", ""))
        location = invalid_json.get("loc", ())
        if len(location) > 1 and isinstance(location[1], int) and "position" not in message:
            message += f" (at character {location[1]})"
        return problem(
            400, "malformed_json", f"the body is not valid JSON: {message}", instance=request.url.path,
            request_id=request_id(request),
        )  # fmt: skip
    summary = "; ".join(f"{d['field']}: {d['message']}" for d in details)
    return problem(
        422, "invalid_request", f"invalid request: {summary}", instance=request.url.path,
        request_id=request_id(request), extra={"errors": details},
    )  # fmt: skip


async def on_http_error(request: Request, error: Exception) -> Response:
    assert isinstance(error, HTTPException)
    code = _CODE_BY_STATUS.get(error.status_code, "http_error")
    detail = str(error.detail)
    if error.status_code == 404:
        detail = f"no such resource: {request.method} {request.url.path}"
    elif error.status_code == 405:
        detail = f"{request.method} is not allowed on {request.url.path}"
    elif error.status_code == 400:
        detail = f"the body could not be read: {detail}"
    return problem(
        error.status_code, code, detail, instance=request.url.path, request_id=request_id(request),
        headers=dict(error.headers or {}),
    )  # fmt: skip


async def on_unexpected_error(request: Request, error: Exception) -> Response:
    rid = request_id(request)
    unavailable = store_error_for(error)
    if unavailable is not None and unavailable.code == "store_unavailable":  # 503 + Retry-After, not 500
        log.warning("%s %s: %s", request.method, request.url.path, unavailable.message)
        return problem_for(unavailable, instance=request.url.path, request_id=rid)
    log.exception("unhandled error on %s %s (request %s)", request.method, request.url.path, rid)
    return problem(
        500, "internal_error", f"an internal error occurred; the server log has the details (request {rid})",
        instance=request.url.path, request_id=rid,
    )  # fmt: skip


def install(app: FastAPI) -> None:
    app.add_exception_handler(AgentstageError, on_agentstage_error)
    app.add_exception_handler(RequestValidationError, on_validation_error)
    app.add_exception_handler(HTTPException, on_http_error)
    app.add_exception_handler(Exception, on_unexpected_error)
