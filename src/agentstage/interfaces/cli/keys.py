"""``agent keys``: API keys for the HTTP API. A key is printed once and stored only hashed.

Every change is written to the audit log as made by the local user."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Any

import typer

from agentstage.interfaces.cli.common import command_group, load_settings, note, open_services, run_command
from agentstage.interfaces.cli.output import JsonFlag, choose_format, print_columns, print_json_lines
from agentstage.interfaces.cli.suggest import complete_formats

if TYPE_CHECKING:
    from agentstage.core.records import ApiKeyRecord
    from agentstage.runtime.keys import KeyService
    from agentstage.runtime.security import AuditTrail

app = command_group("Create, rotate, list and revoke API keys for `agent serve`.")


def _row(record: Any, default_rate: int | None = None) -> dict[str, Any]:
    def when(value: Any) -> str | None:
        return value.isoformat() if value is not None else None

    row = {
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
    if default_rate is not None and record.requests_per_minute is None:
        row["requests_per_minute"] = default_rate  # what the server applies to this key
        row["rate_source"] = "default (http.requests_per_minute)"
    elif default_rate is not None:
        row["rate_source"] = "key"
    return row


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
            return await create_key(
                services.keys,
                services.audit,
                name,
                rate,
                role=role,
                tenant=tenant,
                scopes=scope,
                expires=expires,
            )

    key, record = run_command(make)
    print(key)
    typer.secho(
        f"created key {record.name!r} ({record.prefix}…, role {record.role}, tenant {record.tenant}); "
        "it is shown only this once",
        err=True,
        dim=True,
    )


async def create_key(
    keys: KeyService,
    audit: AuditTrail,
    name: str,
    rate: int | None = None,
    *,
    role: str = "operator",
    tenant: str = "default",
    scopes: list[str] | None = None,
    expires: str | None = None,
) -> tuple[str, ApiKeyRecord]:
    """Create a key and write the audit row for it (made by the local user)."""
    made = await keys.create(name, rate, role=role, tenant=tenant, scopes=scopes, expires=expires)
    await audit.record("keys.manage", f"create key {name}", _row(made[1]))
    return made


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
def list_keys(
    output_format: Annotated[
        str | None,
        typer.Option(
            "--format",
            "-F",
            metavar="FORMAT",
            help="table, or json (one object per line)  [default: table]",
            show_default=False,
            autocompletion=complete_formats("table", "json"),
        ),
    ] = None,
    as_json: JsonFlag = False,
) -> None:
    """List keys: name, prefix, role, tenant, the rate limit each really gets, expiry, last use
    (the keys themselves are not stored)."""

    chosen = choose_format(output_format, as_json, ("table", "json"), "table")
    settings = load_settings(read_only=True)
    default_rate = settings.http.requests_per_minute

    async def fetch() -> list[Any]:
        async with open_services(settings) as services:
            return await services.keys.list_keys()

    rows = []
    for record in run_command(fetch):
        rows.append(_row(record, default_rate))
    if chosen == "json":
        print_json_lines(rows)
        return
    if not rows:
        note("no API keys yet; create one with agent keys create --name NAME")
        return
    table = [
        [
            str(row["name"]),
            f"{row['prefix']}…",
            str(row["role"]),
            str(row["tenant"]),
            f"{row['requests_per_minute']}/min" + ("" if row["rate_source"] == "key" else " (default)"),
            str(row["expires_at"] or "never")[:19].replace("T", " "),
            str(row["last_used_at"] or "never")[:19].replace("T", " "),
            "revoked" if row["revoked"] else "active",
        ]
        for row in rows
    ]
    headers = ("name", "prefix", "role", "tenant", "rate", "expires", "last used", "state")
    print_columns(headers, table)


@app.command("revoke")
def revoke(name: Annotated[str, typer.Argument(help="The key's name.")]) -> None:
    """Revoke a key: every worker refuses it within a second."""

    async def drop() -> None:
        async with open_services() as services:
            await services.keys.revoke(name)
            await services.audit.record("keys.manage", f"revoke key {name}")

    run_command(drop)
    typer.secho(f"revoked key {name!r}", err=True, dim=True)
