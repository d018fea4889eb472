"""``agent trace show RUN_ID``: a run's span tree from the store, with timings and errors in red."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Annotated, Any

import typer

from agentstage.interfaces.cli.common import open_services, run_command

if TYPE_CHECKING:
    from agentstage.core.records import SpanRecord
    from agentstage.runtime.traces import SpanNode

app = typer.Typer(help="Show the traces of recorded runs (kept in the store).", no_args_is_help=True)

# What a line shows of a span, in this order, when present.
KEY_ATTRIBUTES = (
    "gen_ai.request.model",
    "gen_ai.usage.input_tokens",
    "gen_ai.usage.output_tokens",
    "gen_ai.tool.call.id",
    "agentstage.status",
    "agentstage.door",
    "http.response.status_code",
    "error.type",
)
SHORT = {"gen_ai.request.model": "model", "gen_ai.usage.input_tokens": "in", "gen_ai.usage.output_tokens": "out",
         "gen_ai.tool.call.id": "call", "agentstage.status": "status", "agentstage.door": "door",
         "http.response.status_code": "http", "error.type": "error"}  # fmt: skip


def wide_console(*, stderr: bool = False) -> Any:
    """A Rich console for trees and tables: on a terminal, its width; piped, lines are never cut
    or wrapped (``grep`` and ``less -S`` see whole lines)."""
    import sys

    from rich.console import Console

    stream = sys.stderr if stderr else sys.stdout
    if stream.isatty():
        return Console(file=stream, highlight=False)
    return Console(file=stream, highlight=False, soft_wrap=True, width=10_000)


def duration(span: SpanRecord) -> str:
    ms = span.duration_ms
    return f"{ms / 1000:.2f} s" if ms >= 1000 else f"{ms:.1f} ms"


def span_line(span: SpanRecord, all_attributes: bool = False) -> Any:
    from rich.text import Text

    line = Text()
    line.append(span.name, style="bold red" if span.status == "error" else "bold")
    line.append(f"  {duration(span)}", style="cyan")
    keys = sorted(span.attributes) if all_attributes else [k for k in KEY_ATTRIBUTES if k in span.attributes]
    for key in keys:
        style = "red" if key == "error.type" else "dim"
        label = key if all_attributes else SHORT.get(key, key)
        line.append(f"  {label}={_value(span.attributes[key])}", style=style)
    if span.status == "error" and span.status_message:
        line.append(f"  {span.status_message}", style="red")
    return line


def _value(value: Any) -> str:
    text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
    return text if len(text) <= 120 else text[:119] + "…"


def render_tree(roots: list[SpanNode], *, all_attributes: bool = False) -> Any:
    """The span forest as one Rich tree per root (``--trace``/``--attributes``: every attribute
    and span event)."""
    from rich.console import Group
    from rich.text import Text
    from rich.tree import Tree

    def add(branch: Tree, node: SpanNode) -> None:
        child = branch.add(span_line(node.span, all_attributes))
        if all_attributes:
            for event in node.span.events:
                child.add(Text(f"• {event['name']} {_value(event.get('attributes') or {})}", style="yellow"))
        for grandchild in node.children:
            add(child, grandchild)

    trees = []
    for root in roots:
        tree = Tree(span_line(root.span, all_attributes), guide_style="dim")
        if all_attributes:
            for event in root.span.events:
                tree.add(Text(f"• {event['name']} {_value(event.get('attributes') or {})}", style="yellow"))
        for node in root.children:
            add(tree, node)
        trees.append(tree)
    return Group(*trees)


@app.command("show")
def show(
    run_id: Annotated[
        str,
        typer.Argument(
            metavar="RUN",
            help="The run whose trace to show: its id, a unique start of it, or 'last'.",
            show_default=False,
        ),
    ],
    attributes: Annotated[
        bool, typer.Option("--attributes", "-a", help="Show every attribute and span event.")
    ] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print the spans as JSON (one list).")] = False,
) -> None:
    """Print a run's span tree: each span's name, duration and key attributes; errors in red.

    Spans are kept in the store as runs happen (tracing.store), so this works with nothing else
    running. The same spans go to an OTLP collector when one is configured (docs/observability.md).
    """

    async def fetch() -> list[SpanNode]:
        from agentstage.interfaces.cli.runs import resolve_run

        async with open_services() as services:
            return await services.traces.tree((await resolve_run(services.runs, run_id)).id)

    roots = run_command(fetch)
    if as_json:
        rows = [span.to_dict() for root in roots for _, span in root.walk()]
        print(json.dumps(rows, ensure_ascii=False, indent=2))
        return
    console = wide_console()
    if not roots:
        console.print(
            f"run {run_id} has no spans (tracing was off, or it has not started yet)", style="yellow"
        )
        return
    console.print(render_tree(roots, all_attributes=attributes))
