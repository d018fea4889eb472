"""How ``agent snapshot show`` and ``agent snapshot diff`` look on a terminal."""

from __future__ import annotations

import json
from typing import Any

from rich.console import Console
from rich.table import Table
from rich.text import Text

from agentstage.interfaces.cli.trace import wide_console
from agentstage.runtime.snapshot import snapshot_hash

WIDTH = 72
LABEL = 13  # the longest label ("conversation") and a space


def short(value: Any, limit: int = WIDTH) -> str:
    text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False, default=str)
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _line(console: Console, label: str, value: Any, style: str = "") -> None:
    line = Text(f"{label:<{LABEL}}", style="bold")
    line.append(str(value), style=style)
    console.print(line)


def render_snapshot(document: dict[str, Any]) -> None:
    console = wide_console()
    mode = document.get("mode") or {}
    profile = document.get("profile") or {}
    status = document.get("status") or "running"
    title = f"run {document.get('run_id')} · {status} · {mode.get('resolved') or mode.get('requested')}"
    console.print(Text(title, style="bold"))
    if mode.get("reason"):
        _line(console, "mode", f"{mode.get('requested')} → {mode.get('resolved')} ({mode.get('reason')})")
    _line(console, "created", document.get("created_at"))
    _line(console, "finished", document.get("finished_at") or "—")
    if document.get("replay_of"):
        _line(console, "replay of", document["replay_of"])
    if document.get("conversation_id"):
        _line(
            console,
            "conversation",
            f"{document['conversation_id']} ({document.get('history_messages', 0)} earlier messages)",
        )
    _line(console, "input", short(document.get("input"), 200))
    _line(console, "output", short(document.get("output") or "—", 200))
    console.print()
    _render_profile(console, profile)
    _render_tools(console, document.get("tools") or [])
    prompt = document.get("prompt") or {}
    _line(console, "prompt", f"{prompt.get('template')} (hash {prompt.get('hash')})")
    for name, digest in (prompt.get("files") or {}).items():
        if name != prompt.get("template"):
            console.print(f"{'':<{LABEL}}{name} (hash {digest})")
    _line(console, "options", short(document.get("options") or {}))
    environment = document.get("environment") or {}
    _line(console, "environment", " ".join(f"{k}={v}" for k, v in environment.items()) or "—")
    _render_code(console, document)
    _render_metrics(console, document.get("metrics"))
    _line(console, "snapshot", f"sha256 {snapshot_hash(document)}", style="dim")


def _render_profile(console: Console, profile: dict[str, Any]) -> None:
    _line(console, "profile", profile.get("name"))
    table = Table(box=None, pad_edge=False)
    for column in ("#", "provider", "type", "model", "parameters", "options"):
        table.add_column(column, no_wrap=True, overflow="ellipsis")
    for index, entry in enumerate(profile.get("chain") or [], start=1):
        table.add_row(
            str(index),
            str(entry.get("provider")),
            str(entry.get("type")),
            str(entry.get("model")),
            short(entry.get("params") or {}, 40),
            short(entry.get("options") or {}, 40),
        )
    console.print(table)
    limits = profile.get("limits") or {}
    _line(console, "limits", " · ".join(f"{k} {v}" for k, v in limits.items()))


def _render_tools(console: Console, tools: list[dict[str, Any]]) -> None:
    if not tools:
        _line(console, "tools", "none")
        return
    for index, tool in enumerate(tools):
        _line(console, "tools" if index == 0 else "", f"{tool.get('id')} (schema {tool.get('schema_hash')})")


def _render_code(console: Console, document: dict[str, Any]) -> None:
    code = document.get("code") or {}
    commit = code.get("git_commit")
    text = f"agentstage {code.get('agentstage')}"
    if commit:
        text += f" · git {commit[:12]}" + (" (with uncommitted changes)" if code.get("git_dirty") else "")
    _line(console, "code", text)
    tree = document.get("working_tree")
    if tree:
        dirty = " (with uncommitted changes)" if tree.get("git_dirty") else ""
        _line(console, "working dir", f"git {str(tree.get('git_commit'))[:12]}{dirty}")


def _render_metrics(console: Console, metrics: dict[str, Any] | None) -> None:
    if not metrics:
        _line(console, "metrics", "— (the run has not ended)")
        return
    usage = metrics.get("usage") or {}
    parts = [
        f"{usage.get('total_tokens', 0)} tokens ({usage.get('input_tokens', 0)} in, {usage.get('output_tokens', 0)} out)",
        f"${metrics.get('cost', 0.0):.6f}",
        f"{metrics.get('latency_ms', 0) or 0:.0f} ms",
        f"{metrics.get('model_calls', 0)} model calls",
        f"{metrics.get('tool_calls', 0)} tool calls",
        f"{metrics.get('steps', 0)} steps",
    ]
    _line(console, "metrics", " · ".join(parts))


def render_diff(result: dict[str, Any]) -> None:
    console = wide_console()
    console.print(Text(f"A = run {result['a']}\nB = run {result['b']}", style="bold"))
    changes = result.get("config") or []
    console.print()
    if changes:
        console.print(Text(f"Configuration: {len(changes)} field(s) differ", style="bold"))
        table = Table(box=None, pad_edge=False)
        table.add_column("field", no_wrap=True)
        table.add_column("A", overflow="fold")
        table.add_column("B", overflow="fold")
        for change in changes:
            left = "(absent)" if change["change"] == "added" else short(change["a"], 40)
            right = "(absent)" if change["change"] == "removed" else short(change["b"], 40)
            table.add_row(change["field"], left, right)
        console.print(table)
    else:
        console.print(Text("Configuration: identical", style="bold"))
    console.print()
    _render_divergence(console, result.get("first_divergence"))
    console.print()
    _render_outcomes(console, result["outcome"]["a"], result["outcome"]["b"])


def _render_divergence(console: Console, divergence: dict[str, Any] | None) -> None:
    if divergence is None:
        console.print(Text("Events: the same behaviour from start to end", style="bold"))
        return
    console.print(Text(f"First divergence: {divergence['where']}", style="bold"))
    if divergence.get("detail"):
        console.print(f"  ({divergence['detail']})")
    for side in ("a", "b"):
        event = divergence.get(side)
        what = (
            "had ended" if event is None else f"{event['summary']}  [event {event['seq']}, {event['type']}]"
        )
        console.print(f"  {side.upper()}: {what}")


ROWS = (
    ("status", "status"),
    ("output", "output"),
    ("tokens in", "input_tokens"),
    ("tokens out", "output_tokens"),
    ("tokens", "total_tokens"),
    ("cost", "cost"),
    ("latency", "latency_ms"),
    ("model calls", "model_calls"),
    ("tool calls", "tool_calls"),
    ("steps", "steps"),
    ("events", "events"),
)


def _render_outcomes(console: Console, a: dict[str, Any], b: dict[str, Any]) -> None:
    console.print(Text("Outcome", style="bold"))
    table = Table("", "A", "B", box=None, pad_edge=False)
    for label, key in ROWS:
        table.add_row(label, _cell(key, a.get(key)), _cell(key, b.get(key)))
    if a.get("error") or b.get("error"):
        table.add_row("error", _cell("error", a.get("error")), _cell("error", b.get("error")))
    console.print(table)


def _cell(key: str, value: Any) -> str:
    if value is None:
        return "—"
    if key == "cost":
        return f"${value:.6f}"
    if key == "latency_ms":
        return f"{value:.0f} ms"
    if key == "error":
        return f"{value.get('code')}: {short(value.get('message'), 40)}"
    return short(value, 40)
