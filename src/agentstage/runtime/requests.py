"""What a door hands the run service: a run request, validated the same way for every door."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from agentstage.core.tools import validation_details
from agentstage.errors import InvalidInputError


class RunOptions(BaseModel):
    """Per-run overrides. Limits tighten or loosen the profile's; ``params`` go to the model."""

    model_config = ConfigDict(extra="forbid")
    max_steps: int | None = Field(default=None, ge=1, le=1000)
    max_tokens: int | None = Field(default=None, ge=1)
    max_duration: float | None = Field(default=None, gt=0, le=86_400)
    params: dict[str, Any] = Field(default_factory=dict, description="Model parameters (temperature, …).")
    tools: list[str] | None = Field(default=None, description="Tools the run may use (default: all).")
    idempotent: bool = Field(
        default=False,
        description="Safe to execute again from the start if its worker is lost (runtime.max_attempts).",
    )

    def limit_overrides(self) -> dict[str, Any]:
        fields = ("max_steps", "max_tokens", "max_duration")
        return {name: getattr(self, name) for name in fields if getattr(self, name) is not None}


class RunRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    input: str
    mode: str | None = None
    profile: str | None = None
    options: RunOptions = Field(default_factory=RunOptions)
    conversation_id: str | None = None
    correlation_id: str | None = None
    tenant: str = Field(default="default", description="The tenant the run belongs to (set by the door).")
    traceparent: str | None = Field(
        default=None,
        max_length=128,
        description="W3C traceparent of the caller's span: the run continues that trace (default: the "
        "current OpenTelemetry span, else a new trace).",
    )

    @classmethod
    def parse(cls, data: dict[str, Any]) -> RunRequest:
        """Validate a request from outside, turning pydantic's errors into one precise user error."""
        try:
            return cls.model_validate(data)
        except ValidationError as error:
            details = validation_details(error)
            summary = "; ".join(f"{d['field']}: {d['message']}" for d in details)
            raise InvalidInputError(f"invalid run request: {summary}", details={"errors": details}) from None
