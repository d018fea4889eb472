"""Resilience by wrapping: timeouts, retries with backoff, circuit breakers and fallback chains.

:class:`ResilientModel` is itself a :class:`~agentstage.core.model.Model`. It tries each model of
a profile's chain in turn; within one model it retries retryable errors (timeouts, rate limits,
5xx, connection errors) with exponential backoff and jitter, honouring ``Retry-After``. Every retry
and fallback is yielded as a notice, which the orchestrator records as an event. A call is only
retried while nothing has been streamed yet, so the user never sees text twice.

A chain entry that cannot be used at all in this process (its key is not set) is an
:class:`UnavailableModel`: never called, it is skipped with a fallback notice naming the reason.

The run's ``system`` parameter (extra instructions from the caller) is applied here, once for every
provider: it is added to the request's system message and never sent as a parameter.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel, Field

from agentstage.core.messages import Message
from agentstage.core.model import (
    SKIPPED_CODE,
    FallbackNotice,
    Model,
    ModelChunk,
    ModelRequest,
    RetryNotice,
    TextDelta,
    ToolCallChunk,
)
from agentstage.errors import ModelError


class RetryPolicy(BaseModel):
    max_attempts: int = Field(default=3, ge=1, le=20)
    base_delay: float = Field(default=0.5, ge=0)
    max_delay: float = Field(default=20.0, ge=0)
    max_retry_after: float = Field(default=60.0, ge=0)
    timeout: float = Field(default=60.0, gt=0, description="Seconds a call may go without producing output.")
    breaker_threshold: int = Field(default=5, ge=1)
    breaker_reset: float = Field(default=30.0, ge=0)

    def delay(self, attempt: int, retry_after: float | None) -> float:
        if retry_after is not None:
            return min(retry_after, self.max_retry_after)
        backoff = min(self.max_delay, self.base_delay * 2.0 ** (attempt - 1))
        return float(backoff * (0.5 + random.random() / 2))


@dataclass
class CircuitBreaker:
    """Closed → open after ``threshold`` consecutive failures → half-open after ``reset`` seconds."""

    threshold: int
    reset: float
    failures: int = 0
    opened_at: float | None = None
    _trial_running: bool = field(default=False)

    def allow(self) -> bool:
        if self.opened_at is None:
            return True
        if time.monotonic() - self.opened_at < self.reset or self._trial_running:
            return False
        self._trial_running = True
        return True

    def record(self, success: bool) -> None:
        self._trial_running = False
        if success:
            self.failures, self.opened_at = 0, None
            return
        self.failures += 1
        if self.failures >= self.threshold:
            self.opened_at = time.monotonic()


class BreakerRegistry:
    """One breaker per provider endpoint, shared by every run of one service (so one failing
    endpoint is skipped quickly by all of them)."""

    def __init__(self, policy: RetryPolicy):
        self.policy = policy
        self._breakers: dict[str, CircuitBreaker] = {}

    def for_endpoint(self, endpoint: str) -> CircuitBreaker:
        breaker = self._breakers.get(endpoint)
        if breaker is None:
            breaker = self._breakers[endpoint] = CircuitBreaker(
                self.policy.breaker_threshold, self.policy.breaker_reset
            )
        return breaker


def endpoint_of(model: Model) -> str:
    return f"{model.provider}|{getattr(model, 'base_url', None) or ''}"


class _Attempt:
    """Streams one call to one model with an idle timeout, remembering whether output was sent.

    The timeout bounds each wait for the model's next chunk. One timer serves the whole call: it
    fires ``timeout`` seconds after the current wait began, or is moved to then if a chunk came
    meanwhile, so a chunk costs a clock read instead of a timer of its own."""

    def __init__(self, model: Model, timeout: float):
        self.model = model
        self.timeout = timeout
        self.streamed = False
        self._waiting_since: float | None = None  # when the current wait for a chunk began
        self._expired = False
        self._timer: asyncio.TimerHandle | None = None

    async def chunks(self, request: ModelRequest) -> AsyncIterator[ModelChunk]:
        loop = asyncio.get_running_loop()
        task = asyncio.current_task()
        assert task is not None
        iterator = aiter(self.model.stream(request))
        self._timer = loop.call_at(loop.time() + self.timeout, self._check, loop, task)
        try:
            while True:
                self._waiting_since = loop.time()
                cancelling = task.cancelling()
                try:
                    chunk = await anext(iterator)
                except StopAsyncIteration:
                    return
                except asyncio.CancelledError:
                    if self._expired and task.uncancel() <= cancelling:
                        raise ModelError(
                            f"{self.model.provider} produced nothing for {self.timeout:g}s (timeout)",
                            code="model_timeout",
                            retryable=True,
                            provider=self.model.provider,
                        ) from None
                    raise
                finally:
                    self._waiting_since = None
                if isinstance(chunk, TextDelta | ToolCallChunk):
                    self.streamed = True
                yield chunk
        finally:
            self._timer.cancel()
            close = getattr(iterator, "aclose", None)
            if close is not None:
                await close()

    def _check(self, loop: asyncio.AbstractEventLoop, task: asyncio.Task[Any]) -> None:
        """The timer: expire the wait in progress if it is ``timeout`` old, else look again when
        it would be. Runs while the task is suspended, so a cancel lands in the wait itself."""
        since = self._waiting_since
        now = loop.time()
        if since is not None and now - since >= self.timeout:
            self._expired = True
            task.cancel()
            return
        self._timer = loop.call_at(
            (since if since is not None else now) + self.timeout, self._check, loop, task
        )


class UnavailableModel:
    """A chain entry that cannot be used in this process (``reason`` says why, e.g. its key is not
    set). It is never called: the chain skips it and says so with a fallback notice."""

    native_tools = True

    def __init__(self, provider: str, model_name: str, reason: str, code: str = SKIPPED_CODE):
        self.provider = provider
        self.model_name = model_name
        self.reason = reason
        self.code = code

    async def stream(self, request: ModelRequest) -> AsyncIterator[ModelChunk]:
        raise ModelError(f"{self.provider}: {self.reason}", code=self.code, provider=self.provider)
        yield  # pragma: no cover  (makes this an async generator, like every model)


def with_system_instructions(request: ModelRequest) -> ModelRequest:
    """The request with the caller's ``system`` parameter moved into its system message."""
    extra = request.params.get("system")
    if "system" not in request.params:
        return request
    params = {k: v for k, v in request.params.items() if k != "system"}
    messages = list(request.messages)
    if isinstance(extra, str) and extra.strip():
        first = messages[0] if messages else None
        if first is not None and first.role == "system":
            messages[0] = first.model_copy(update={"content": f"{first.content}\n\n{extra.strip()}"})
        else:
            messages.insert(0, Message.system(extra.strip()))
    return request.model_copy(update={"messages": messages, "params": params})


class ResilientModel:
    def __init__(
        self,
        chain: Sequence[Model],
        policy: RetryPolicy | None = None,
        breakers: BreakerRegistry | None = None,
    ):
        usable = [model for model in chain if not isinstance(model, UnavailableModel)]
        if not usable:
            raise ValueError("a model chain needs at least one usable model")
        self.chain = list(chain)
        self.policy = policy or RetryPolicy()
        self.breakers = breakers or BreakerRegistry(self.policy)
        self.provider = usable[0].provider
        self.model_name = usable[0].model_name
        self.native_tools = all(model.native_tools for model in usable)
        # The primary's window and tokenizer, for orchestrators that fit the prompt to it.
        self.context_window: int | None = getattr(usable[0], "context_window", None)
        self.count_tokens = getattr(usable[0], "count_tokens", None)

    async def stream(self, request: ModelRequest) -> AsyncIterator[ModelChunk]:
        request = with_system_instructions(request)
        pending: list[tuple[str, ModelError]] = []  # providers left behind, announced at the next one
        failure: ModelError | None = None
        for model in self.chain:
            if isinstance(model, UnavailableModel):
                skipped = ModelError(model.reason, code=model.code, provider=model.provider)
                pending.append((model.provider, skipped))
                continue
            for from_provider, error in pending:
                yield FallbackNotice(
                    from_provider=from_provider,
                    to_provider=model.provider,
                    code=error.code,
                    message=error.message,
                )
            pending = []
            try:
                async for chunk in self._with_retries(model, request):
                    yield chunk
                return
            except ModelError as error:
                if error.streamed:
                    raise
                failure = error
                pending.append((model.provider, error))
        assert failure is not None
        tried = [m.provider for m in self.chain if not isinstance(m, UnavailableModel)]
        passed = [f"{m.provider} ({m.reason})" for m in self.chain if isinstance(m, UnavailableModel)]
        if len(tried) > 1 or passed:
            also = f"; skipped {', '.join(passed)}" if passed else ""
            failure.message = (
                f"every provider of the chain failed ({', '.join(tried)}{also}); last: {failure.message}"
            )
        raise failure

    async def _with_retries(self, model: Model, request: ModelRequest) -> AsyncIterator[ModelChunk]:
        breaker = self.breakers.for_endpoint(endpoint_of(model))
        for attempt_number in range(1, self.policy.max_attempts + 1):
            if not breaker.allow():
                raise ModelError(
                    f"{model.provider} is failing repeatedly; its circuit breaker is open for up to "
                    f"{self.policy.breaker_reset:g}s",
                    code="circuit_open",
                    provider=model.provider,
                )
            attempt = _Attempt(model, self.policy.timeout)
            try:
                async for chunk in attempt.chunks(request):
                    yield chunk
            except ModelError as error:
                breaker.record(success=False)
                if attempt.streamed:
                    error.streamed = True
                    raise
                if not error.retryable or attempt_number == self.policy.max_attempts:
                    raise
                delay = self.policy.delay(attempt_number, error.retry_after)
                yield RetryNotice(
                    provider=model.provider,
                    attempt=attempt_number,
                    code=error.code,
                    message=error.message,
                    delay=round(delay, 3),
                )
                await asyncio.sleep(delay)
                continue
            breaker.record(success=True)
            return
