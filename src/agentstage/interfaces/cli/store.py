"""``agent store``: encryption at rest — make a key, see where the store stands, rotate keys.

Keys live outside the store (``store.encryption_key`` names an environment variable or a file);
the store keeps only their ids. Rotation is logged in the audit log as made by the local user."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Annotated, Any

import typer

from agentstage.interfaces.cli.common import Exit, open_services, run_command

if TYPE_CHECKING:
    from agentstage.runtime.store_keys import KeyReport

app = typer.Typer(
    help="Encryption at rest: generate a key, show the store's keys, re-encrypt with a new key.",
    no_args_is_help=True,
)


@app.command("generate-key")
def generate_key() -> None:
    """Print a new random key (32 bytes, base64).

    Keep it in a secret store or a file only you can read, and point store.encryption_key at it:
    "env:NAME" or "file:/path". Without the key the encrypted data cannot be read."""
    from agentstage.runtime.store_keys import StoreKeyService

    print(StoreKeyService.new_key())
    typer.secho(
        "store it where store.encryption_key can read it (an environment variable or a file); "
        "without it the encrypted data cannot be read",
        err=True,
        dim=True,
    )


@app.command("status")
def status(as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False) -> None:
    """Show the keys: configured, needed by the stored data, and what is left to re-encrypt.

    Says whether encryption is on and with which key, which older keys can still decrypt, which
    key ids the stored data was sealed with, and how many rows per table still hold values not
    sealed with the current key (run `agent store rotate-key` for those)."""

    async def fetch() -> KeyReport:
        async with open_services() as services:
            return await services.store_keys.report()

    report = run_command(fetch)
    if as_json:
        print(json.dumps(_report_dict(report)))
        return
    for line in _report_lines(report):
        print(line)


def _report_dict(report: KeyReport) -> dict[str, Any]:
    return {
        "encryption": "on" if report.current else "off",
        "current_key": report.current,
        "configured_keys": report.usable,
        "keys_in_use": report.listed,
        "rows_to_reencrypt": report.pending,
    }


def _report_lines(report: KeyReport) -> list[str]:
    older = [kid for kid in report.usable if kid != report.current]
    lines = [
        f"encryption at rest: on (AES-256-GCM), current key {report.current}"
        if report.current
        else "encryption at rest: off (store.encryption_key is not set)",
        f"older keys that can still decrypt: {', '.join(older) or 'none'}",
        f"keys the stored data may need: {', '.join(report.listed) or 'none'}",
    ]
    waiting = {table: rows for table, rows in report.pending.items() if rows}
    if waiting:
        what = "not sealed with the current key" if report.current else "still encrypted"
        counts = ", ".join(f"{table} {rows:,}" for table, rows in waiting.items())
        lines.append(f"rows with values {what}: {counts} — run `agent store rotate-key`")
    else:
        lines.append(
            "every stored value is "
            + (f"sealed with key {report.current}" if report.current else "in the clear")
        )
    return lines


@app.command("rotate-key")
def rotate_key() -> None:
    """Re-encrypt every stored value with the current key (store.encryption_key).

    To rotate: put the new key in store.encryption_key and the old one in store.decryption_keys,
    restart the servers (new data is sealed with the new key at once), then run this. It shows
    its progress, commits page by page and is safe to interrupt: run it again to finish. When it
    is done, the old key is no longer needed and can leave store.decryption_keys. With no
    store.encryption_key but old keys in store.decryption_keys, it decrypts the store instead."""
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    done = 0

    async def rotate() -> Any:
        nonlocal done
        async with open_services() as services:
            keys = services.store_keys
            report = await keys.report()
            if report.current is None and not report.usable:
                from agentstage.errors import ConfigError

                raise ConfigError(
                    "encryption is not configured: set store.encryption_key ('env:NAME' or 'file:/path') "
                    "to the key to encrypt with (`agent store generate-key` makes one)",
                    code="encryption_key_missing",
                )
            total = sum(report.pending.values())
            columns = (
                TextColumn("{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                TimeElapsedColumn(),
            )
            with Progress(*columns, console=Console(stderr=True), transient=True) as progress:
                task = progress.add_task("re-encrypting rows", total=total or None)

                def advance(table: str, rows: int) -> None:
                    nonlocal done
                    done += rows
                    progress.update(task, advance=rows, description=f"re-encrypting {table}")

                result = await keys.rotate(advance)
            details = {"key": report.current, "rows": result.rows, "retired": result.retired}
            await services.audit.record(
                "store.rotate_key", f"re-encrypt store with key {report.current}", details
            )
            return report, result

    try:
        report, result = run_command(rotate)
    except typer.Exit as stop:
        if stop.exit_code == Exit.CANCELLED:
            typer.secho(
                f"{done:,} rows were re-encrypted and kept; run `agent store rotate-key` again to finish",
                err=True,
                fg=typer.colors.YELLOW,
            )
        raise
    target = f"key {report.current}" if report.current else "no key (the store is now in the clear)"
    print(f"re-encrypted {result.rows:,} rows with {target}")
    if result.retired:
        print(f"no longer needed: key {', '.join(result.retired)} (it can leave store.decryption_keys)")
    if not result.checkpointed:
        typer.secho(
            "another process holds the database open: replaced values may stay in its write-ahead log "
            "until the last process closes the database",
            err=True,
            dim=True,
        )
