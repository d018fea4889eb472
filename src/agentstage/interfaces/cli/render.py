"""Showing a run as it happens: tokens as they come, tools and plan steps as dim lines.

On a terminal the answer is redrawn as Markdown while it streams (Rich ``Live``); when stdout is
piped, tokens are written raw and everything else goes to stderr, so ``agent run … > file``
captures only the answer.
"""

from __future__ import annotations

import json
import sys
from typing import Any

from rich.console import Group, RenderableType
from rich.live import Live
from rich.markdown import Markdown
from rich.spinner import Spinner
from rich.text import Text

from agentstage.core.events import (
    ErrorInfo,
    MessageDelta,
    ModelFellBack,
    ModelResponded,
    ModelRetried,
    PlanCreated,
    RunEvent,
    RunStarted,
    StepFinished,
    ToolCalled,
    ToolResulted,
)
from agentstage.core.model import SKIP_CODES
from agentstage.core.records import RunRecord
from agentstage.interfaces.cli.output import console


def short_json(value: Any, limit: int = 160) -> str:
    text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False, default=str)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def describe_event(event: RunEvent) -> str | None:
    """The dim one-line description of an event, or None for events shown otherwise (or not at all)."""
    match event.payload:
        case RunStarted(mode=mode, mode_reason=reason, profile=profile):
            return f"mode {mode} ({reason}) · profile {profile}"
        case PlanCreated(steps=steps):
            lines = [f"  {s.id}. {s.description}" + (f" [{s.tool}]" if s.tool else "") for s in steps]
            return "plan:\n" + "\n".join(lines)
        case ToolCalled(tool=tool, arguments=arguments):
            return f"→ {tool} {short_json(arguments)}"
        case ToolResulted(tool=tool, error=ErrorInfo(code=code, message=message)):
            return f"✗ {tool} {code}: {message}"
        case ToolResulted(tool=tool, output=output, latency_ms=latency_ms):
            return f"← {tool} {short_json(output)} ({latency_ms:.0f} ms)"
        case ModelRetried(provider=provider, error=error, attempt=attempt, delay=delay):
            return f"↻ {provider} {error.code}; retry {attempt} in {delay:.2f}s"
        case ModelFellBack(from_provider=source, to_provider=target, reason=reason):
            if reason.code in SKIP_CODES:
                return f"⇢ skipping {source}: {reason.message}; using {target}"
            return f"⇢ {source} failed ({reason.code}); falling back to {target}"
        case StepFinished(status="failed", error=ErrorInfo(message=message), step_id=step_id, name=name):
            return f"✗ step {step_id} ({name}): {message}"
    return None


def summary_line(record: RunRecord, model: str | None = None) -> str:
    """Status, run id, the model that answered (``provider/model``, when known), tokens, cost, time."""
    usage = record.usage or {}
    timings = record.timings()
    seconds = (timings["duration_ms"] or 0) / 1000
    parts = [
        record.status.value,
        f"run {record.id}",
        *([model] if model else []),
        f"{usage.get('total_tokens', 0)} tokens ({usage.get('input_tokens', 0)} in, {usage.get('output_tokens', 0)} out)",
        f"${record.cost:.6f}",
        f"{seconds:.2f}s",
    ]
    if record.error_code and record.status.value != "cancelled":
        parts.insert(1, record.error_code)
    return " · ".join(parts)


class RunView:
    """Renders one run's events; ``show_tokens=False`` shows progress only (for ``--no-stream``)."""

    def __init__(self, *, show_tokens: bool = True, rich_answer: bool | None = None):
        self.out = console()
        self.err = console(stderr=True)
        self.show_tokens = show_tokens
        self.rich_answer = sys.stdout.isatty() if rich_answer is None else rich_answer
        self.text = ""
        self.call_id: str | None = None
        self.wrote_raw = False
        self.model: str | None = None  # the provider/model of the last model response
        self._live: Live | None = None
        self._noted: set[str] = set()

    def __enter__(self) -> RunView:
        if self.rich_answer or self.err.is_terminal:
            console = self.out if self.rich_answer else self.err
            self._live = Live(
                self._renderable(), console=console, refresh_per_second=12, transient=not self.rich_answer
            )
            self._live.start()
        return self

    def __exit__(self, *_: object) -> None:
        if self._live is not None:
            self._live.update(self._renderable(final=True))
            self._live.stop()
            self._live = None
        if self.wrote_raw and not self.text.endswith("\n"):
            sys.stdout.write("\n")
            sys.stdout.flush()

    def _renderable(self, final: bool = False) -> RenderableType:
        body: list[RenderableType] = []
        if self.rich_answer and self.text:
            body.append(Markdown(self.text))
        if not final and not self.text:
            body.append(Spinner("dots", text=Text("waiting for the model…", style="dim")))
        return Group(*body)

    def note(self, line: str) -> None:
        if self._live is not None and self.rich_answer:
            self._live.console.print(Text(line, style="dim"))
        else:
            self.err.print(Text(line, style="dim"))

    def handle(self, event: RunEvent) -> None:
        match event.payload:
            case ModelResponded(provider=provider, model=model):
                self.model = f"{provider}/{model}"
            case MessageDelta(call_id=call_id, text=text):
                self._delta(call_id, text)
                return
            case ToolCalled():
                self._close_text()
        line = describe_event(event)
        if line is not None and not (event.type == "model.fallback" and line in self._noted):
            self._noted.add(line)  # a provider skipped on every call of a run is said once
            self.note(line)

    def _delta(self, call_id: str, text: str) -> None:
        if not self.show_tokens:
            return
        if call_id != self.call_id and self.text:
            self._close_text()
        self.call_id = call_id
        self.text += text
        if self.rich_answer and self._live is not None:
            self._live.update(self._renderable())
        else:
            sys.stdout.write(text)
            sys.stdout.flush()
            self.wrote_raw = True

    def _close_text(self) -> None:
        """Text before a tool call was the model thinking aloud: keep it, dimmed, above the answer."""
        if not self.text:
            return
        if self.rich_answer:
            self.note(self.text.strip())
        else:
            sys.stdout.write("\n")
        self.text = ""
        self.call_id = None
        if self._live is not None:
            self._live.update(self._renderable())


def format_result(record: RunRecord, output_format: str) -> str:
    """The run's answer in the requested format, as written to stdout or ``-o FILE``."""
    if output_format == "json":
        return json.dumps(result_body(record), ensure_ascii=False, indent=2)
    if output_format == "markdown":
        lines = [record.output or ""]
        if record.error_code:
            lines.append(f"\n> **{record.status.value}** ({record.error_code}): {record.error_message}")
        lines.append(f"\n---\n*{summary_line(record)}*")
        return "\n".join(lines)
    return record.output or ""


def result_body(record: RunRecord) -> dict[str, Any]:
    """The run's answer in the shape every door returns, plus the conversation it belongs to (what
    ``--conversation`` takes to continue it)."""
    body = record.result()
    if record.conversation_id:
        body["conversation_id"] = record.conversation_id
    return body
