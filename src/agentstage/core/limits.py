"""Limits that end a run as ``failed`` with their own code."""

from __future__ import annotations

from pydantic import BaseModel, Field

from agentstage.core.messages import Usage
from agentstage.errors import LimitExceededError


class RunLimits(BaseModel):
    max_steps: int = Field(default=8, ge=1, le=1000, description="Model/tool steps a run may take.")
    max_tokens: int = Field(default=32_000, ge=1, description="Tokens (input + output) a run may spend.")
    max_duration: float = Field(default=300.0, gt=0, description="Seconds a run may take in all.")

    def check_tokens(self, usage: Usage) -> None:
        if usage.total_tokens > self.max_tokens:
            raise LimitExceededError(
                f"the run used {usage.total_tokens} tokens, over its limit of {self.max_tokens}",
                code="max_tokens",
            )

    def steps_exhausted(self, steps: int) -> LimitExceededError:
        return LimitExceededError(
            f"the run reached max_steps={self.max_steps} without an answer ({steps} steps taken)",
            code="max_steps",
        )
