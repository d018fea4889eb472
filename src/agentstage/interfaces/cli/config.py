"""``agent config`` and ``agent profile``: the effective configuration, masked."""

from __future__ import annotations

import json
from typing import Annotated, Any

import typer

from agentstage.interfaces.cli.common import fail, load_settings

config_app = typer.Typer(help="Show the effective configuration.", no_args_is_help=True)
profile_app = typer.Typer(help="Model profiles: which provider chain a run uses.", no_args_is_help=True)


def _settings_or_fail() -> object:
    from agentstage.errors import UserError

    try:
        return load_settings()
    except UserError as error:
        fail(error.message)


@config_app.command("show")
def show(
    section: Annotated[str | None, typer.Argument(help="Only this top-level key (e.g. profiles).")] = None,
) -> None:
    """Print the effective configuration (all layers merged), secrets masked, as JSON."""
    from agentstage.runtime.config_view import masked_config
    from agentstage.settings import Settings

    settings = _settings_or_fail()
    assert isinstance(settings, Settings)
    data = masked_config(settings)
    if section is not None:
        if section not in data:
            fail(f"unknown config section {section!r} (sections: {', '.join(data)})")
        data = data[section]
    print(json.dumps(data, indent=2, ensure_ascii=False))


@config_app.command("path")
def path() -> None:
    """Print where agentstage keeps its data and looks for your config file."""
    from agentstage.settings import Settings, user_config_path

    settings = _settings_or_fail()
    assert isinstance(settings, Settings)
    print(f"home:        {settings.home}")
    print(f"config file: {user_config_path(settings)}")
    print(f"store:       {settings.store_url()}")


@profile_app.command("list")
def list_profiles(
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """List profiles with their provider chain (primary first, then fallbacks)."""
    from rich.console import Console
    from rich.table import Table

    from agentstage.settings import Settings

    settings = _settings_or_fail()
    assert isinstance(settings, Settings)
    rows: list[dict[str, Any]] = []
    for name, profile in settings.profiles.items():
        chain = [f"{e.provider}" + (f"/{e.model}" if e.model else "") for e in profile.chain]
        rows.append(
            {
                "name": name,
                "default": name == settings.default_profile,
                "chain": chain,
                "params": profile.params,
                "description": profile.description,
            }
        )
    if as_json:
        print(json.dumps(rows, indent=2))
        return
    table = Table("profile", "chain", "params", "description")
    for row in rows:
        label = f"{row['name']} (default)" if row["default"] else str(row["name"])
        table.add_row(label, " → ".join(row["chain"]), json.dumps(row["params"]), str(row["description"]))
    Console().print(table)
