"""Helpers shared by remote providers: tool names on the wire, secret references, SDK errors."""

from __future__ import annotations

import json
import os
from typing import Any

from agentstage.errors import ConfigError, ModelError


def to_wire_name(name: str) -> str:
    """Remote APIs allow only ``[A-Za-z0-9_-]`` in tool names, so ``math.calculate`` → ``math__calculate``."""
    return name.replace(".", "__")


def from_wire_name(name: str) -> str:
    return name.replace("__", ".")


def resolve_secret(reference: str | None, *, provider: str, required: bool = True) -> str | None:
    """Resolve ``env:NAME`` references; secrets are never written literally in config files."""
    if reference is None:
        if required:
            raise ConfigError(f'provider {provider!r} needs an api_key (e.g. "env:OPENAI_API_KEY")')
        return None
    if reference.startswith("env:"):
        variable = reference[4:]
        value = os.environ.get(variable)
        if not value and required:
            raise ConfigError(f"provider {provider!r} needs the environment variable {variable} to be set")
        return value
    return reference


def parse_arguments(raw: str) -> dict[str, Any]:
    """Tool arguments as sent by a model; malformed JSON is kept so the tool can report it."""
    if not raw.strip():
        return {}
    try:
        value = json.loads(raw)
    except json.JSONDecodeError:
        return {"_raw": raw}
    return value if isinstance(value, dict) else {"_value": value}


def retry_after(headers: Any) -> float | None:
    """Seconds from a ``Retry-After`` header, when it gives seconds."""
    value = headers.get("retry-after") if headers is not None else None
    try:
        return float(value) if value is not None else None
    except ValueError:
        return None


def translate_sdk_error(
    sdk: Any,
    error: Exception,
    *,
    where: str,
    provider: str,
    retryable_statuses: frozenset[int] = frozenset({408}),
) -> ModelError:
    """One mapping from the official SDKs' errors (openai and anthropic share their shape) to
    ModelError: timeouts, unreachable hosts, rate limits and 5xx are retryable; bad keys are not."""
    if isinstance(error, sdk.APITimeoutError):
        return ModelError(f"{where} timed out", code="model_timeout", retryable=True, provider=provider)
    if isinstance(error, sdk.APIConnectionError):
        return ModelError(
            f"{where} is unreachable: {error}", code="provider_unavailable", retryable=True, provider=provider
        )
    if isinstance(error, sdk.APIStatusError):
        status = error.status_code
        delay = retry_after(error.response.headers)
        if status == 429:
            return ModelError(
                f"{where} rate limited the request",
                code="rate_limited",
                retryable=True,
                retry_after=delay,
                provider=provider,
            )
        if status in (401, 403):
            return ModelError(
                f"{where} refused the API key (HTTP {status})", code="auth_failed", provider=provider
            )
        return ModelError(
            f"{where} answered HTTP {status}: {error.message}",
            code="provider_error",
            retryable=status >= 500 or status in retryable_statuses,
            retry_after=delay,
            provider=provider,
        )
    return ModelError(f"{where} failed: {error}", code="model_error", provider=provider)
