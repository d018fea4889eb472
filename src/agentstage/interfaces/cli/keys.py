"""``agent keys``: API keys for the HTTP API. A key is printed once and stored only hashed.

Every change is written to the audit log as made by the local user."""

from __future__ import annotations

import json
from typing import Annotated, Any

import typer

from agentstage.interfaces.cli.common import open_services, run_command

app = typer.Typer(help="Create, rotate, list and revoke API keys for `agent serve`.", no_args_is_help=True)


def _row(record: Any) -> dict[str, Any]:
    def when(value: Any) -> str | None:
        return value.isoformat() if value is not None else None

    return {
        "name": record.name,
        "prefix": record.prefix,
        "role": record.role,
        "tenant": record.tenant,
        "scopes": record.scopes,
        "requests_per_minute": record.requests_per_minute,
        "created_at": when(record.created_at),
        "expires_at": when(record.expires_at),
        "last_used_at": when(record.last_used_at),
        "rotated_at": when(record.rotated_at),
        "revoked": record.revoked_at is not None,
    }


@app.command("create")
def create(
    name: Annotated[str, typer.Option("--name", "-n", help="A name to recognise the key by.")],
    role: Annotated[
        str, typer.Option("--role", help="viewer, operator, admin, or a custom role from security.roles.")
    ] = "operator",
    tenant: Annotated[str, typer.Option("--tenant", help="The tenant whose runs the key sees.")] = "default",
    expires: Annotated[
        str | None, typer.Option("--expires", help="Lifetime (90d, 12h, 2w) or an ISO date; default: never.")
    ] = None,
    rate: Annotated[
        int | None, typer.Option("--rate", min=1, help="Requests per minute for this key.")
    ] = None,
    scope: Annotated[
        list[str] | None,
        typer.Option("--scope", help="Limit the key to these permissions (repeatable), e.g. runs.read."),
    ] = None,
) -> None:
    """Create a key and print it once: store it now, it cannot be shown again."""

    async def make() -> tuple[str, Any]:
        async with open_services() as services:
            made = await services.keys.create(
                name, rate, role=role, tenant=tenant, scopes=scope, expires=expires
            )
            await services.audit.record("keys.manage", f"create key {name}", _row(made[1]))
            return made

    key, record = run_command(make)
    print(key)
    typer.secho(
        f"created key {record.name!r} ({record.prefix}…, role {record.role}, tenant {record.tenant}); "
        "it is shown only this once",
        err=True,
        dim=True,
    )


@app.command("rotate")
def rotate(name: Annotated[str, typer.Argument(help="The key's name.")]) -> None:
    """Give a key a new secret and print it once; the old one stops working within a second."""

    async def turn() -> tuple[str, Any]:
        async with open_services() as services:
            made = await services.keys.rotate(name)
            await services.audit.record("keys.manage", f"rotate key {name}")
            return made

    key, record = run_command(turn)
    print(key)
    typer.secho(
        f"rotated key {record.name!r} ({record.prefix}…); the old secret no longer works", err=True, dim=True
    )


@app.command("list")
def list_keys(as_json: Annotated[bool, typer.Option("--json", help="Print JSON lines.")] = False) -> None:
    """List keys: name, prefix, role, tenant, scopes, rate, expiry, last use (the keys themselves are not stored)."""

    async def fetch() -> list[Any]:
        async with open_services() as services:
            return await services.keys.list_keys()

    for record in run_command(fetch):
        row = _row(record)
        print(json.dumps(row) if as_json else "  ".join(f"{k}={v}" for k, v in row.items()))


@app.command("revoke")
def revoke(name: Annotated[str, typer.Argument(help="The key's name.")]) -> None:
    """Revoke a key: every worker refuses it within a second."""

    async def drop() -> None:
        async with open_services() as services:
            await services.keys.revoke(name)
            await services.audit.record("keys.manage", f"revoke key {name}")

    run_command(drop)
    typer.secho(f"revoked key {name!r}", err=True, dim=True)
