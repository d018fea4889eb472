"""Settings in, a ready RunService out: the only module that names concrete parts.

Doors call :func:`build_service`; they never import a provider, a store or a tool themselves.
"""

from __future__ import annotations

from pathlib import Path

from agentstage.core.model import Model
from agentstage.core.prompts import PromptLibrary
from agentstage.errors import ConfigError
from agentstage.providers.registry import build_model
from agentstage.providers.resilience import BreakerRegistry, ResilientModel
from agentstage.runtime.catalog import ToolCatalog
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
    return ToolCatalog(tools, call_timeout=settings.tools.call_timeout)


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
