"""Structured logs: one JSON object per line (or one readable line), masked, never blocking a run.

Every line has ``ts``, ``level`` (TRACE, DEBUG, INFO, WARN, ERROR, FATAL), ``logger`` and
``message``; lines about a run add ``run_id``, ``step_id``, ``trace_id``, ``span_id`` and
``correlation_id`` (other lines take the trace and span of the request being served, when there
is one). The whole line goes through the one masker. Lines are handed to a writer thread through
a bounded queue: a slow or blocked stderr drops lines (counted) instead of slowing runs. The
writer wakes when lines wait, lets a few more gather (``linger``, 20 ms), then formats and writes
them all with one write and one flush: a busy server wakes it tens of times a second, not once
per line.

:class:`RunLog` is the event sink that writes a run's life as log lines: start and end at INFO,
steps, model calls and tool calls at DEBUG (TRACE for requests), retries, fallbacks and failed
steps or tools at WARN, a failed run at ERROR.
"""

from __future__ import annotations

import atexit
import contextlib
import json
import logging
import sys
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Callable, Iterator, Sequence
from datetime import UTC, datetime
from typing import IO, Any

from agentstage.core.events import (
    RunEvent,
    RunQueued,
    StepFinished,
    StepStarted,
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


# One encoder for every line: ``json.dumps`` with options builds a new one per call, which costs
# more than encoding a log line.
_encode = json.JSONEncoder(ensure_ascii=False, default=str).encode


class JsonLines(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        return redact(_encode(record_fields(record)))


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


class BoundedQueueHandler(logging.Handler):
    """Hands records to the writer thread; when its queue is full the record is dropped, counted.
    Formatting happens on the writer thread."""

    def __init__(self, capacity: int):
        super().__init__()
        self.capacity = capacity
        self.queue: deque[logging.LogRecord] = deque()
        self.waiting = threading.Event()  # set when lines wait for the writer
        self.dropped = 0

    def handle(self, record: logging.LogRecord) -> bool:
        """Filter and queue; no lock: appending to the queue is atomic, and that is all there is."""
        passed = self.filter(record)
        if passed:
            self.emit(record)
        return bool(passed)

    def emit(self, record: logging.LogRecord) -> None:
        if getattr(record, "trace_id", None) is None:  # the writer thread cannot see this context
            current = _current_span()
            if current is not None:
                record.trace_id, record.span_id = current
        if len(self.queue) >= self.capacity:
            self.dropped += 1
            from agentstage.observability.metrics import dropped

            dropped("log_lines")
            return
        self.queue.append(record)
        if not self.waiting.is_set():
            self.waiting.set()


class LineWriter:
    """The writer thread: formats what the handler queued and writes it to ``target``'s stream,
    a batch at a time (after waiting ``linger`` seconds for more lines to join the first)."""

    def __init__(
        self, handler: BoundedQueueHandler, target: logging.StreamHandler[Any], linger: float = 0.02
    ):
        self.handler = handler
        self.target = target
        self.linger = linger
        self._stopping = False
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._stopping = False
        self._thread = threading.Thread(target=self._run, name="agentstage-log-writer", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Write what is queued, then end the thread."""
        thread = self._thread
        if thread is None:
            return
        self._stopping = True
        self.handler.waiting.set()
        thread.join()
        self._thread = None

    def _run(self) -> None:
        waiting = self.handler.waiting
        while True:
            waiting.wait()
            if not self._stopping:
                time.sleep(self.linger)
            waiting.clear()  # before draining: a line queued from now on sets it again
            self._write_queued()
            if self._stopping:
                self._write_queued()
                return

    def _write_queued(self) -> None:
        pending, target = self.handler.queue, self.target
        lines: list[str] = []
        last: logging.LogRecord | None = None
        while pending:
            last = pending.popleft()
            try:
                lines.append(target.format(last))
            except Exception:
                target.handleError(last)
        if not lines or last is None:
            return
        try:
            stream = target.stream
            stream.write("\n".join(lines) + "\n")
            stream.flush()
        except Exception:
            target.handleError(last)


_listener: LineWriter | None = None
_libraries: logging.Handler | None = None  # on the root logger: see _route_library_warnings


class _Forward(logging.Handler):
    """Hands records at ``level`` and above to another handler (its filters, format and thread)."""

    def __init__(self, target: logging.Handler, level: int):
        super().__init__(level)
        self.target = target

    def emit(self, record: logging.LogRecord) -> None:
        self.target.handle(record)


def _route_library_warnings(handler: logging.Handler) -> None:
    """Warnings of the libraries underneath (the database pool, the job queue, Redis) go out as
    our lines, in the same format: left alone, Python prints them as bare text among the JSON
    lines, which a log pipeline then fails to parse."""
    global _libraries
    top = logging.getLogger()
    if _libraries is not None:
        top.removeHandler(_libraries)
    _libraries = _Forward(handler, logging.WARNING)
    top.addHandler(_libraries)


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
    _listener = LineWriter(handler, target)
    _listener.start()
    root = logging.getLogger("agentstage")
    root.handlers[:] = [handler]
    root.setLevel(LEVELS.get(level, logging.INFO))
    root.propagate = False
    _route_library_warnings(handler)


def stop_logging() -> None:
    """Write what is queued and stop the writer thread (at exit)."""
    global _listener, _libraries
    if _libraries is not None:
        logging.getLogger().removeHandler(_libraries)
        _libraries = None
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
        enabled = self.log.isEnabledFor
        for event in events:
            kind = event.type
            if kind in _TRACKED:
                self._track(event)
            highest = _HIGHEST.get(kind)
            if highest is None or not enabled(highest):
                if event.terminal:
                    self._runs.pop(event.run_id, None)
                continue
            level, message, fields = _DESCRIBE[kind](event.payload)
            if enabled(level):
                self._write(event, level, message, fields)
            if event.terminal:
                self._runs.pop(event.run_id, None)

    def _write(self, event: RunEvent, level: int, message: str, fields: dict[str, Any]) -> None:
        correlation, steps = self._runs.get(event.run_id, (None, {}))
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

    def _track(self, event: RunEvent) -> None:
        """The run's correlation id and its steps by span id (for ``step_id`` on every line)."""
        if event.type == "run.queued":
            queued = event.payload
            assert isinstance(queued, RunQueued)
            self._runs[event.run_id] = (queued.correlation_id, {})
            while len(self._runs) > self.max_runs:
                self._runs.popitem(last=False)
        elif event.span_id:  # step.started
            started = event.payload
            assert isinstance(started, StepStarted)
            run = self._runs.get(event.run_id)
            if run is not None:
                run[1][event.span_id] = started.step_id


_TRACKED = frozenset({"run.queued", "step.started"})


def _step_finished(payload: StepFinished) -> tuple[int, str, dict[str, Any]]:
    fields: dict[str, Any] = {"kind": payload.kind, "name": payload.name, "status": payload.status}
    if payload.error is not None:
        fields |= {"error_code": payload.error.code, "error": payload.error.message}
        return logging.WARNING, "step failed", fields
    return logging.DEBUG, "step finished", fields


def _tool_resulted(payload: ToolResulted) -> tuple[int, str, dict[str, Any]]:
    if payload.error is not None:
        return logging.WARNING, "tool failed", {"tool": payload.tool, "error_code": payload.error.code,
                                                "error": payload.error.message, "latency_ms": payload.latency_ms}  # fmt: skip
    return logging.DEBUG, "tool result", {"tool": payload.tool, "latency_ms": payload.latency_ms}


# Each logged event type's line: level, message and fields, from its payload (found by the event's
# type: a ``match`` on payload classes costs an ``isinstance`` per case, for every event).
_DESCRIBE: dict[str, Callable[[Any], tuple[int, str, dict[str, Any]]]] = {
    "run.queued": lambda p: (logging.DEBUG, "run queued", {"door": p.door, "mode": p.mode, "profile": p.profile}),
    "run.started": lambda p: (logging.INFO, "run started", {"mode": p.mode, "profile": p.profile}),
    "plan.created": lambda p: (logging.DEBUG, "plan created", {"steps": len(p.steps)}),
    "step.started": lambda p: (logging.DEBUG, "step started", {"kind": p.kind, "name": p.name}),
    "step.finished": _step_finished,
    "model.request": lambda p: (TRACE, "model request", {"provider": p.provider, "model": p.model,
                                                         "messages": len(p.messages)}),
    "model.response": lambda p: (logging.DEBUG, "model response", {
        "provider": p.provider, "model": p.model, "finish_reason": p.finish_reason,
        "input_tokens": p.usage.input_tokens, "output_tokens": p.usage.output_tokens, "latency_ms": p.latency_ms,
    }),
    "model.retry": lambda p: (logging.WARNING, "model call retried", {
        "provider": p.provider, "attempt": p.attempt, "error_code": p.error.code, "error": p.error.message,
        "delay_s": p.delay,
    }),
    "model.fallback": lambda p: (logging.WARNING, "model fell back", {
        "from_provider": p.from_provider, "to_provider": p.to_provider, "error_code": p.reason.code,
        "error": p.reason.message,
    }),
    "tool.call": lambda p: (logging.DEBUG, "tool call", {"tool": p.tool}),
    "tool.result": _tool_resulted,
    "run.completed": lambda p: (logging.INFO, "run completed", {"usage": p.usage, "cost": p.cost}),
    "run.failed": lambda p: (logging.ERROR, "run failed", {"error_code": p.error.code, "error": p.error.message,
                                                           "usage": p.usage}),
    "run.cancelled": lambda p: (logging.INFO, "run cancelled", {"reason": p.reason, "usage": p.usage}),
}  # fmt: skip
assert set(_DESCRIBE) == set(_HIGHEST), "every event type that can be logged is described"
