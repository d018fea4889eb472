"""Errors as gRPC statuses: the right code, a message that names what was wrong, and details a
program can read without parsing the message.

Every failure carries, in ``grpc-status-details-bin``, a ``google.rpc.Status`` with an ``ErrorInfo``
whose ``reason`` is agentstage's stable error code (also sent as the ``x-error-code`` trailer);
invalid fields come as a ``BadRequest``; a rate limit as a ``RetryInfo`` (and ``retry-after``). An
unexpected exception becomes ``INTERNAL`` with a reference to the server log, never its internals.
"""

from __future__ import annotations

import logging
import math
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import google.rpc.error_details_pb2 as error_details_pb2
import google.rpc.status_pb2 as status_pb2
import grpc
from google.protobuf import any_pb2, duration_pb2

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

log = logging.getLogger("agentstage.grpc")
DOMAIN = "agentstage"
Metadata = tuple[tuple[str, str | bytes], ...]

# Validation errors whose request field is known from the error code alone.
FIELD_BY_CODE = {
    "empty_input": "input",
    "input_too_long": "input",
    "input_has_nul": "input",
    "input_not_unicode": "input",
    "unknown_mode": "mode",
    "unknown_profile": "profile",
}
STATUS_BY_CODE = {
    "run_finished": grpc.StatusCode.FAILED_PRECONDITION,
    "internal_error": grpc.StatusCode.INTERNAL,
    "encryption_key_missing": grpc.StatusCode.UNAVAILABLE,  # the server lacks a key its data needs
    "encryption_key_unknown": grpc.StatusCode.UNAVAILABLE,
}


@dataclass
class Failure:
    """A status to end a call with."""

    code: grpc.StatusCode
    message: str
    reason: str
    fields: list[tuple[str, str]] = field(default_factory=list)  # (request field, what is wrong)
    retry_after: float | None = None
    metadata: dict[str, str] = field(default_factory=dict)

    def trailing_metadata(self) -> Metadata:
        details = [
            _pack(error_details_pb2.ErrorInfo(reason=self.reason, domain=DOMAIN, metadata=self.metadata))
        ]
        if self.fields:
            violations = [
                error_details_pb2.BadRequest.FieldViolation(field=name, description=text)
                for name, text in self.fields
            ]
            details.append(_pack(error_details_pb2.BadRequest(field_violations=violations)))
        extra: list[tuple[str, str | bytes]] = [("x-error-code", self.reason)]
        if self.retry_after is not None:
            seconds = max(1, math.ceil(self.retry_after))
            details.append(
                _pack(error_details_pb2.RetryInfo(retry_delay=duration_pb2.Duration(seconds=seconds)))
            )
            extra += [("retry-after", str(seconds)), ("grpc-retry-pushback-ms", str(seconds * 1000))]
        status = status_pb2.Status(code=self.code.value[0], message=self.message, details=details)
        return (("grpc-status-details-bin", status.SerializeToString()), *extra)

    async def abort(self, context: grpc.aio.ServicerContext[Any, Any]) -> None:
        await context.abort(self.code, self.message, self.trailing_metadata())


def _pack(message: Any) -> any_pb2.Any:
    packed = any_pb2.Any()
    packed.Pack(message)
    return packed


def failure_for(error: AgentstageError, prefix: str = "") -> Failure:
    """The status for one of our own errors; ``prefix`` places field names in the request
    (``message.`` for a chat message)."""
    if isinstance(error, StoreError):
        return _store_failure(error)
    if isinstance(error, TooManyRequestsError):
        return Failure(
            grpc.StatusCode.RESOURCE_EXHAUSTED, error.message, error.code, retry_after=error.retry_after
        )
    fields = [(prefix + name, text) for name, text in _fields(error)]
    message = error.message
    if len(fields) == 1 and not message.startswith(fields[0][0]):
        message = f"{fields[0][0]}: {message}"
    metadata = {key: str(value) for key, value in error.details.items() if isinstance(value, str | int)}
    return Failure(_status(error), message, error.code, fields, metadata=metadata)


def _store_failure(error: StoreError) -> Failure:
    """The store is busy, gone or full: say so and when to retry, never the driver's words."""
    log.warning("store error surfaced to a gRPC call: %s", error.message)
    if error.code == "storage_full":
        code, message = grpc.StatusCode.RESOURCE_EXHAUSTED, "the store is out of space"
    elif error.code == "store_unavailable":
        code, message = grpc.StatusCode.UNAVAILABLE, "the store is unavailable"
    elif error.code == "encrypted_value_invalid":  # altered or moved between rows: retrying cannot help
        return Failure(grpc.StatusCode.DATA_LOSS, error.message, error.code)
    else:
        code, message = grpc.StatusCode.INTERNAL, "the store could not keep this run's writes"
    return Failure(code, f"{message}; retry later", error.code, retry_after=error.retry_after)


def _status(error: AgentstageError) -> grpc.StatusCode:
    if error.code in STATUS_BY_CODE:
        return STATUS_BY_CODE[error.code]
    if isinstance(error, UnauthorizedError):
        return grpc.StatusCode.UNAUTHENTICATED
    if isinstance(error, ForbiddenError):
        return grpc.StatusCode.PERMISSION_DENIED
    if isinstance(error, NotFoundError):
        return grpc.StatusCode.NOT_FOUND
    if isinstance(error, ConflictError):
        exists = error.code.endswith("_exists")
        return grpc.StatusCode.ALREADY_EXISTS if exists else grpc.StatusCode.FAILED_PRECONDITION
    if isinstance(error, UserError):
        return grpc.StatusCode.INVALID_ARGUMENT
    return grpc.StatusCode.INTERNAL


def _fields(error: AgentstageError) -> Sequence[tuple[str, str]]:
    listed = error.details.get("errors")
    if isinstance(listed, list) and listed:
        base = "arguments_json." if error.code == "invalid_tool_arguments" else ""
        return [(base + str(item.get("field", "")), str(item.get("message", ""))) for item in listed]
    if error.code in FIELD_BY_CODE:
        return [(FIELD_BY_CODE[error.code], error.message)]
    return []


class CallFailed(Exception):
    """Raised by a method to end its call with a status it built itself."""

    def __init__(self, failure: Failure):
        super().__init__(failure.message)
        self.failure = failure


def internal(method: str, error: BaseException) -> Failure:
    """Log the whole exception under an id; the client gets the id only."""
    reference = uuid.uuid4().hex[:12]
    log.error("unhandled error in %s (error %s)", method, reference, exc_info=error)
    message = f"an internal error occurred; the server log has the details (error {reference})"
    return Failure(grpc.StatusCode.INTERNAL, message, "internal_error")
