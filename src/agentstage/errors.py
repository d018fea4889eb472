"""The one error tree of agentstage.

Every error a user can see has a stable ``code`` so that doors can map it (HTTP problem+json,
gRPC status, CLI exit code) without parsing messages::

    AgentstageError                     code
    ├── UserError                       bad input or configuration, shown to the user as is
    │   ├── InvalidInputError           invalid_input
    │   ├── UnknownModeError            unknown_mode
    │   ├── UnknownProfileError         unknown_profile
    │   ├── ConfigError                 config_invalid (+ model_unavailable: a local model file or
    │   │                               option that cannot work, refused before a run starts)
    │   ├── NotFoundError               not_found (run_not_found, conversation_not_found, tool_not_found)
    │   ├── ConflictError               conflict (run_finished)
    │   ├── ToolArgumentError           invalid_tool_arguments
    │   ├── UnauthorizedError           unauthorized: who are you? (invalid_token, token_expired,
    │   │                               unknown_key, key_expired, key_revoked, … — HTTP 401)
    │   ├── ForbiddenError              forbidden: not allowed (+ unknown_role, unknown_tenant,
    │   │                               host_not_allowed, executable_not_allowed, … — HTTP 403)
    │   └── TooManyRequestsError        rate_limited, too_many_failed_authentications (HTTP 429)
    └── RunError                        something went wrong while a run executed
        ├── ModelError                  model_error (+ model_timeout, provider_unavailable,
        │                               rate_limited, circuit_open, invalid_action, model_unavailable,
        │                               provider_crashed: the model host died mid-call, retryable;
        │                               invalid_grammar, repeated_failure, incomplete_answer)
        ├── ToolError                   tool_error (+ tool_timeout, tool_limit, tool_output_invalid,
        │                               sql_not_read_only, tool_steps_failed: every tool call of
        │                               the run failed)
        ├── LimitExceededError          max_steps, max_tokens, max_duration, context_overflow
        └── StoreError                  store_write_failed (+ store_unavailable, storage_full)

A run that ends ``cancelled`` or ``worker_lost`` carries that code in its record; neither is raised.

A ``RunError`` ends a run as ``failed`` (or ``cancelled``); a ``UserError`` is refused before a
run starts, or becomes a recorded failed step when a model or tool produced it mid-run.
"""

from __future__ import annotations

from typing import Any, ClassVar


class AgentstageError(Exception):
    """Base of every error agentstage raises on purpose."""

    default_code: ClassVar[str] = "internal_error"

    def __init__(self, message: str, *, code: str | None = None, details: dict[str, Any] | None = None):
        super().__init__(message)
        self.message = message
        self.code = code or self.default_code
        self.details: dict[str, Any] = details or {}

    def to_dict(self) -> dict[str, Any]:
        """The JSON shape every door uses for an error: ``{"code", "message"}`` plus details."""
        body: dict[str, Any] = {"code": self.code, "message": self.message}
        if self.details:
            body["details"] = self.details
        return body


class UserError(AgentstageError):
    default_code = "invalid_input"


class InvalidInputError(UserError):
    default_code = "invalid_input"


class UnknownModeError(UserError):
    default_code = "unknown_mode"


class UnknownProfileError(UserError):
    default_code = "unknown_profile"


class ConfigError(UserError):
    default_code = "config_invalid"


class NotFoundError(UserError):
    default_code = "not_found"


class ConflictError(UserError):
    default_code = "conflict"


class ToolArgumentError(UserError):
    """Arguments that do not match a tool's schema; ``details["errors"]`` names each field."""

    default_code = "invalid_tool_arguments"


class UnauthorizedError(UserError):
    """The caller could not be identified: no credential, or one that is not valid."""

    default_code = "unauthorized"


class ForbiddenError(UserError):
    """The caller is known but may not do this; ``details["permission"]`` names what is missing."""

    default_code = "forbidden"


class TooManyRequestsError(UserError):
    """A rate limit was reached; ``retry_after`` says in how many seconds to try again."""

    default_code = "rate_limited"

    def __init__(self, message: str, *, retry_after: float, code: str | None = None):
        super().__init__(message, code=code)
        self.retry_after = retry_after


class RunError(AgentstageError):
    default_code = "run_error"


class ModelError(RunError):
    """A model call failed. ``retryable`` tells the resilience layer whether another try may help."""

    default_code = "model_error"

    def __init__(
        self,
        message: str,
        *,
        code: str | None = None,
        retryable: bool = False,
        retry_after: float | None = None,
        provider: str | None = None,
        details: dict[str, Any] | None = None,
    ):
        super().__init__(message, code=code, details=details)
        self.retryable = retryable
        self.retry_after = retry_after
        self.provider = provider
        self.streamed = False  # set when output had already reached the user: never retried then


class ToolError(RunError):
    default_code = "tool_error"


class LimitExceededError(RunError):
    default_code = "limit_exceeded"


class StoreError(RunError):
    """The store could not keep what a run wrote.

    ``store_write_failed``: the store refused this run's rows (the other runs of the same commit
    were kept); ``store_unavailable``: the database is locked or gone (try again after
    ``retry_after``); ``storage_full``: the disk holding the store is full."""

    default_code = "store_write_failed"

    def __init__(
        self,
        message: str,
        *,
        code: str | None = None,
        retry_after: float | None = None,
        details: dict[str, Any] | None = None,
    ):
        super().__init__(message, code=code, details=details)
        self.retry_after = retry_after
