"""Settings in, ready services out: the only module that names concrete parts.

Doors call :func:`build_services` (or :func:`build_service` for the run service alone); they never
import a provider, a store or a tool themselves, and never assemble services from each other's
parts.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from agentstage.access.config import McpPolicy
from agentstage.access.guard import Guard
from agentstage.access.secrets import resolve_reference
from agentstage.core.events import RunEvent
from agentstage.core.model import Model
from agentstage.core.prompts import PromptLibrary
from agentstage.core.tools import Tool
from agentstage.errors import ConfigError, ForbiddenError, StoreError
from agentstage.observability.logging import configure_json_logging
from agentstage.providers.registry import build_model, check_provider
from agentstage.providers.replay import ReplayModel
from agentstage.providers.resilience import BreakerRegistry, ResilientModel
from agentstage.runtime.batches import BatchService
from agentstage.runtime.catalog import ToolCatalog, ToolServerSpec, ToolSource
from agentstage.runtime.config_view import check_sql_database
from agentstage.runtime.conversations import ConversationService
from agentstage.runtime.keys import KeyService
from agentstage.runtime.security import AuditTrail, build_guard
from agentstage.runtime.service import ModelFactory, RunService
from agentstage.runtime.store_keys import StoreKeyService
from agentstage.settings import Settings
from agentstage.store.crypto import Keyring, parse_key
from agentstage.store.sql import SqlRunStore
from agentstage.tools.plugins import plugin_tools
from agentstage.tools.registry import builtin_tools
from agentstage.tools.replay import replay_tools


@dataclass(frozen=True)
class Services:
    """Everything a door needs, built once from one configuration."""

    runs: RunService
    conversations: ConversationService
    batches: BatchService
    keys: KeyService
    guard: Guard
    audit: AuditTrail
    store_keys: StoreKeyService


class ModelChains:
    """Builds a fresh model chain for one run of a profile. Its circuit breakers (one per endpoint)
    are shared by all runs, and survive a configuration change (see :func:`rebuild_models`)."""

    def __init__(self, settings: Settings, breakers: BreakerRegistry | None = None):
        self.settings = settings
        self.breakers = breakers or BreakerRegistry(settings.retry)
        self.breakers.policy = settings.retry

    def __call__(self, profile_name: str) -> Model:
        settings = self.settings
        profile = settings.profile(profile_name)
        chain = []
        for entry in profile.chain:
            provider = settings.providers[entry.provider]
            params = {**profile.params, **entry.params}
            chain.append(build_model(provider.type, entry.provider, entry.model, provider.options(), params))
        return ResilientModel(chain, settings.retry, self.breakers)


def model_factory(settings: Settings) -> ModelFactory:
    return ModelChains(settings)


class ReplayBuilders:
    """The concrete replay parts: the ``replay`` provider, the replaying tools, real model chains."""

    def model(self, events: Sequence[RunEvent], *, model_name: str, native_tools: bool) -> Model:
        return ReplayModel.from_events(events, model_name=model_name, native_tools=native_tools)

    def tools(self, events: Sequence[RunEvent], specs: Sequence[Mapping[str, Any]]) -> list[Tool]:
        return replay_tools(events, specs)

    def models_for(self, settings: Settings, current: ModelFactory) -> ModelFactory:
        return ModelChains(settings, current.breakers if isinstance(current, ModelChains) else None)


def tool_catalog(settings: Settings) -> ToolCatalog:
    database: Path | None = settings.sql_database()
    if database is not None and not database.is_file():
        raise ConfigError(f"tools.sql_database {str(database)!r} does not exist")
    try:
        check_sql_database(settings)
    except ForbiddenError as error:
        raise ConfigError(error.message, code=error.code) from None
    tools = builtin_tools(
        database,
        sql_max_rows=settings.tools.sql_max_rows,
        sql_timeout=settings.tools.sql_timeout,
        sql_max_bytes=settings.tools.sql_max_bytes,
        sql_concurrency=settings.tools.sql_concurrency,
    )
    policy = settings.security.mcp

    async def connector(spec: ToolServerSpec) -> ToolSource:
        return await connect_tool_server(spec, policy)

    catalog = ToolCatalog(
        tools,
        call_timeout=settings.tools.call_timeout,
        max_output_chars=settings.tools.max_output_chars,
        connector=connector,
    )
    for tool in plugin_tools():
        catalog.register(tool)
    return catalog


async def connect_tool_server(spec: ToolServerSpec, policy: McpPolicy | None = None) -> ToolSource:
    from agentstage.tools.mcp import connect

    return await connect(spec, policy)


def store_keyring(settings: Settings) -> Keyring:
    """The store's keys, read from where ``store.encryption_key`` and ``store.decryption_keys``
    say they live (an environment variable or a file); an empty keyring when encryption is off."""
    store = settings.store

    def key(reference: str, what: str) -> bytes:
        return parse_key(resolve_reference(reference, what), f"{what} ({reference})")

    current = key(store.encryption_key, "store.encryption_key") if store.encryption_key else None
    older = [key(ref, f"store.decryption_keys[{i}]") for i, ref in enumerate(store.decryption_keys)]
    return Keyring(current, older)


def build_store(settings: Settings) -> SqlRunStore:
    return SqlRunStore(
        settings.store_url(), write_timeout=settings.store.write_timeout, keys=store_keyring(settings)
    )


def build_service(settings: Settings) -> RunService:
    prompts_dir = settings.home / "prompts"
    prompts = PromptLibrary(prompts_dir) if prompts_dir.is_dir() else PromptLibrary()
    return RunService(
        settings,
        build_store(settings),
        model_factory(settings),
        tool_catalog(settings),
        prompts,
        replay_parts=ReplayBuilders(),
    )


async def check_store(settings: Settings) -> None:
    """Open the store once (migrating it) and check its keys: what a server does before it
    listens, so a wrong store URL or encryption key is one clear error, not a failed start-up."""
    store = build_store(settings)
    try:
        await store.open()
    finally:
        await store.close()


def build_services(settings: Settings) -> Services:
    runs = build_service(settings)
    return Services(
        runs=runs,
        conversations=ConversationService(runs),
        batches=BatchService(runs),
        keys=KeyService(runs.store, settings),
        guard=build_guard(settings, runs.store),
        audit=AuditTrail(runs.store),
        store_keys=StoreKeyService(runs.store),
    )


def rebuild_models(service: RunService, settings: Settings) -> None:
    """Apply a new configuration to a running service: new runs use it at once; circuit breakers
    keep their state (an endpoint that is failing stays skipped)."""
    current = service.model_factory
    service.settings = settings
    service.model_factory = ModelChains(
        settings, current.breakers if isinstance(current, ModelChains) else None
    )


async def readiness(settings: Settings, service: RunService) -> dict[str, str]:
    """What ``/health/ready`` reports: the store can be written (a probe write, at most one a
    second), and the default profile's primary provider can be used."""
    checks: dict[str, str] = {}
    try:
        await service.check_store()
        await service.store.check_encryption()
        checks["store"] = "ok"
    except (StoreError, ConfigError) as error:
        checks["store"] = f"unavailable ({error.code}): {error.message}"
    except Exception as error:  # any failure means not ready; the reason is what matters
        checks["store"] = f"unavailable: {type(error).__name__}: {error}"
    entry = settings.profile(None).chain[0]
    provider = settings.providers[entry.provider]
    problem = check_provider(provider.type, provider.options())
    checks[f"provider:{entry.provider}"] = "ok" if problem is None else f"unavailable: {problem}"
    return checks


def configure_logging(settings: Settings) -> None:
    """Server processes log JSON lines to stderr at the configured level."""
    configure_json_logging(settings.logging.level)
