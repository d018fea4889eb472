"""How a run judges its own steps: repeated failures, failed tools, fragments of answers.

Small models fail in loops: the same invalid call again and again until ``max_steps``. A repeat
changes something: the second time the model is told what it already tried (and sampling turns
greedy); the third time the run stops with ``repeated_failure`` and says what kept failing. A run
whose every tool call failed does not end ``completed`` on whatever the model says next, and an
answer that is empty or was cut off is not an answer.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from agentstage.core.messages import ToolCall
from agentstage.errors import ModelError, ToolError

REPAIR_AFTER = 2
STOP_AFTER = 3
LARGER_MODEL_HINT = "a profile with a larger model may do better (see `agent profile list`)"


def model_label(model: Any) -> str:
    """``provider/model`` of a model (the primary one of a chain), for messages."""
    return f"{model.provider}/{model.model_name}"


def signature(call: ToolCall) -> str:
    return f"{call.name} {json.dumps(call.arguments, sort_keys=True, ensure_ascii=False)}"


@dataclass
class FailureLog:
    """What went wrong so far in one run, to notice repeats and all-failed runs."""

    model_label: str
    repeats: dict[str, int] = field(default_factory=dict)
    tool_calls: int = 0
    tool_failures: list[str] = field(default_factory=list)

    def record(self, key: str) -> int:
        """Count one failure; returns how many times this exact failure has happened."""
        self.repeats[key] = self.repeats.get(key, 0) + 1
        return self.repeats[key]

    def repair_note(self, what: str, error: str) -> str:
        return (
            f"You already tried this and it failed the same way: {what} → {error}. "
            "Do something different: fix the arguments, use another tool, or answer."
        )

    def repeated(self, what: str, error: str, times: int) -> ModelError:
        return ModelError(
            f"{self.model_label} repeated the same failing action {times} times ({what}: {error}); "
            f"{LARGER_MODEL_HINT}",
            code="repeated_failure",
        )

    def tool_result(self, call: ToolCall, error: Any | None) -> None:
        self.tool_calls += 1
        if error is not None:
            self.tool_failures.append(f"{call.name}: {getattr(error, 'message', error)}")

    def all_tools_failed(self) -> ToolError | None:
        """An error when tools were called and none of them succeeded."""
        if self.tool_calls == 0 or len(self.tool_failures) < self.tool_calls:
            return None
        unique = list(dict.fromkeys(self.tool_failures))
        shown = "; ".join(unique[:3]) + (f"; and {len(unique) - 3} more" if len(unique) > 3 else "")
        return ToolError(
            f"every tool call of this run failed ({self.tool_calls} of {self.tool_calls}): {shown}",
            code="tool_steps_failed",
        )


def check_answer(text: str, finish_reason: str, model_label: str) -> str:
    """The answer as given, or an ``incomplete_answer`` error for an empty or cut-off one."""
    if finish_reason == "length":
        raise ModelError(
            f"{model_label} was cut off before finishing its answer (it reached max_tokens): "
            f"{text[-80:]!r}; raise max_tokens or use {LARGER_MODEL_HINT[2:]}",
            code="incomplete_answer",
        )
    if not any(char.isalnum() for char in text):
        raise ModelError(
            f"{model_label} gave no usable answer (got {text[:80]!r}); {LARGER_MODEL_HINT}",
            code="incomplete_answer",
        )
    return text
