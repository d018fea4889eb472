"""``agent tool``: list the tools agents can use, and run one directly."""

from __future__ import annotations

import json
from typing import Annotated, Any

import typer

from agentstage.core import strict_json
from agentstage.interfaces.cli.common import Exit, command_group, fail, load_settings, run_command
from agentstage.interfaces.cli.output import JsonFlag, choose_format, print_columns
from agentstage.interfaces.cli.suggest import complete_formats, complete_tools

app = command_group("List and test tools.")


def _catalog(read_only: bool = False) -> Any:
    from agentstage.runtime.wiring import tool_catalog

    return tool_catalog(load_settings(read_only=read_only))


@app.command("list")
def list_tools(
    category: Annotated[
        str | None, typer.Option(metavar="CATEGORY", help="Only tools of this category.", show_default=False)
    ] = None,
    output_format: Annotated[
        str | None,
        typer.Option(
            "--format",
            "-F",
            metavar="FORMAT",
            help="table, or json (with argument schemas)  [default: table]",
            show_default=False,
            autocompletion=complete_formats("table", "json"),
        ),
    ] = None,
    as_json: JsonFlag = False,
) -> None:
    """List tools by name:version with their category."""
    from agentstage.errors import UserError
    from agentstage.runtime.catalog import describe

    chosen = choose_format(output_format, as_json, ("table", "json"), "table")
    try:
        catalog = _catalog(read_only=True)
    except UserError as error:
        fail(error.message)
    if category is not None and category not in catalog.categories():
        fail(f"unknown category {category!r} (categories: {', '.join(catalog.categories())})")
    tools = [describe(t) for t in catalog.list_tools(category)]
    if chosen == "json":
        print(json.dumps(tools, indent=2))
        return
    rows = [[tool["id"], tool["category"], tool["description"].split("\n")[0]] for tool in tools]
    print_columns(("tool", "category", "description"), rows, shrink="description")


@app.command("test")
def test(
    name: Annotated[
        str,
        typer.Argument(
            metavar="TOOL",
            help="Tool name, e.g. math.calculate or math.calculate:v1.",
            autocompletion=complete_tools,
        ),
    ],
    input_json: Annotated[
        str,
        typer.Option(
            "--input",
            "-i",
            metavar="JSON",
            help='Arguments as a JSON object, e.g. \'{"expression": "5*3"}\'.',
        ),
    ] = "{}",
) -> None:
    """Validate arguments against the tool's schema and run it once, printing its output as JSON."""
    try:
        arguments = strict_json.loads(input_json)
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
