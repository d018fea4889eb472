"""Helpers shared by remote providers: secret references, SDK errors. (Tool names on the wire are
:func:`agentstage.core.tools.to_wire_name`, next to the rule that keeps them reversible.)"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from typing import Any

from agentstage.errors import ConfigError, ModelError

# The key a remote provider reads when its config names none and it talks to the vendor's own API.
DEFAULT_KEY_REFERENCES = {"openai": "env:OPENAI_API_KEY", "anthropic": "env:ANTHROPIC_API_KEY"}


def env_references(kind: str, options: Mapping[str, Any]) -> list[str]:
    """Every ``env:NAME`` a provider's options name, plus the vendor key it reads by default.

    One rule for all of them: a provider whose references are not all set cannot be used, whether
    the variable is ``OPENAI_API_KEY`` or a self-hosted server's ``VLLM_KEY``."""
    names = [value[4:] for value in options.values() if isinstance(value, str) and value.startswith("env:")]
    implied = DEFAULT_KEY_REFERENCES.get(kind)
    remote = options.get("base_url") or options.get("nodes")  # a server of one's own: no vendor key
    if implied is not None and "api_key" not in options and not remote:
        names.append(implied[4:])
    return list(dict.fromkeys(names))


def missing_secrets(
    kind: str, options: Mapping[str, Any], environ: Mapping[str, str] | None = None
) -> list[str]:
    """The environment variables a provider needs that are unset or empty."""
    source = os.environ if environ is None else environ
    return [name for name in env_references(kind, options) if not source.get(name)]


def not_set(missing: list[str]) -> str:
    """How a provider's unset secrets are named, wherever it is said."""
    return f"{' and '.join(missing)} {'is' if len(missing) == 1 else 'are'} not set"


def resolve_secret(reference: str | None, *, provider: str) -> str | None:
    """The value behind an ``env:NAME`` reference (a literal value is returned as it is; ``None``
    means the provider sends no key). An unset variable is refused the same way for every name."""
    if reference is None or not reference.startswith("env:"):
        return reference
    variable = reference[4:]
    value = os.environ.get(variable)
    if not value:
        raise ConfigError(
            f"provider {provider!r} needs the environment variable {variable} to be set",
            code="missing_secret",
        )
    return value


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
                f"{where} refused the API key (HTTP {status}): {api_message(error)}",
                code="auth_failed",
                provider=provider,
            )
        return ModelError(
            f"{where} answered HTTP {status}: {api_message(error)}",
            code="provider_error",
            retryable=status >= 500 or status in retryable_statuses,
            retry_after=delay,
            provider=provider,
        )
    return ModelError(f"{where} failed: {error}", code="model_error", provider=provider)


def api_message(error: Any) -> str:
    """The API's own explanation from an error body (``{"error": {"message": …}}`` in both the
    OpenAI and the Anthropic shape), else the SDK's message."""
    body = getattr(error, "body", None)
    detail = body.get("error", body) if isinstance(body, dict) else None
    if isinstance(detail, dict) and isinstance(detail.get("message"), str):
        return str(detail["message"])
    return str(getattr(error, "message", error))
