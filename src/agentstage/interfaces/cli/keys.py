"""``agent keys``: API keys for the HTTP API. A key is printed once and stored only hashed."""

from __future__ import annotations

import json
from typing import Annotated, Any

import typer

from agentstage.interfaces.cli.common import open_services, run_command

app = typer.Typer(help="Create, list and revoke API keys for `agent serve`.", no_args_is_help=True)


@app.command("create")
def create(
    name: Annotated[str, typer.Option("--name", "-n", help="A name to recognise the key by.")],
    rate: Annotated[
        int | None, typer.Option("--rate", min=1, help="Requests per minute for this key.")
    ] = None,
) -> None:
    """Create a key and print it once: store it now, it cannot be shown again."""

    async def make() -> tuple[str, Any]:
        async with open_services() as services:
            return await services.keys.create(name, rate)

    key, record = run_command(make)
    print(key)
    typer.secho(
        f"created key {record.name!r} ({record.prefix}…); it is shown only this once", err=True, dim=True
    )


@app.command("list")
def list_keys(as_json: Annotated[bool, typer.Option("--json", help="Print JSON lines.")] = False) -> None:
    """List keys (names and prefixes; the keys themselves are not stored)."""

    async def fetch() -> list[Any]:
        async with open_services() as services:
            return await services.keys.list_keys()

    for record in run_command(fetch):
        row = {
            "name": record.name,
            "prefix": record.prefix,
            "requests_per_minute": record.requests_per_minute,
            "created_at": record.created_at.isoformat(),
            "revoked": record.revoked_at is not None,
        }
        print(json.dumps(row) if as_json else "  ".join(f"{k}={v}" for k, v in row.items()))


@app.command("revoke")
def revoke(name: Annotated[str, typer.Argument(help="The key's name.")]) -> None:
    """Revoke a key: requests with it are refused from now on."""

    async def drop() -> None:
        async with open_services() as services:
            await services.keys.revoke(name)

    run_command(drop)
    typer.secho(f"revoked key {name!r}", err=True, dim=True)
