"""Settings in, a ready RunService out: the only module that names concrete parts.

Doors call :func:`build_service`; they never import a provider, a store or a tool themselves.
"""

from __future__ import annotations

import os
from pathlib import Path

from agentstage.core.model import Model
from agentstage.core.prompts import PromptLibrary
from agentstage.errors import AgentstageError, ConfigError
from agentstage.observability.logging import configure_json_logging
from agentstage.providers.registry import build_model
from agentstage.providers.resilience import BreakerRegistry, ResilientModel
from agentstage.runtime.catalog import ToolCatalog, ToolServerSpec, ToolSource
from agentstage.runtime.service import ModelFactory, RunService
from agentstage.settings import Settings
from agentstage.store.sql import SqlRunStore
from agentstage.tools.registry import builtin_tools


def model_factory(settings: Settings) -> ModelFactory:
    """A function that builds a fresh model chain for one run of a profile."""
    breakers = BreakerRegistry(settings.retry)

    def build(profile_name: str) -> Model:
        profile = settings.profile(profile_name)
        chain = []
        for entry in profile.chain:
            provider = settings.providers[entry.provider]
            params = {**profile.params, **entry.params}
            chain.append(build_model(provider.type, entry.provider, entry.model, provider.options(), params))
        return ResilientModel(chain, settings.retry, breakers)

    return build


def tool_catalog(settings: Settings) -> ToolCatalog:
    database: Path | None = settings.sql_database()
    if database is not None and not database.is_file():
        raise ConfigError(f"tools.sql_database {str(database)!r} does not exist")
    tools = builtin_tools(
        database, sql_max_rows=settings.tools.sql_max_rows, sql_timeout=settings.tools.sql_timeout
    )
    return ToolCatalog(tools, call_timeout=settings.tools.call_timeout, connector=connect_tool_server)


async def connect_tool_server(spec: ToolServerSpec) -> ToolSource:
    from agentstage.tools.mcp import connect

    return await connect(spec)


def build_service(settings: Settings) -> RunService:
    prompts_dir = settings.home / "prompts"
    prompts = PromptLibrary(prompts_dir) if prompts_dir.is_dir() else PromptLibrary()
    return RunService(
        settings,
        SqlRunStore(settings.store_url()),
        model_factory(settings),
        tool_catalog(settings),
        prompts,
    )


async def readiness(settings: Settings, service: RunService) -> dict[str, str]:
    """What ``/health/ready`` reports: the store answers, and the default profile's primary
    provider can be used (its model file exists, its key reference resolves, its script loads)."""
    checks: dict[str, str] = {}
    try:
        await service.store.ping()
        checks["store"] = "ok"
    except Exception as error:  # any failure means not ready; the reason is what matters
        checks["store"] = f"unavailable: {type(error).__name__}: {error}"
    entry = settings.profile(None).chain[0]
    provider = settings.providers[entry.provider]
    checks[f"provider:{entry.provider}"] = _provider_check(provider.type, provider.options())
    return checks


def _provider_check(kind: str, options: dict[str, object]) -> str:
    try:
        if kind == "local":
            from agentstage.providers.local import default_model_path

            path = (
                Path(str(options["model_path"])).expanduser()
                if options.get("model_path")
                else default_model_path()
            )
            if not path.is_file():
                return f"unavailable: model file {str(path)!r} does not exist"
        elif kind in {"openai", "anthropic"}:
            reference = str(options.get("api_key", ""))
            if (
                reference.startswith("env:")
                and not options.get("base_url")
                and not os.environ.get(reference[4:])
            ):
                return f"unavailable: {reference[4:]} is not set"
        elif kind == "scripted":
            from agentstage.providers.scripted import Script

            source = options.get("script")
            Script.load(source if isinstance(source, dict) else str(source))
    except AgentstageError as error:
        return f"unavailable: {error.message}"
    return "ok"


def configure_logging(settings: Settings) -> None:
    """Server processes log JSON lines to stderr at the configured level."""
    configure_json_logging(settings.logging.level)
