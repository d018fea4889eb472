"""Settings in, ready services out: the only module that names concrete parts.

Doors call :func:`build_services` (or :func:`build_service` for the run service alone); they never
import a provider, a store or a tool themselves, and never assemble services from each other's
parts.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy.exc import SQLAlchemyError

from agentstage.access.config import McpPolicy
from agentstage.access.guard import Guard
from agentstage.access.secrets import resolve_reference
from agentstage.core.events import RunEvent
from agentstage.core.model import SKIPPED_CODE, Model
from agentstage.core.prompts import PromptLibrary
from agentstage.core.tools import Tool
from agentstage.errors import AgentstageError, ConfigError, ForbiddenError, StoreError
from agentstage.observability import masking, metrics
from agentstage.observability.logging import configure_logging as configure_log_lines
from agentstage.observability.telemetry import Telemetry
from agentstage.observability.tools import instrument
from agentstage.providers.registry import build_model, check_provider, skip_reason
from agentstage.providers.replay import ReplayModel
from agentstage.providers.resilience import BreakerRegistry, ResilientModel, UnavailableModel
from agentstage.runtime.batches import BatchService
from agentstage.runtime.catalog import ToolCatalog, ToolServerSpec, ToolSource
from agentstage.runtime.config_view import check_sql_database
from agentstage.runtime.conversations import ConversationService
from agentstage.runtime.keys import KeyService
from agentstage.runtime.security import AuditTrail, build_guard
from agentstage.runtime.service import ModelFactory, RunService
from agentstage.runtime.store_keys import StoreKeyService
from agentstage.runtime.traces import TraceService
from agentstage.settings import Settings
from agentstage.store.crypto import Keyring, parse_key
from agentstage.store.sql import SqlRunStore, classify
from agentstage.tools.plugins import plugin_tools
from agentstage.tools.registry import builtin_tools
from agentstage.tools.replay import replay_tools

if TYPE_CHECKING:
    from agentstage.providers.host_supervisor import ModelHostSupervisor as ModelHost

SKIP_CHECK_SECONDS = 1.0


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
    telemetry: Telemetry
    traces: TraceService


class ModelChains:
    """Builds a fresh model chain for one run of a profile. Its circuit breakers (one per endpoint)
    are shared by all runs, and survive a configuration change (see :func:`rebuild_models`)."""

    def __init__(self, settings: Settings, breakers: BreakerRegistry | None = None):
        self.settings = settings
        self.breakers = breakers or BreakerRegistry(settings.retry)
        self.breakers.policy = settings.retry
        self._skips: dict[str, tuple[float, tuple[str, str] | None]] = {}  # provider -> (when, why)

    def __call__(self, profile_name: str) -> Model:
        settings = self.settings
        profile = settings.profile(profile_name)
        chain: list[Model] = []
        for entry in profile.chain:
            provider = settings.providers[entry.provider]
            skipped = self._skip_reason(entry.provider)
            if skipped is not None:  # skipped with a fallback notice; only a chain with nothing usable fails
                code, reason = skipped
                chain.append(UnavailableModel(entry.provider, entry.model or "", reason, code))
                continue
            params = {**profile.params, **entry.params}
            chain.append(build_model(provider.type, entry.provider, entry.model, provider.options(), params))
        if all(isinstance(model, UnavailableModel) for model in chain):
            unusable = [m for m in chain if isinstance(m, UnavailableModel)]
            reasons = "; ".join(f"{m.provider}: {m.reason}" for m in unusable)
            remedy = "set the key" if all(m.code == SKIPPED_CODE for m in unusable) else "make one usable"
            raise ConfigError(
                f"profile {profile_name!r} has no usable provider ({reasons}); {remedy} or choose "
                "another profile",
                code="no_usable_provider",
            )
        return ResilientModel(chain, settings.retry, self.breakers)

    def _skip_reason(self, name: str) -> tuple[str, str] | None:
        """:func:`skip_reason`, asked again at most once a second per provider: a plugin's check
        may do real work, and runs of a busy profile start hundreds of times a second."""
        now = time.monotonic()
        checked = self._skips.get(name)
        if checked is None or now - checked[0] >= SKIP_CHECK_SECONDS:
            provider = self.settings.providers[name]
            checked = self._skips[name] = (now, skip_reason(provider.type, provider.options()))
        return checked[1]

    def check(self, profile_name: str) -> None:
        """Raise the first problem when no provider of the chain can work (a local model file that
        is missing or broken, a bad option); one usable provider is enough, the rest fall back.
        Called before a run is written, so a run that cannot start leaves nothing behind."""
        problems: list[AgentstageError] = []
        chain = self.settings.profile(profile_name).chain
        for entry in chain:
            provider = self.settings.providers[entry.provider]
            if provider.type != "local":
                return
            from agentstage.providers.local import validate

            try:
                validate(provider.options(), entry.provider)
            except AgentstageError as error:
                problems.append(error)
                continue
            return
        if problems:
            first = problems[0]
            # The server's own model cannot work: that is not the caller's bad input (a 503, not a 422).
            raise ConfigError(first.message, code="model_unavailable", details=first.details)


def model_factory(settings: Settings) -> ModelFactory:
    return ModelChains(settings)


class ReplayBuilders:
    """The concrete replay parts: the ``replay`` provider, the replaying tools, real model chains."""

    def model(self, events: Sequence[RunEvent], *, model_name: str, native_tools: bool) -> Model:
        return ReplayModel.from_events(events, model_name=model_name, native_tools=native_tools)

    def tools(
        self, events: Sequence[RunEvent], specs: Sequence[Mapping[str, Any]], installed: Mapping[str, Tool]
    ) -> list[Tool]:
        return replay_tools(events, specs, installed)

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
        [instrument(tool) for tool in tools],
        call_timeout=settings.tools.call_timeout,
        max_output_chars=settings.tools.max_output_chars,
        connector=connector,
    )
    for tool in plugin_tools(reserved={tool.name for tool in tools}):
        catalog.register(instrument(tool))
    return catalog


async def connect_tool_server(spec: ToolServerSpec, policy: McpPolicy | None = None) -> ToolSource:
    from agentstage.tools.mcp import connect

    source = await connect(spec, policy)
    source.tools = [instrument(tool) for tool in source.tools]
    return source


def store_keyring(settings: Settings) -> Keyring:
    """The store's keys, read from where ``store.encryption_key`` and ``store.decryption_keys``
    say they live (an environment variable or a file); an empty keyring when encryption is off."""
    store = settings.store

    def key(reference: str, what: str) -> bytes:
        return parse_key(resolve_reference(reference, what), f"{what} ({reference})")

    current = key(store.encryption_key, "store.encryption_key") if store.encryption_key else None
    older = [key(ref, f"store.decryption_keys[{i}]") for i, ref in enumerate(store.decryption_keys)]
    return Keyring(current, older)


def build_store(settings: Settings, *, executes_runs: bool = True) -> SqlRunStore:
    return SqlRunStore(
        settings.store_url(),
        write_timeout=settings.store.write_timeout,
        keys=store_keyring(settings),
        pool_size=store_pool_size(settings, executes_runs=executes_runs),
    )


def store_pool_size(settings: Settings, *, executes_runs: bool) -> int:
    """Connections a process keeps: every run it executes at once may hold one (claiming it,
    reading its conversation), plus the event writer, leases and the control listener. Fewer
    than that and each use beyond the pool opens and closes a connection of its own (measured:
    4 workers x 16 runs on a pool of 10 ran at 67-129 runs/s, at 175 with a pool that fits)."""
    if settings.store.pool_size is not None:
        return settings.store.pool_size
    if not executes_runs:
        return 10
    return max(10, settings.runtime.max_concurrent_runs + 4)


def build_service(settings: Settings, *, worker: bool = False) -> RunService:
    """The run service for these settings. With PostgreSQL and Redis configured it is the
    scale-out kind: runs go through the queue, live events through Redis Streams; ``worker``
    builds the one ``agent worker`` runs (see :func:`run_worker`)."""
    return _observed_service(settings, worker=worker)[0]


def _observed_service(settings: Settings, *, worker: bool = False) -> tuple[RunService, Telemetry]:
    prompts_dir = settings.home / "prompts"
    prompts = PromptLibrary(prompts_dir) if prompts_dir.is_dir() else PromptLibrary()
    masking.remember_secrets(os.environ, settings.model_dump(mode="json"))
    if settings.distributed() and settings.runtime.execute_in_api and not worker:
        settings = with_run_slots(settings, settings.runtime.worker_concurrency)  # agent serve --execute
    executes = not settings.distributed() or worker or settings.runtime.execute_in_api
    store = build_store(settings, executes_runs=executes)
    if not settings.distributed():
        service = RunService(
            settings,
            store,
            model_factory(settings),
            tool_catalog(settings),
            prompts,
            replay_parts=ReplayBuilders(),
        )
        return service, _observe(service, store, settings)
    from agentstage.distributed.bus import RedisEventBus
    from agentstage.distributed.queue import ProcrastinateQueue, libpq_url
    from agentstage.distributed.shared_config import SharedConfig
    from agentstage.distributed.worker import InProcessWorker, StallSweeper
    from agentstage.runtime.config_view import adopt_shared

    queue = ProcrastinateQueue(settings.store_url())
    shared = SharedConfig(store, libpq_url(settings.store_url()))
    bus = RedisEventBus(
        settings.redis_url() or "", maxlen=settings.redis.stream_maxlen, ttl=settings.redis.stream_ttl
    )
    in_process = None
    if settings.runtime.execute_in_api and not worker:
        in_process = InProcessWorker(queue, settings.runtime.worker_concurrency)
    service = RunService(
        settings,
        store,
        model_factory(settings),
        tool_catalog(settings),
        prompts,
        queue=in_process or queue,
        bus=bus,
        sweeper=StallSweeper(store, queue, settings),
        replay_parts=ReplayBuilders(),
        config_feed=shared,
    )
    shared.adopt = lambda document: adopt_shared(service, document)
    if in_process is not None:
        in_process.service = service
    return service, _observe(service, store, settings)


def _observe(service: RunService, store: SqlRunStore, settings: Settings) -> Telemetry:
    telemetry = Telemetry(store, settings.tracing, settings.metrics, provider_type=_provider_kinds(settings))
    service.add_sink(telemetry)
    return telemetry


def _provider_kinds(settings: Settings) -> Callable[[str], str]:
    def kind(name: str) -> str:
        provider = settings.providers.get(name)
        return provider.type if provider is not None else name

    return kind


def with_run_slots(settings: Settings, concurrency: int) -> Settings:
    """A process that executes queued runs runs as many at once as it claims: its run slots follow
    its worker's concurrency (a smaller runtime.max_concurrent_runs would hold claimed runs back
    and start them one slot at a time; a larger one is not used)."""
    runtime = settings.runtime.model_copy(update={"max_concurrent_runs": concurrency})
    return settings.model_copy(update={"runtime": runtime})


async def run_worker(settings: Settings, concurrency: int, stop: asyncio.Event) -> None:
    """``agent worker``: execute queued runs until ``stop`` is set, then drain."""
    if not settings.distributed():
        raise ConfigError(
            "agent worker needs the scale-out mode: set store.url to a PostgreSQL URL "
            "(postgresql+psycopg://…) and redis.url (redis://…), e.g. AGENT_STORE__URL and AGENT_REDIS__URL"
        )
    from agentstage.distributed.worker import run_worker as execute

    service = build_service(with_run_slots(settings, concurrency), worker=True)
    await execute(service, service.queue, concurrency, stop)  # type: ignore[arg-type]


async def check_store(settings: Settings) -> None:
    """Open the store once (migrating it) and check its keys: what a server does before it
    listens, so a wrong store URL or encryption key is one clear error, not a failed start-up."""
    store = build_store(settings, executes_runs=False)
    try:
        await store.open()
    finally:
        await store.close()


def count_lost_audit_rows(count: int) -> None:
    """Audit rows the store could not take: a metric, next to the ERROR line the audit log writes."""
    metrics.counter(
        "agent_audit_rows_lost_total",
        "Audit rows that could not be written to the store (each also logged at ERROR).",
    ).inc(count)


def build_services(settings: Settings) -> Services:
    runs, telemetry = _observed_service(settings)
    return Services(
        runs=runs,
        conversations=ConversationService(runs),
        batches=BatchService(runs),
        keys=KeyService(runs.store, settings),
        guard=build_guard(settings, runs.store, on_audit_lost=count_lost_audit_rows),
        audit=AuditTrail(runs.store, on_lost=count_lost_audit_rows),
        store_keys=StoreKeyService(runs.store),
        telemetry=telemetry,
        traces=TraceService(runs, telemetry),
    )


def rebuild_models(service: RunService, settings: Settings) -> None:
    """Apply a new configuration to a running service: new runs use it at once; circuit breakers
    keep their state (an endpoint that is failing stays skipped)."""
    current = service.model_factory
    service.settings = settings
    service.model_factory = ModelChains(
        settings, current.breakers if isinstance(current, ModelChains) else None
    )


def store_error_for(error: Exception) -> StoreError | None:
    """The store error a database driver's exception means (a server restarting, unreachable), for
    doors that met it outside the store's own handling; None for anything else."""
    return classify(error) if isinstance(error, SQLAlchemyError) else None


DEGRADED = "degraded"  # a readiness check that names a problem the node still serves through


async def readiness(settings: Settings, service: RunService) -> dict[str, str]:
    """What ``/health/ready`` reports: the store can be written (a probe write, at most one a
    second), Redis answers (scale-out; without it the node is degraded, not unready), and the
    default profile's primary provider can be used."""
    checks: dict[str, str] = {}
    try:
        await service.check_store()
        await service.store.check_encryption()
        checks["store"] = "ok"
    except (StoreError, ConfigError) as error:
        checks["store"] = f"unavailable ({error.code}): {error.message}"
    except SQLAlchemyError as error:
        named = classify(error)
        checks["store"] = f"unavailable ({named.code}): {named.message}"
    except Exception as error:  # any failure means not ready; the reason is what matters
        checks["store"] = f"unavailable: {type(error).__name__}: {error}"
    if service.bus is not None:  # without Redis streams still work (polled): degraded, still ready
        trouble = await service.bus.problem()
        checks["redis"] = (
            "ok" if trouble is None else f"{DEGRADED}: {trouble}; live events are polled from the store"
        )
    entry = settings.profile(None).chain[0]
    provider = settings.providers[entry.provider]
    problem = check_provider(provider.type, provider.options(), entry.provider)
    checks[f"provider:{entry.provider}"] = "ok" if problem is None else f"unavailable: {problem}"
    return checks


def start_model_host(settings: Settings) -> ModelHost | None:
    """For ``agent serve``: one supervised process holding the embedded model for every worker.

    Started only when some profile uses a local provider; the default profile's local model is
    loaded at once. Workers find it through the environment, which uvicorn's workers inherit."""
    from agentstage.providers.host_supervisor import ModelHostSupervisor
    from agentstage.providers.local import HOST_ENV, LocalModel, validate

    used = {entry.provider for profile in settings.profiles.values() for entry in profile.chain}
    local = [name for name in used if settings.providers[name].type == "local"]
    if not local:
        return None
    preload = None
    for entry in settings.profile(None).chain:
        provider = settings.providers[entry.provider]
        if provider.type == "local":
            try:
                validate(provider.options(), entry.provider)
                model = LocalModel.from_options(entry.provider, None, provider.options(), {})
                preload = model.spec().as_dict()
            except AgentstageError:
                preload = None  # readiness names the problem; the host loads models on demand
            break
    from agentstage.observability.run_metrics import model_host_restarted

    host = ModelHostSupervisor(preload, on_restart=model_host_restarted)
    os.environ[HOST_ENV] = str(host.start())
    return host


def configure_logging(settings: Settings) -> None:
    """Server processes log to stderr at the configured level and format (JSON lines by default)."""
    logging = settings.logging
    configure_log_lines(logging.level, logging.format, capacity=logging.queue_size)


def configure_cli_logging(settings: Settings) -> None:
    """Commands log readable lines at WARN, so logs do not mix with the answer; AGENT_LOG_LEVEL and
    AGENT_LOG_FORMAT (or logging.format) choose otherwise."""
    chosen = bool(os.environ.get("AGENT_LOG_LEVEL"))
    level = settings.logging.level if chosen else "warn"
    kind = settings.logging.format if os.environ.get("AGENT_LOG_FORMAT") else "console"
    configure_log_lines(level, kind, capacity=settings.logging.queue_size)
    _run_lines_shown(chosen)


def _run_lines_shown(shown: bool) -> None:
    """A command reports each run's end itself (one red line for a failure), so the run's own log
    lines stay out of the terminal unless a log level was asked for."""
    import logging as std_logging

    std_logging.getLogger("agentstage.run").setLevel(std_logging.NOTSET if shown else std_logging.CRITICAL)


def configure_log_lines_for_debug(settings: Settings, verbose: bool) -> None:
    """``agent debug``: readable lines as the run goes, DEBUG with ``--verbose``."""
    level = "debug" if verbose else settings.logging.level if os.environ.get("AGENT_LOG_LEVEL") else "warn"
    configure_log_lines(level, "console", capacity=settings.logging.queue_size)
    _run_lines_shown(True)  # debugging a run: its own lines are the point (and --save-logs keeps them)


def prepare_metrics() -> None:
    """Before ``agent serve`` starts its workers: give them one fresh directory for their metric
    values, so any worker's /metrics adds up all of them (kept if PROMETHEUS_MULTIPROC_DIR is set)."""
    import atexit
    import shutil
    import tempfile

    from agentstage.observability.metrics import MULTIPROC_ENV, prepare_directory

    directory = os.environ.get(MULTIPROC_ENV)
    if directory is None:
        directory = tempfile.mkdtemp(prefix="agentstage-metrics-")
        atexit.register(shutil.rmtree, directory, True)
    prepare_directory(Path(directory))
    os.environ[MULTIPROC_ENV] = directory
