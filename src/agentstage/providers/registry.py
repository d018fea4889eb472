"""Build a provider's model from its configured kind; provider SDKs load only when used."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from agentstage.core.model import Model
from agentstage.errors import ConfigError

PROVIDER_KINDS = ("local", "openai", "anthropic", "scripted")


def _local(name: str, model: str | None, options: dict[str, Any], params: dict[str, Any]) -> Model:
    from agentstage.providers.local import LocalModel

    return LocalModel(
        model_path=options.get("model_path"),
        model_name=model,
        n_ctx=int(options.get("n_ctx", 4096)),
        n_threads=int(options.get("n_threads", 0)),
        params=params,
    )


def _openai(name: str, model: str | None, options: dict[str, Any], params: dict[str, Any]) -> Model:
    from agentstage.providers.openai import OpenAIModel

    return OpenAIModel(
        model or "gpt-4o-mini",
        provider=name,
        base_url=options.get("base_url"),
        api_key=options.get("api_key", "env:OPENAI_API_KEY"),
        params=params,
        timeout=float(options.get("timeout", 60.0)),
    )


def _anthropic(name: str, model: str | None, options: dict[str, Any], params: dict[str, Any]) -> Model:
    from agentstage.providers.anthropic import AnthropicModel

    return AnthropicModel(
        model or "claude-sonnet-4-5",
        provider=name,
        base_url=options.get("base_url"),
        api_key=options.get("api_key", "env:ANTHROPIC_API_KEY"),
        params=params,
        timeout=float(options.get("timeout", 60.0)),
    )


def _scripted(name: str, model: str | None, options: dict[str, Any], params: dict[str, Any]) -> Model:
    from agentstage.providers.scripted import Script, ScriptedModel

    source = options.get("script")
    if source is None:
        raise ConfigError(f"provider {name!r} (scripted) needs a 'script': a file path or an inline script")
    return ScriptedModel(Script.load(source), provider=name, model_name=model)


_BUILDERS: dict[str, Callable[[str, str | None, dict[str, Any], dict[str, Any]], Model]] = {
    "local": _local,
    "openai": _openai,
    "anthropic": _anthropic,
    "scripted": _scripted,
}


def build_model(
    kind: str, name: str, model: str | None, options: dict[str, Any], params: dict[str, Any]
) -> Model:
    builder = _BUILDERS.get(kind)
    if builder is None:
        raise ConfigError(f"provider {name!r} has unknown type {kind!r} (known: {', '.join(PROVIDER_KINDS)})")
    return builder(name, model, options, params)
