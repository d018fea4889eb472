"""Structured logs: one JSON object per line (or one readable line), masked, never blocking a run.

Every line has ``ts``, ``level`` (TRACE, DEBUG, INFO, WARN, ERROR, FATAL), ``logger`` and
``message``; lines about a run add ``run_id``, ``step_id``, ``trace_id``, ``span_id`` and
``correlation_id`` (other lines take the trace and span of the request being served, when there
is one). The whole line goes through the one masker. Lines are handed to a writer thread through
a bounded queue: a slow or blocked stderr drops lines (counted) instead of slowing runs.

:class:`RunLog` is the event sink that writes a run's life as log lines: start and end at INFO,
steps, model calls and tool calls at DEBUG (TRACE for requests), retries, fallbacks and failed
steps or tools at WARN, a failed run at ERROR.
"""

from __future__ import annotations

import atexit
import contextlib
import json
import logging
import logging.handlers
import queue
import sys
import time
from collections import OrderedDict
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime
from typing import IO, Any

from agentstage.core.events import (
    ModelFellBack,
    ModelRequested,
    ModelResponded,
    ModelRetried,
    PlanCreated,
    RunCancelled,
    RunCompleted,
    RunEvent,
    RunFailed,
    RunQueued,
    RunStarted,
    StepFinished,
    StepStarted,
    ToolCalled,
    ToolResulted,
)
from agentstage.observability.masking import redact
from agentstage.observability.tracing import root_span_id

TRACE = 5
FATAL = logging.CRITICAL
LEVELS = {"trace": TRACE, "debug": logging.DEBUG, "info": logging.INFO, "warn": logging.WARNING,
          "error": logging.ERROR, "fatal": FATAL}  # fmt: skip
_NAMES = {TRACE: "TRACE", logging.DEBUG: "DEBUG", logging.INFO: "INFO", logging.WARNING: "WARN",
          logging.ERROR: "ERROR", logging.CRITICAL: "FATAL"}  # fmt: skip
CONTEXT = ("run_id", "step_id", "trace_id", "span_id", "correlation_id")
# The most severe level each event type can be logged at: events below the logger's level cost
# one dictionary look-up.
_HIGHEST = {
    "run.queued": logging.DEBUG, "run.started": logging.INFO, "plan.created": logging.DEBUG,
    "step.started": logging.DEBUG, "step.finished": logging.WARNING, "model.request": TRACE,
    "model.response": logging.DEBUG, "model.retry": logging.WARNING, "model.fallback": logging.WARNING,
    "tool.call": logging.DEBUG, "tool.result": logging.WARNING, "run.completed": logging.INFO,
    "run.failed": logging.ERROR, "run.cancelled": logging.INFO,
}  # fmt: skip
logging.addLevelName(TRACE, "TRACE")


def level_name(level: int) -> str:
    return _NAMES.get(level, logging.getLevelName(level))


def _current_span() -> tuple[str, str] | None:
    """The trace and span of the request being served in this context, if any."""
    from opentelemetry import trace

    context = trace.get_current_span().get_span_context()
    if not context.is_valid:
        return None
    return format(context.trace_id, "032x"), format(context.span_id, "016x")


def record_fields(record: logging.LogRecord) -> dict[str, Any]:
    """The JSON object of one log record (not yet masked)."""
    message = record.getMessage()
    body: dict[str, Any] = {
        "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
        "level": level_name(record.levelno),
        "logger": record.name,
        "message": message,
    }
    if message.startswith("{"):  # a line that is already a JSON object (the HTTP access log)
        with contextlib.suppress(ValueError):
            parsed = json.loads(message)
            if isinstance(parsed, dict):
                body["message"] = str(parsed.pop("event", record.name))
                body |= parsed
    for name in CONTEXT:
        value = getattr(record, name, None)
        if value is not None:
            body[name] = value
    if "trace_id" not in body:
        current = _current_span()
        if current is not None:
            body["trace_id"], body["span_id"] = current
    fields = getattr(record, "fields", None)
    if isinstance(fields, dict):
        body |= fields
    if record.exc_info:
        body["exception"] = logging.Formatter().formatException(record.exc_info)
    return body


class JsonLines(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        return redact(json.dumps(record_fields(record), ensure_ascii=False, default=str))


class ConsoleLines(logging.Formatter):
    """``12:01:02.345 INFO  run started  run_id=… mode=react``: for people at a terminal."""

    def format(self, record: logging.LogRecord) -> str:
        body = record_fields(record)
        stamp = time.strftime("%H:%M:%S", time.localtime(record.created)) + f".{int(record.msecs):03d}"
        rest = " ".join(
            f"{key}={value}" for key, value in body.items() if key not in ("ts", "level", "logger", "message")
        )
        return redact(f"{stamp} {body['level']:<5} {body['message']}" + (f"  {rest}" if rest else ""))


def formatter(kind: str) -> logging.Formatter:
    return ConsoleLines() if kind == "console" else JsonLines()


class BoundedQueueHandler(logging.handlers.QueueHandler):
    """Hands records to the writer thread; when its queue is full the record is dropped, counted."""

    def __init__(self, capacity: int):
        super().__init__(queue.Queue(capacity))
        self.dropped = 0

    def enqueue(self, record: logging.LogRecord) -> None:
        if getattr(record, "trace_id", None) is None:  # the writer thread cannot see this context
            current = _current_span()
            if current is not None:
                record.trace_id, record.span_id = current
        try:
            self.queue.put_nowait(record)
        except queue.Full:
            self.dropped += 1
            from agentstage.observability.metrics import dropped

            dropped("log_lines")

    def prepare(self, record: logging.LogRecord) -> logging.LogRecord:
        return record  # formatting happens on the writer thread


_listener: logging.handlers.QueueListener | None = None


def configure_logging(
    level: str, kind: str = "json", *, stream: IO[str] | None = None, capacity: int = 10_000
) -> None:
    """Send the ``agentstage`` loggers to ``stream`` (stderr) through a writer thread. Calling it
    again replaces the previous set-up (a new level or format)."""
    global _listener
    if _listener is None:
        atexit.register(stop_logging)
    stop_logging()
    target = logging.StreamHandler(stream or sys.stderr)
    target.setFormatter(formatter(kind))
    handler = BoundedQueueHandler(capacity)
    handler.setLevel(LEVELS.get(level, logging.INFO))  # a capture (below) may lower the logger's level
    _listener = logging.handlers.QueueListener(handler.queue, target, respect_handler_level=False)
    _listener.start()
    root = logging.getLogger("agentstage")
    root.handlers[:] = [handler]
    root.setLevel(LEVELS.get(level, logging.INFO))
    root.propagate = False


def stop_logging() -> None:
    """Write what is queued and stop the writer thread (at exit)."""
    global _listener
    if _listener is not None:
        _listener.stop()
        _listener = None


@contextlib.contextmanager
def captured(level: int = TRACE, kind: str = "json") -> Iterator[list[str]]:
    """Collect every ``agentstage`` log line written inside the block (as formatted lines), on
    top of whatever else handles them (``agent debug --save-logs``)."""
    lines: list[str] = []
    line_format = formatter(kind)

    class Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            lines.append(line_format.format(record))

    collector = Collect(level)
    root = logging.getLogger("agentstage")
    previous = root.level
    root.addHandler(collector)
    root.setLevel(min(previous or logging.WARNING, level))
    try:
        yield lines
    finally:
        root.removeHandler(collector)
        root.setLevel(previous)


class RunLog:
    """The event sink that writes each run's life as log lines."""

    def __init__(self, logger: logging.Logger | None = None, max_runs: int = 10_000):
        self.log = logger or logging.getLogger("agentstage.run")
        self.max_runs = max_runs
        self._runs: OrderedDict[str, tuple[str | None, dict[str, str]]] = OrderedDict()  # correlation, steps

    def deliver(self, events: Sequence[RunEvent]) -> None:
        for event in events:
            correlation, steps = self._track(event)
            if not self.log.isEnabledFor(_HIGHEST.get(event.type, 0) or FATAL + 1):
                continue
            level, message, fields = self._describe(event)
            if level is None or not self.log.isEnabledFor(level):
                continue
            context = {
                "run_id": event.run_id,
                "trace_id": event.trace_id,
                "span_id": event.span_id or root_span_id(event.run_id),
                "correlation_id": correlation,
                "step_id": steps.get(event.span_id) if event.span_id else None,
                "fields": {"event": event.type, "seq": event.seq, **fields},
            }
            record = self.log.makeRecord(self.log.name, level, __file__, 0, message, (), None, extra=context)
            record.created = event.ts.timestamp()
            record.msecs = (record.created - int(record.created)) * 1000
            self.log.handle(record)

    def _track(self, event: RunEvent) -> tuple[str | None, dict[str, str]]:
        """The run's correlation id and its steps by span id (for ``step_id`` on every line)."""
        if event.type == "run.queued":
            queued = event.payload
            assert isinstance(queued, RunQueued)
            self._runs[event.run_id] = (queued.correlation_id, {})
            while len(self._runs) > self.max_runs:
                self._runs.popitem(last=False)
        correlation, steps = self._runs.get(event.run_id, (None, {}))
        if event.type == "step.started" and event.span_id:
            started = event.payload
            assert isinstance(started, StepStarted)
            steps[event.span_id] = started.step_id
        if event.terminal:
            self._runs.pop(event.run_id, None)
        return correlation, steps

    @staticmethod
    def _describe(event: RunEvent) -> tuple[int | None, str, dict[str, Any]]:
        payload = event.payload
        match payload:
            case RunQueued():
                return logging.DEBUG, "run queued", {"door": payload.door, "mode": payload.mode,
                                                     "profile": payload.profile}  # fmt: skip
            case RunStarted():
                return logging.INFO, "run started", {"mode": payload.mode, "profile": payload.profile}
            case PlanCreated():
                return logging.DEBUG, "plan created", {"steps": len(payload.steps)}
            case StepStarted():
                return logging.DEBUG, "step started", {"kind": payload.kind, "name": payload.name}
            case StepFinished():
                fields: dict[str, Any] = {
                    "kind": payload.kind,
                    "name": payload.name,
                    "status": payload.status,
                }
                if payload.error is not None:
                    fields |= {"error_code": payload.error.code, "error": payload.error.message}
                    return logging.WARNING, "step failed", fields
                return logging.DEBUG, "step finished", fields
            case ModelRequested():
                return TRACE, "model request", {"provider": payload.provider, "model": payload.model,
                                                "messages": len(payload.messages)}  # fmt: skip
            case ModelResponded():
                return logging.DEBUG, "model response", {
                    "provider": payload.provider, "model": payload.model, "finish_reason": payload.finish_reason,
                    "input_tokens": payload.usage.input_tokens, "output_tokens": payload.usage.output_tokens,
                    "latency_ms": payload.latency_ms,
                }  # fmt: skip
            case ModelRetried():
                return logging.WARNING, "model call retried", {
                    "provider": payload.provider, "attempt": payload.attempt, "error_code": payload.error.code,
                    "error": payload.error.message, "delay_s": payload.delay,
                }  # fmt: skip
            case ModelFellBack():
                return logging.WARNING, "model fell back", {
                    "from_provider": payload.from_provider, "to_provider": payload.to_provider,
                    "error_code": payload.reason.code, "error": payload.reason.message,
                }  # fmt: skip
            case ToolCalled():
                return logging.DEBUG, "tool call", {"tool": payload.tool}
            case ToolResulted():
                if payload.error is not None:
                    return logging.WARNING, "tool failed", {"tool": payload.tool, "error_code": payload.error.code,
                                                            "error": payload.error.message,
                                                            "latency_ms": payload.latency_ms}  # fmt: skip
                return logging.DEBUG, "tool result", {"tool": payload.tool, "latency_ms": payload.latency_ms}
            case RunCompleted():
                return logging.INFO, "run completed", {"usage": payload.usage, "cost": payload.cost}
            case RunFailed():
                return logging.ERROR, "run failed", {"error_code": payload.error.code, "error": payload.error.message,
                                                     "usage": payload.usage}  # fmt: skip
            case RunCancelled():
                return logging.INFO, "run cancelled", {"reason": payload.reason, "usage": payload.usage}
            case _:
                return None, "", {}
