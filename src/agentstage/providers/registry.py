"""Provider kinds: the built-in ones and those plugins add through entry points.

A kind (``local``, ``openai``, ``anthropic``, ``scripted``, ``replay``, or a plugin's) knows how to build its
model for one run and whether a configuration of it can be used; it is named by the ``type`` of a
provider in the configuration. Provider SDKs load only when their kind builds a model.
Plugins declare kinds in the ``agentstage.providers`` entry-point group; each entry point names a
:class:`~agentstage.core.model.ProviderKind` (an instance, or a class made with no arguments).
"""

from __future__ import annotations

import functools
import logging
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any

from agentstage.core.model import SKIPPED_CODE, UNUSABLE_CODE, BaseProviderKind, Model, ProviderKind
from agentstage.errors import AgentstageError, ConfigError
from agentstage.providers.wire import DEFAULT_KEY_REFERENCES, missing_secrets, not_set

log = logging.getLogger("agentstage.providers")
ENTRY_POINT_GROUP = "agentstage.providers"


class LocalKind(BaseProviderKind):
    name = "local"

    def build(self, name: str, model: str | None, options: dict[str, Any], params: dict[str, Any]) -> Model:
        from agentstage.providers.local import LocalModel

        return LocalModel.from_options(name, model, options, params)

    def check(self, options: dict[str, Any], name: str = "local") -> str | None:
        """A bad option, a missing, truncated or non-GGUF file, or (under ``agent serve``) a model
        host that is down: one line naming the key, the file or the host."""
        from agentstage.providers.local import check

        return check(options, name)


class _KeyedKind(BaseProviderKind):
    """Providers reached over the network with an API key referenced as ``env:NAME``."""

    default_key = ""

    def check(self, options: dict[str, Any]) -> str | None:
        missing = missing_secrets(self.name, options)  # the one rule for every env: reference
        return not_set(missing) if missing else None

    def _implied_key(self, options: dict[str, Any]) -> str | None:
        """The vendor's key when the vendor's own API is used; none for a server of one's own
        (``base_url`` or ``nodes``) unless ``api_key`` names one."""
        return None if options.get("base_url") or options.get("nodes") else self.default_key


class OpenAIKind(_KeyedKind):
    name = "openai"
    default_key = DEFAULT_KEY_REFERENCES["openai"]

    def build(self, name: str, model: str | None, options: dict[str, Any], params: dict[str, Any]) -> Model:
        from agentstage.providers.openai import OpenAIModel

        pool = None
        if options.get("nodes"):
            from agentstage.providers.pool import endpoint_pool

            try:
                pool = endpoint_pool(name, options)
            except ValueError as error:
                raise ConfigError(f"provider {name!r}: invalid endpoint pool: {error}") from None
        return OpenAIModel(
            model or "gpt-4o-mini",
            provider=name,
            base_url=options.get("base_url"),
            api_key=options.get("api_key", self._implied_key(options)),
            params=params,
            timeout=float(options.get("timeout", 60.0)),
            pool=pool,
        )


class AnthropicKind(_KeyedKind):
    name = "anthropic"
    default_key = DEFAULT_KEY_REFERENCES["anthropic"]

    def build(self, name: str, model: str | None, options: dict[str, Any], params: dict[str, Any]) -> Model:
        from agentstage.providers.anthropic import AnthropicModel

        return AnthropicModel(
            model or "claude-sonnet-4-5",
            provider=name,
            base_url=options.get("base_url"),
            api_key=options.get("api_key", self._implied_key(options)),
            params=params,
            timeout=float(options.get("timeout", 60.0)),
        )


class ScriptedKind(BaseProviderKind):
    """Scripts are parsed once and reused while they stay the same (an inline script is the same
    object; a script file has the same modification time and size)."""

    name = "scripted"

    def __init__(self) -> None:
        self._parsed: dict[Any, tuple[Any, Any]] = {}

    def build(self, name: str, model: str | None, options: dict[str, Any], params: dict[str, Any]) -> Model:
        from agentstage.providers.scripted import ScriptedModel

        return ScriptedModel(self._script(self._source(name, options)), provider=name, model_name=model)

    def _script(self, source: dict[str, Any] | str) -> Any:
        from agentstage.providers.scripted import Script

        if isinstance(source, dict):
            key: Any = id(source)
            stamp: Any = source
        else:
            key = source
            try:
                status = Path(source).expanduser().stat()
                stamp = (status.st_mtime_ns, status.st_size)
            except OSError:
                stamp = None
        cached = self._parsed.get(key)
        if cached is not None and stamp is not None and (cached[0] is stamp or cached[0] == stamp):
            return cached[1]
        script = Script.load(source)
        if len(self._parsed) > 256:
            self._parsed.clear()
        self._parsed[key] = (stamp, script)
        return script

    def check(self, options: dict[str, Any]) -> str | None:
        from agentstage.providers.scripted import Script

        try:
            Script.load(self._source("scripted", options))
        except AgentstageError as error:
            return error.message
        return None

    @staticmethod
    def _source(name: str, options: dict[str, Any]) -> dict[str, Any] | str:
        source = options.get("script")
        if source is None:
            raise ConfigError(
                f"provider {name!r} (scripted) needs a 'script': a file path or an inline script"
            )
        return source if isinstance(source, dict) else str(source)


class ReplayKind(BaseProviderKind):
    """Answers from an exported run (``recording``: the file ``agent snapshot export`` wrote)."""

    name = "replay"

    def build(self, name: str, model: str | None, options: dict[str, Any], params: dict[str, Any]) -> Model:
        from agentstage.providers.replay import ReplayModel, load_recording

        recording, native_tools = load_recording(self._source(name, options))
        return ReplayModel(recording, model_name=model, native_tools=native_tools)

    def check(self, options: dict[str, Any]) -> str | None:
        from agentstage.providers.replay import load_recording

        try:
            load_recording(self._source("replay", options))
        except AgentstageError as error:
            return error.message
        return None

    @staticmethod
    def _source(name: str, options: dict[str, Any]) -> str:
        source = options.get("recording")
        if not source:
            raise ConfigError(
                f"provider {name!r} (replay) needs a 'recording': a run exported with agent snapshot export"
            )
        return str(source)


BUILT_IN: tuple[ProviderKind, ...] = (
    LocalKind(),
    OpenAIKind(),
    AnthropicKind(),
    ScriptedKind(),
    ReplayKind(),
)
_BUILT_IN_NAMES = frozenset(kind.name for kind in BUILT_IN)


@functools.cache
def provider_kinds() -> dict[str, ProviderKind]:
    """Every kind by name: the built-in ones, then those of installed plugins (a plugin cannot
    replace a built-in kind; a plugin that fails to load is logged and skipped)."""
    kinds: dict[str, ProviderKind] = {kind.name: kind for kind in BUILT_IN}
    for entry in entry_points(group=ENTRY_POINT_GROUP):
        try:
            loaded = entry.load()
            kind = loaded() if isinstance(loaded, type) else loaded
            name = str(kind.name or entry.name)
        except Exception as error:  # a broken plugin must not break the product
            log.warning(
                "provider plugin %r (%s) not loaded: %s: %s",
                entry.name,
                entry.value,
                type(error).__name__,
                error,
            )
            continue
        if name in kinds:
            log.warning("provider plugin %r not loaded: the kind %r already exists", entry.value, name)
            continue
        kinds[name] = kind
    return kinds


def provider_kind(kind: str, provider: str = "") -> ProviderKind:
    kinds = provider_kinds()
    if kind not in kinds:
        who = f"provider {provider!r} has " if provider else ""
        raise ConfigError(f"{who}unknown type {kind!r} (known: {', '.join(kinds)})")
    return kinds[kind]


def build_model(
    kind: str, name: str, model: str | None, options: dict[str, Any], params: dict[str, Any]
) -> Model:
    return provider_kind(kind, name).build(name, model, options, params)


def skip_reason(kind: str, options: dict[str, Any]) -> tuple[str, str] | None:
    """Why a run's chain skips this provider (falling back to the next), as (code, reason), or
    None: an ``env:`` secret it needs that is not set (``missing_secret``), or what a plugin
    kind's own ``check`` says (``provider_unusable``). A built-in kind's other problems (a missing
    model file, a bad script) are errors of their own, raised when it is built."""
    missing = missing_secrets(kind, options)
    if missing:
        return SKIPPED_CODE, not_set(missing)
    if kind in _BUILT_IN_NAMES:
        return None
    try:
        problem = provider_kind(kind).check(options)
    except Exception as error:  # a plugin's check that breaks says why, like one that refuses
        problem = f"its check failed: {type(error).__name__}: {error}"
    return None if problem is None else (UNUSABLE_CODE, problem)


def check_provider(kind: str, options: dict[str, Any], name: str = "") -> str | None:
    """Why a provider cannot be used, or None. ``name`` lets a message name the exact key."""
    try:
        found = provider_kind(kind)
        if isinstance(found, LocalKind) and name:
            return found.check(options, name)
        return found.check(options)
    except AgentstageError as error:
        return error.message
