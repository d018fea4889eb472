"""The one server interceptor: authenticate, check the method's permission, apply the rate limit,
then run the method with our errors mapped to statuses and one JSON log line per call.

Health and reflection pass through untouched. A refused call is refused before the method runs.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
import re
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextvars import ContextVar
from dataclasses import dataclass
from functools import partial
from typing import Any, TypeAlias

import grpc

from agentstage.errors import AgentstageError
from agentstage.interfaces.grpc.auth import (
    PERMISSIONS,
    Authenticator,
    Principal,
    RateLimiter,
    is_open,
    method_name,
)
from agentstage.interfaces.grpc.errors import CallFailed, Failure, failure_for, internal

log = logging.getLogger("agentstage.grpc.access")
_VALID_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")
Context: TypeAlias = "grpc.aio.ServicerContext[Any, Any]"
Handler: TypeAlias = "grpc.RpcMethodHandler[Any, Any]"


@dataclass(frozen=True)
class Call:
    """What a method knows about the call it serves."""

    method: str
    request_id: str
    principal: Principal


current_call: ContextVar[Call | None] = ContextVar("agentstage_grpc_call", default=None)


def request_id() -> str | None:
    call = current_call.get()
    return call.request_id if call else None


class GatewayInterceptor(grpc.aio.ServerInterceptor):
    def __init__(self, authenticator: Authenticator, limiter: RateLimiter):
        self.authenticator = authenticator
        self.limiter = limiter

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[Handler | None]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> Handler | None:
        handler = await continuation(handler_call_details)
        method = method_name(handler_call_details.method)
        if handler is None or is_open(method):
            return handler
        return _wrap(handler, _Guard(self, method))

    async def admit(self, method: str, context: Context) -> Call | Failure:
        """Authenticate the caller, check the method's permission, take a token of its rate limit."""
        metadata = {k: v for k, v in context.invocation_metadata() or () if isinstance(v, str)}
        given = metadata.get("x-request-id", "")
        rid = given if _VALID_REQUEST_ID.match(given) else uuid.uuid4().hex
        found = await self.authenticator.principal(metadata, context.peer())
        if isinstance(found, str):
            return Failure(grpc.StatusCode.UNAUTHENTICATED, found, "unauthenticated")
        permission = PERMISSIONS.get(method)
        if permission is None or not found.may(permission):
            needed = f"the {permission!r} permission" if permission else "a permission no key holds"
            return Failure(grpc.StatusCode.PERMISSION_DENIED, f"{method} needs {needed}", "permission_denied")
        wait = self.limiter.take(found)
        if wait > 0:
            per_minute = found.requests_per_minute or self.limiter.default_per_minute
            message = f"more than {per_minute} calls per minute; retry in {max(1, math.ceil(wait))}s"
            return Failure(grpc.StatusCode.RESOURCE_EXHAUSTED, message, "rate_limited", retry_after=wait)
        return Call(method, rid, found)


class _Guard:
    """Runs a method inside its call: admission first, then our errors mapped, one log line."""

    def __init__(self, gateway: GatewayInterceptor, method: str):
        self.gateway = gateway
        self.method = method

    async def unary(self, behavior: Any, request: Any, context: Context) -> Any:
        started, outcome = time.perf_counter(), _Outcome()
        call: Call | Failure | None = None
        token = None
        try:
            call = await self.gateway.admit(self.method, context)
            if isinstance(call, Failure):
                await outcome.fail(call, context)
            assert isinstance(call, Call)
            token = current_call.set(call)
            return await behavior(request, context)
        except BaseException as error:
            await outcome.settle(self.method, error, context)
            raise
        finally:
            if token is not None:
                with contextlib.suppress(ValueError):  # a stream closed from another context
                    current_call.reset(token)
            _log(self.method, call, outcome.code, started)

    async def stream(self, behavior: Any, request: Any, context: Context) -> AsyncIterator[Any]:
        started, outcome = time.perf_counter(), _Outcome()
        call: Call | Failure | None = None
        token = None
        try:
            call = await self.gateway.admit(self.method, context)
            if isinstance(call, Failure):
                await outcome.fail(call, context)
            assert isinstance(call, Call)
            token = current_call.set(call)
            async with contextlib.aclosing(behavior(request, context)) as items:  # closed with the call
                async for item in items:
                    yield item
        except BaseException as error:
            await outcome.settle(self.method, error, context)
            raise
        finally:
            if token is not None:
                with contextlib.suppress(ValueError):  # a stream closed from another context
                    current_call.reset(token)
            _log(self.method, call, outcome.code, started)


class _Outcome:
    """The status a call ended with, for the log."""

    def __init__(self) -> None:
        self.code = "OK"

    async def fail(self, failure: Failure, context: Context) -> None:
        self.code = failure.code.name
        await failure.abort(context)

    async def settle(self, method: str, error: BaseException, context: Context) -> None:
        """Map an error escaping the method to the call's status (``abort`` raises)."""
        if isinstance(error, asyncio.CancelledError | GeneratorExit):
            self.code = "CANCELLED"
        elif isinstance(error, CallFailed):
            await self.fail(error.failure, context)
        elif isinstance(error, AgentstageError):
            await self.fail(failure_for(error), context)
        elif not isinstance(error, grpc.aio.AbortError):
            await self.fail(internal(method, error), context)


def _log(method: str, call: Call | Failure | None, code: str, started: float) -> None:
    admitted = call if isinstance(call, Call) else None
    line = {
        "event": "grpc.call",
        "method": method,
        "code": code,
        "duration_ms": round((time.perf_counter() - started) * 1000, 3),
        "key": admitted.principal.name if admitted and admitted.principal.authenticated else None,
        "request_id": admitted.request_id if admitted else None,
    }
    log.info(json.dumps(line, separators=(",", ":")))


def _wrap(handler: Handler, guard: _Guard) -> Handler:
    """The same method, run through ``guard``. Partials of the guard's methods keep their kind
    (coroutine or async generator function), which is how grpc.aio tells how to drive them."""
    options = {
        "request_deserializer": handler.request_deserializer,
        "response_serializer": handler.response_serializer,
    }
    if handler.unary_unary is not None:
        return grpc.unary_unary_rpc_method_handler(partial(guard.unary, handler.unary_unary), **options)
    if handler.unary_stream is not None:
        return grpc.unary_stream_rpc_method_handler(partial(guard.stream, handler.unary_stream), **options)
    if handler.stream_stream is not None:
        return grpc.stream_stream_rpc_method_handler(partial(guard.stream, handler.stream_stream), **options)
    return grpc.stream_unary_rpc_method_handler(partial(guard.unary, handler.stream_unary), **options)
