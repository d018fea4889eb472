"""Every HTTP error is ``application/problem+json`` (RFC 9457) with a stable ``code``.

The status comes from the error's code; nothing about the server's internals (a stack trace, a
file path) ever reaches the client.
"""

from __future__ import annotations

import json
import math
from typing import Any

from starlette.responses import Response

from agentstage.errors import (
    AgentstageError,
    ConflictError,
    ForbiddenError,
    NotFoundError,
    StoreError,
    TooManyRequestsError,
    UnauthorizedError,
    UserError,
)

PROBLEM_TYPE = "application/problem+json"

TITLES = {
    400: "Bad Request",
    401: "Unauthorized",
    403: "Forbidden",
    404: "Not Found",
    405: "Method Not Allowed",
    406: "Not Acceptable",
    409: "Conflict",
    413: "Content Too Large",
    415: "Unsupported Media Type",
    422: "Unprocessable Content",
    429: "Too Many Requests",
    500: "Internal Server Error",
    503: "Service Unavailable",
    507: "Insufficient Storage",
}

_STATUS_BY_CODE = {
    "invalid_tool_arguments": 422,
    "invalid_request": 422,
    "unknown_mode": 422,
    "unknown_profile": 422,
    "empty_input": 422,
    "input_too_long": 422,
    "input_has_nul": 422,
    "input_not_unicode": 422,
    "invalid_input": 422,
    "empty_batch": 422,
    "invalid_parallel": 422,
    "config_invalid": 422,
    "model_unavailable": 503,
    "malformed_json": 400,
    "store_unavailable": 503,
    "storage_full": 507,
    "encryption_key_missing": 503,
    "encryption_key_unknown": 503,
}


def status_for(error: AgentstageError) -> int:
    if error.code in _STATUS_BY_CODE:
        return _STATUS_BY_CODE[error.code]
    if isinstance(error, UnauthorizedError):
        return 401
    if isinstance(error, ForbiddenError):
        return 403
    if isinstance(error, TooManyRequestsError):
        return 429
    if isinstance(error, NotFoundError):
        return 404
    if isinstance(error, ConflictError):
        return 409
    if isinstance(error, UserError):
        return 422
    return 500


def problem(
    status: int,
    code: str,
    detail: str,
    *,
    instance: str | None = None,
    request_id: str | None = None,
    extra: dict[str, Any] | None = None,
    headers: dict[str, str] | None = None,
) -> Response:
    body: dict[str, Any] = {
        "type": f"urn:agentstage:problem:{code}",
        "title": TITLES.get(status, "Error"),
        "status": status,
        "code": code,
        "detail": detail,
    }
    if instance:
        body["instance"] = instance
    if request_id:
        body["request_id"] = request_id
    if extra:
        body.update({key: value for key, value in extra.items() if key not in body})
    return Response(
        json.dumps(body, ensure_ascii=False), status_code=status, media_type=PROBLEM_TYPE, headers=headers
    )


def problem_for(
    error: AgentstageError, *, instance: str | None = None, request_id: str | None = None
) -> Response:
    headers = None
    if isinstance(error, TooManyRequestsError | StoreError) and error.retry_after is not None:
        headers = {"Retry-After": str(max(1, math.ceil(error.retry_after)))}
    return problem(
        status_for(error),
        error.code,
        error.message,
        instance=instance,
        request_id=request_id,
        extra=error.details or None,
        headers=headers,
    )
