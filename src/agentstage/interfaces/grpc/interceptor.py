"""The one server interceptor: authenticate with the guard every door shares, check the method's
permission in the one table, apply the rate limits, then run the method with our errors mapped to
statuses, changes and denials audited, and one JSON log line per call.

Health and reflection pass through untouched. A refused call is refused before the method runs.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import re
import time
import uuid
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable, Iterator
from contextvars import ContextVar
from dataclasses import dataclass
from functools import partial
from typing import Any, TypeAlias

import grpc

from agentstage.access.guard import Guard
from agentstage.errors import AgentstageError, ForbiddenError, TooManyRequestsError, UnauthorizedError
from agentstage.interfaces.grpc.auth import READS, TENANT_KEY, Caller, credentials, is_open, permission_of
from agentstage.interfaces.grpc.errors import CallFailed, Failure, failure_for, internal
from agentstage.runtime import observe

log = logging.getLogger("agentstage.grpc.access")
_VALID_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")
Context: TypeAlias = "grpc.aio.ServicerContext[Any, Any]"
Handler: TypeAlias = "grpc.RpcMethodHandler[Any, Any]"


@dataclass(frozen=True)
class Call:
    """What a method knows about the call it serves."""

    method: str
    request_id: str
    caller: Caller
    client: str


current_call: ContextVar[Call | None] = ContextVar("agentstage_grpc_call", default=None)


def request_id() -> str | None:
    call = current_call.get()
    return call.request_id if call else None


def caller() -> Caller:
    """The caller of the call being served (set by the interceptor before any method runs)."""
    call = current_call.get()
    assert call is not None, "a gRPC method ran outside the interceptor"
    return call.caller


class GatewayInterceptor(grpc.aio.ServerInterceptor):
    def __init__(self, guard: Guard, telemetry: observe.Telemetry | None = None):
        self.guard = guard
        self.telemetry = telemetry

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[Handler | None]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> Handler | None:
        handler = await continuation(handler_call_details)
        path = handler_call_details.method
        if handler is None or is_open(path):
            return handler
        return _wrap(handler, _Guard(self, path))

    async def admit(self, path: str, context: Context) -> Call | Failure:
        """Authenticate with the shared guard, check the method's permission in the one table,
        count the call against the caller's rate limits. Denials are audited."""
        metadata = {k: v for k, v in context.invocation_metadata() or () if isinstance(v, str)}
        given = metadata.get("x-request-id", "")
        rid = given if _VALID_REQUEST_ID.match(given) else uuid.uuid4().hex
        found = credentials(metadata, context.peer())
        principal = None
        permission = permission_of(path)
        try:
            principal = await self.guard.authenticate(found)
            if permission is None:
                raise ForbiddenError(f"{path} is not in the permission table; it is refused for everyone")
            self.guard.authorize(principal, permission)
            await self.guard.admit(principal, client=found.client)
        except (UnauthorizedError, ForbiddenError, TooManyRequestsError) as error:
            if not isinstance(error, TooManyRequestsError) or error.code == "too_many_failed_authentications":
                await self.guard.record(
                    principal, permission or path, path, allowed=False, client=found.client,
                    user_agent=found.user_agent, request_id=rid, error=error,
                )  # fmt: skip
            return failure_for(error)
        return Call(path, rid, Caller(principal, metadata.get(TENANT_KEY)), found.client or "")

    async def audit_change(self, call: Call) -> None:
        """A call that changed something succeeded: one audit row (durable first when sensitive)."""
        permission = permission_of(call.method) or call.method
        if permission in READS:
            return
        await self.guard.record(
            call.caller.principal, permission, call.method, allowed=True, client=call.client,
            request_id=call.request_id,
        )  # fmt: skip


class _Guard:
    """Runs a method inside its call: admission first, then our errors mapped, one log line."""

    def __init__(self, gateway: GatewayInterceptor, method: str):
        self.gateway = gateway
        self.method = method  # the full path, /package.Service/Method

    @contextlib.contextmanager
    def _observed(self, context: Context, outcome: _Outcome) -> Iterator[None]:
        """A SERVER span continuing the caller's ``traceparent`` (metadata), current while the
        method runs (a run it starts joins the caller's trace), and the call counted by status."""
        telemetry = self.gateway.telemetry
        if telemetry is None:
            yield
            return
        metadata = {k: v for k, v in context.invocation_metadata() or () if isinstance(v, str)}
        service, _, method = self.method.strip("/").partition("/")
        attributes = {"rpc.system": "grpc", "rpc.service": service, "rpc.method": method}
        with (
            observe.through("grpc"),
            telemetry.doors.request("grpc", self.method, metadata, attributes) as scope,
        ):
            try:
                yield
            finally:
                failed = outcome.code not in ("OK", "CANCELLED")
                scope.finish(outcome.code, error=outcome.code if failed else None)

    async def unary(self, behavior: Any, request: Any, context: Context) -> Any:
        started, outcome = time.perf_counter(), _Outcome()
        with self._observed(context, outcome):
            return await self._unary(behavior, request, context, started, outcome)

    async def _unary(
        self, behavior: Any, request: Any, context: Context, started: float, outcome: _Outcome
    ) -> Any:
        call: Call | Failure | None = None
        token = None
        try:
            call = await self.gateway.admit(self.method, context)
            if isinstance(call, Failure):
                await outcome.fail(call, context)
            assert isinstance(call, Call)
            token = current_call.set(call)
            response = await behavior(request, context)
            await self.gateway.audit_change(call)  # before the caller hears it happened
            return response
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
        with self._observed(context, outcome):
            async with contextlib.aclosing(
                self._stream(behavior, request, context, started, outcome)
            ) as items:
                async for item in items:
                    yield item

    async def _stream(
        self, behavior: Any, request: Any, context: Context, started: float, outcome: _Outcome
    ) -> AsyncGenerator[Any, None]:
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
            await self.gateway.audit_change(call)
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
        "principal": admitted.caller.principal.label if admitted else None,
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
