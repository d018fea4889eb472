"""``agent tool``: list the tools agents can use, and run one directly."""

from __future__ import annotations

import json
from typing import Annotated, Any

import typer

from agentstage.interfaces.cli.common import Exit, fail, load_settings, run_command

app = typer.Typer(help="List and test tools.", no_args_is_help=True)


def _catalog() -> Any:
    from agentstage.runtime.wiring import tool_catalog

    return tool_catalog(load_settings())


@app.command("list")
def list_tools(
    category: Annotated[str | None, typer.Option(help="Only tools of this category.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON with argument schemas.")] = False,
) -> None:
    """List tools by name:version with their category."""
    from rich.console import Console
    from rich.table import Table

    from agentstage.errors import UserError
    from agentstage.runtime.catalog import describe

    try:
        catalog = _catalog()
    except UserError as error:
        fail(error.message)
    if category is not None and category not in catalog.categories():
        fail(f"unknown category {category!r} (categories: {', '.join(catalog.categories())})")
    tools = [describe(t) for t in catalog.list_tools(category)]
    if as_json:
        print(json.dumps(tools, indent=2))
        return
    table = Table("tool", "category", "description")
    for tool in tools:
        table.add_row(tool["id"], tool["category"], tool["description"].split("\n")[0])
    Console().print(table)


@app.command("test")
def test(
    name: Annotated[str, typer.Argument(help="Tool name, e.g. math.calculate or math.calculate:v1.")],
    input_json: Annotated[
        str, typer.Option("--input", "-i", help='Arguments as a JSON object, e.g. \'{"expression": "5*3"}\'.')
    ] = "{}",
) -> None:
    """Validate arguments against the tool's schema and run it once, printing its output as JSON."""
    try:
        arguments = json.loads(input_json)
    except json.JSONDecodeError as error:
        fail(f"--input is not valid JSON: {error.msg} at position {error.pos}")
    if not isinstance(arguments, dict):
        fail(f"--input must be a JSON object, got {type(arguments).__name__}")

    async def execute() -> Any:
        return await _catalog().execute(name, arguments)

    outcome = run_command(execute)
    if outcome.error is not None:
        fail(f"{outcome.error.code}: {outcome.error.message}", Exit.RUN_FAILED)
    print(json.dumps(outcome.output, indent=2, ensure_ascii=False, default=str))
