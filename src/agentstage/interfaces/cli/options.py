"""The per-run choices shared by ``run``, ``chat`` and ``batch``, and how they become a request.

``-m`` is the orchestration *mode*; ``--model/-M`` is the *model*. Model parameters go with
``-o NAME VALUE`` (repeatable, like ``llm -o``); ``--system/-s`` adds instructions to the system
prompt (sent as the model parameter ``system``, so every door can do the same).
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Annotated, Any

import typer

from agentstage.core import strict_json
from agentstage.interfaces.cli.common import fail
from agentstage.interfaces.cli.suggest import complete_modes, complete_profiles

if TYPE_CHECKING:
    from agentstage.settings import Settings

MODES = ("auto", "chat", "react", "planner")

ModeOption = Annotated[
    str | None,
    typer.Option(
        "--mode",
        "-m",
        metavar="MODE",
        help="Orchestration mode: auto (picks per input), chat, react or planner; "
        "default: the config's default_mode. The model is -M/--model (run, chat, batch).",
        show_default=False,
        autocompletion=complete_modes,
    ),
]
ProfileOption = Annotated[
    str | None,
    typer.Option(
        "--profile",
        "-p",
        metavar="PROFILE",
        help="Model profile: a provider chain with fallbacks (see `agent profile list`).",
        show_default=False,
        autocompletion=complete_profiles,
    ),
]
ModelOption = Annotated[
    str | None,
    typer.Option(
        "--model",
        "-M",
        metavar="MODEL",
        help="Use this model instead of the profile's first one (PROVIDER/MODEL picks the provider "
        "too, e.g. anthropic/claude-haiku-4-5); the profile's fallbacks stay.",
        show_default=False,
    ),
]
SystemOption = Annotated[
    str | None,
    typer.Option(
        "--system",
        "-s",
        metavar="TEXT",
        help="Extra instructions added to the system prompt for this run.",
        show_default=False,
    ),
]
ModelParamsOption = Annotated[
    list[Any] | None,
    typer.Option(
        "--option",
        "-o",
        metavar="NAME VALUE",
        help="A model parameter, repeatable: -o temperature 0.2 -o max_tokens 300 "
        "(temperature, top_p, top_k, max_tokens, seed, stop).",
        show_default=False,
    ),
]
MaxStepsOption = Annotated[
    int | None,
    typer.Option(
        "--max-steps",
        metavar="N",
        min=1,
        max=1000,
        help="Model and tool steps the run may take (default: the profile's limit).",
        show_default=False,
    ),
]

# The model parameters `-o` accepts: the JSON types each may take, and how to say so.
MODEL_PARAMS: dict[str, tuple[tuple[type, ...], str]] = {
    "temperature": ((int, float), "a number"),
    "top_p": ((int, float), "a number"),
    "top_k": ((int,), "a whole number"),
    "max_tokens": ((int,), "a whole number"),
    "seed": ((int,), "a whole number"),
    "stop": ((str, list), "text or a JSON list of texts"),
}


def parse_model_params(pairs: list[Any] | None, system: str | None) -> dict[str, Any]:
    """``-o NAME VALUE`` pairs as model parameters; values are read as JSON when they parse."""
    params: dict[str, Any] = {}
    for name, raw in pairs or []:
        if name not in MODEL_PARAMS:
            fail(f"unknown model option {name!r} (known: {', '.join(MODEL_PARAMS)})")
        value = json_or_text(raw)
        allowed, expected = MODEL_PARAMS[name]
        if isinstance(value, bool) or not isinstance(value, allowed):
            fail(f"model option {name} needs {expected}, got {raw!r}")
        params[name] = value
    if system is not None:
        if not system.strip():
            fail("--system is empty; give the instructions to add")
        params["system"] = system
    return params


def json_or_text(raw: str) -> Any:
    """A command-line value: JSON when it reads as strict JSON (``0.2``, ``true``, ``["a"]``), else
    the text itself (``NaN`` stays the text, not a number no store can keep)."""
    try:
        return strict_json.loads(raw)
    except json.JSONDecodeError:
        return raw


def check_mode(mode: str | None) -> str | None:
    if mode is not None and mode.lower() not in MODES:
        fail(f"unknown mode {mode!r} (choose one of: {', '.join(MODES)})")
    return mode.lower() if mode is not None else None


def model_override(settings: Settings, profile: str | None, model: str | None) -> dict[str, Any]:
    """Settings overrides that make ``profile`` start with ``model`` for this process only.

    The run still names its profile; its snapshot records the chain it really used."""
    from agentstage.errors import UserError

    if model is None:
        return {}
    if not model.strip():
        fail("--model is empty; give a model name (or PROVIDER/MODEL)")
    name = profile or settings.default_profile
    try:
        chosen = settings.profile(name)
    except UserError as error:
        fail(error.message)
    chain = [entry.model_dump() for entry in chosen.chain]
    provider, _, rest = model.partition("/")
    if rest and provider in settings.providers:
        chain[0] = {"provider": provider, "model": rest, "params": {}}
    else:
        chain[0] = {**chain[0], "model": model}
    return {"profiles": {name: {"chain": chain}}}
