"""``agent config`` and ``agent profile``: see and change the configuration without editing JSON."""

from __future__ import annotations

import json
from typing import Annotated, Any

import typer

from agentstage.interfaces.cli.common import command_group, fail, load_settings, note
from agentstage.interfaces.cli.options import json_or_text
from agentstage.interfaces.cli.output import JsonFlag, choose_format, print_columns
from agentstage.interfaces.cli.suggest import complete_formats, complete_profiles

config_app = command_group("See and change the configuration: show, path, set.")
profile_app = command_group("Model profiles: which provider chain a run uses.")

PATHS = ("config", "home", "store")


@config_app.command("show")
def show(
    section: Annotated[
        str | None,
        typer.Argument(
            metavar="SECTION", help="Only this top-level key (e.g. profiles).", show_default=False
        ),
    ] = None,
) -> None:
    """Print the effective configuration (all layers merged) as JSON, secrets masked."""
    from agentstage.runtime.config_view import masked_config

    data = masked_config(load_settings(read_only=True))
    if section is not None:
        if section not in data:
            fail(f"unknown config section {section!r} (sections: {', '.join(data)})")
        data = data[section]
    print(json.dumps(data, indent=2, ensure_ascii=False))


@config_app.command("path")
def path(
    which: Annotated[
        str,
        typer.Argument(
            metavar="WHAT",
            help="config (your config file), home (the data directory) or store (the database URL).",
            autocompletion=complete_formats(*PATHS),
        ),
    ] = "config",
) -> None:
    """Print where your config file is (or the data directory, or the store), for scripts:
    `$EDITOR "$(agent config path)"`."""
    from agentstage.settings import user_config_path

    if which not in PATHS:
        fail(f"unknown path {which!r} (choose one of: {', '.join(PATHS)})")
    settings = load_settings(read_only=True)
    print({"config": user_config_path(settings), "home": settings.home, "store": settings.store_url()}[which])


@config_app.command("set")
def set_value(
    key: Annotated[str, typer.Argument(metavar="KEY", help="A dotted key, e.g. default_mode or http.port.")],
    value: Annotated[
        str,
        typer.Argument(metavar="VALUE", help="Read as JSON when it parses (8080, true, [..]), else as text."),
    ],
) -> None:
    """Set one value in your config file; the whole configuration must stay valid.

    Secrets are never stored: give them as references, e.g. `agent config set
    providers.openai.api_key env:OPENAI_API_KEY`.
    """
    change = _nested(key, json_or_text(value))
    restart = _apply(change)
    shown = value if not isinstance(json_or_text(value), str) else repr(value)
    later = f"; a running agent serve applies {', '.join(restart)} after a restart" if restart else ""
    note(f"set {key} = {shown} in {_config_file()}{later}")


def _config_file() -> str:
    from agentstage.settings import user_config_path

    return str(user_config_path(load_settings(read_only=True)))


def _nested(key: str, value: Any) -> dict[str, Any]:
    parts = key.split(".")
    if not key.strip() or any(not part.strip() for part in parts):
        fail(f"invalid key {key!r}: use dotted names such as http.port")
    change: dict[str, Any] = {parts[-1]: value}
    for part in reversed(parts[:-1]):
        change = {part: change}
    return change


def _apply(change: dict[str, Any]) -> list[str]:
    from agentstage.errors import UserError
    from agentstage.runtime.config_view import apply_changes

    settings = load_settings()
    try:
        _, restart = apply_changes(settings, change)
    except UserError as error:
        fail(error.message)
    except OSError as error:
        fail(f"cannot write the config file: {error.strerror}")
    return restart


@profile_app.command("list")
def list_profiles(
    output_format: Annotated[
        str | None,
        typer.Option(
            "--format",
            "-F",
            metavar="FORMAT",
            help="table or json  [default: table]",
            show_default=False,
            autocompletion=complete_formats("table", "json"),
        ),
    ] = None,
    as_json: JsonFlag = False,
) -> None:
    """List profiles with their provider chain (primary first, then fallbacks)."""
    chosen = choose_format(output_format, as_json, ("table", "json"), "table")
    settings = load_settings(read_only=True)
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
    if chosen == "json":
        print(json.dumps(rows, indent=2))
        return
    table = [
        [
            f"{row['name']} (default)" if row["default"] else str(row["name"]),
            " → ".join(row["chain"]),
            json.dumps(row["params"]),
            str(row["description"]),
        ]
        for row in rows
    ]
    print_columns(("profile", "chain", "params", "description"), table, shrink="description")


@profile_app.command("use")
def use(
    name: Annotated[
        str,
        typer.Argument(
            metavar="PROFILE", help="The profile new runs use by default.", autocompletion=complete_profiles
        ),
    ],
) -> None:
    """Make PROFILE the default for new runs (saved in your config file)."""
    from agentstage.errors import UserError

    try:
        load_settings().profile(name)
    except UserError as error:
        fail(error.message)
    _apply({"default_profile": name})
    note(f"default profile is now {name!r}")
