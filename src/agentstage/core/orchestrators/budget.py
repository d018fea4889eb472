"""Fit a conversation into the model's context window before it is sent.

Models that say how big their window is (``context_window``) and can count a prompt
(``count_tokens(messages)``) get their messages trimmed here, in this order, until the prompt
plus room for the answer fits:

1. long messages that may be shortened (observations, old turns) are cut to a share of the window;
2. such messages are dropped, oldest first (worked examples and old conversation history go
   before recent tool results), replaced by one note saying how many were left out;
3. the room kept for the answer shrinks, down to ``min(max_tokens, MIN_ANSWER)``.

What must stay (the system prompt, the user's input, the latest observation) is never cut; when
it alone does not fit, the run fails at once with ``context_overflow``, naming the window and the
input's size, instead of letting llama.cpp raise or silently cut the answer.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from agentstage.core.messages import Message
from agentstage.errors import LimitExceededError

MIN_ANSWER = 256
SHARE_PER_MESSAGE = 0.25
TRUNCATED = " …(shortened to fit the context window)"


def window_of(model: Any) -> tuple[int | None, Callable[[list[Message]], int] | None]:
    window = getattr(model, "context_window", None)
    counter = getattr(model, "count_tokens", None)
    if not isinstance(window, int) or window <= 0 or not callable(counter):
        return None, None
    return window, counter


def fit_messages(
    model: Any, messages: Sequence[Message], *, pinned: set[int], max_tokens: int
) -> tuple[list[Message], int]:
    """Messages that fit, and the answer budget left (``max_tokens`` or less).

    ``pinned`` are indices that must be kept whole. Raises ``context_overflow`` when they alone
    leave less than ``min(max_tokens, MIN_ANSWER)`` tokens for the answer."""
    window, count = window_of(model)
    if window is None or count is None:
        return list(messages), max_tokens
    floor = min(max_tokens, MIN_ANSWER)
    current = list(messages)
    keep = set(pinned)
    used = count(current)
    if used + max_tokens <= window:
        return current, max_tokens
    kept_only = [m for i, m in enumerate(current) if i in keep]
    needed = count(kept_only)
    if needed + floor > window:
        largest = max((len(m.content) for m in kept_only if m.role != "system"), default=0)
        raise context_overflow(needed, window, floor, inputs=largest)
    current, keep = _shorten(current, keep, window)
    current, keep = _drop(current, keep, count, window - max_tokens)
    used = count(current)
    return current, max(floor, min(max_tokens, window - used))


def context_overflow(needed: int, window: int, floor: int, *, inputs: int) -> LimitExceededError:
    return LimitExceededError(
        f"the input ({inputs} characters) does not fit the model's context window of {window} tokens: "
        f"with the prompt it needs {needed} tokens, plus {floor} for the answer; "
        "shorten the input or use a profile with a larger model",
        code="context_overflow",
        details={"context_window": window, "input_tokens": needed, "input_characters": inputs},
    )


def _shorten(messages: list[Message], keep: set[int], window: int) -> tuple[list[Message], set[int]]:
    limit = int(window * SHARE_PER_MESSAGE * 3)  # characters: about 3 per token
    shortened = []
    for index, message in enumerate(messages):
        if index not in keep and len(message.content) > limit:
            message = message.model_copy(update={"content": message.content[:limit] + TRUNCATED})
        shortened.append(message)
    return shortened, keep


def _drop(
    messages: list[Message], keep: set[int], count: Callable[[list[Message]], int], budget: int
) -> tuple[list[Message], set[int]]:
    droppable = [i for i in range(len(messages)) if i not in keep]
    dropped: set[int] = set()
    for index in droppable:
        if count(_without(messages, dropped)) <= budget:
            break
        dropped.add(index)
    if not dropped:
        return messages, keep
    result = _without(messages, dropped)
    note = Message.user(f"({len(dropped)} earlier messages were left out to fit the context window.)")
    first_kept = next((i for i, m in enumerate(result) if m.role != "system"), len(result))
    result.insert(first_kept, note)
    return result, set()


def _without(messages: list[Message], dropped: set[int]) -> list[Message]:
    return [m for i, m in enumerate(messages) if i not in dropped]
