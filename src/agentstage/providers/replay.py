"""The replay provider: a model that answers from a recorded run instead of thinking.

Every model call of a run leaves ``model.request``, its ``model.retry`` / ``model.fallback``
notices, the ``message.delta`` chunks it streamed and its ``model.response`` in the run's log.
:class:`ReplayModel` plays them back in order — the same chunks, the same tool calls, the same
token counts — without a model, a network or a delay. A call the original made but never got an
answer to (it failed) fails again with the original's error; a call beyond the recording fails
with ``replay_diverged``.

As a configured provider (``{"type": "replay", "recording": "run.json"}``) it replays the model
answers of an exported run (``agent snapshot export``), e.g. to test a prompt change offline.
The runtime's exact replay (``agent replay RUN``) builds it straight from the stored log.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from agentstage.core.events import (
    MessageDelta,
    ModelFellBack,
    ModelRequested,
    ModelResponded,
    ModelRetried,
    RunEvent,
    RunFailed,
    parse_payload,
)
from agentstage.core.messages import Message, ToolCall
from agentstage.core.model import (
    FallbackNotice,
    ModelChunk,
    ModelRequest,
    ModelResponse,
    RetryNotice,
    TextDelta,
    ToolCallChunk,
)
from agentstage.errors import ConfigError, ModelError

PROVIDER = "replay"


@dataclass
class RecordedCall:
    """One model call as the log recorded it."""

    model: str
    chunks: list[TextDelta | RetryNotice | FallbackNotice] = field(default_factory=list)
    response: ModelResponded | None = None


@dataclass
class Recording:
    """The model calls of one run, in order, and how the run ended if a call never got an answer."""

    calls: list[RecordedCall]
    failure: tuple[str, str] | None = None  # (code, message) of the run's failure

    @classmethod
    def from_events(cls, events: Iterable[RunEvent]) -> Recording:
        calls: dict[str, RecordedCall] = {}
        failure = None
        for event in events:
            payload = event.payload
            match payload:
                case ModelRequested(call_id=call_id, model=model):
                    calls[call_id] = RecordedCall(model=model)
                case MessageDelta(call_id=call_id, text=text) if call_id in calls:
                    calls[call_id].chunks.append(TextDelta(text=text))
                case ModelRetried(call_id=call_id) if call_id in calls:
                    calls[call_id].chunks.append(
                        RetryNotice(
                            provider=payload.provider,
                            attempt=payload.attempt,
                            code=payload.error.code,
                            message=payload.error.message,
                            delay=payload.delay,
                        )
                    )
                case ModelFellBack(call_id=call_id) if call_id in calls:
                    calls[call_id].chunks.append(
                        FallbackNotice(
                            from_provider=payload.from_provider,
                            to_provider=payload.to_provider,
                            code=payload.reason.code,
                            message=payload.reason.message,
                        )
                    )
                case ModelResponded(call_id=call_id) if call_id in calls:
                    calls[call_id].response = payload
                case RunFailed(error=error):
                    failure = (error.code, error.message)
                case _:
                    pass
        return cls(list(calls.values()), failure)


class ReplayModel:
    """One instance per run: its position in the recording is that run's own."""

    def __init__(self, recording: Recording, *, model_name: str | None = None, native_tools: bool = True):
        self.recording = recording
        self.provider = PROVIDER
        first = recording.calls[0].model if recording.calls else "recording"
        self.model_name = model_name or first
        self.native_tools = native_tools
        self._position = 0

    @classmethod
    def from_events(
        cls, events: Iterable[RunEvent], *, model_name: str | None = None, native_tools: bool = True
    ) -> ReplayModel:
        return cls(Recording.from_events(events), model_name=model_name, native_tools=native_tools)

    async def stream(self, request: ModelRequest) -> AsyncIterator[ModelChunk]:
        if self._position >= len(self.recording.calls):
            raise ModelError(
                f"the recording has no answer for model call {self._position + 1} (the original run made "
                f"{len(self.recording.calls)})",
                code="replay_diverged",
                provider=self.provider,
            )
        call = self.recording.calls[self._position]
        self._position += 1
        response = call.response
        content = response.message.content if response is not None else None
        streamed = "".join(c.text for c in call.chunks if isinstance(c, TextDelta))
        for chunk in call.chunks:
            if isinstance(chunk, TextDelta) and content is not None and streamed != content:
                continue  # not the answer's text (a JSON action): given whole below
            yield chunk
        if response is None:
            code, message = self.recording.failure or ("replay_diverged", "the recording ends in this call")
            raise ModelError(message, code=code, provider=self.provider)
        if content and streamed != content:
            yield TextDelta(text=content)
        for tool_call in response.tool_calls:
            yield ToolCallChunk(tool_call=ToolCall.model_validate(tool_call.model_dump()))
        yield ModelResponse(
            message=Message.model_validate(response.message.model_dump()),
            usage=response.usage.model_copy(),
            finish_reason=response.finish_reason,
            provider=self.provider,
            model=response.model,
        )


def load_recording(source: str | Path) -> tuple[Recording, bool]:
    """The model calls of an exported run file, and whether its model called tools natively."""
    path = Path(source).expanduser()
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except OSError as error:
        raise ConfigError(f"cannot read recording {str(path)!r}: {error.strerror}") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise ConfigError(f"recording {str(path)!r} is not JSON: {error}") from None
    if not isinstance(document, dict) or not isinstance(document.get("events"), list):
        raise ConfigError(f"recording {str(path)!r} is not an exported run (agent snapshot export)")
    try:
        events = [_event(raw) for raw in document["events"]]
    except (ValueError, TypeError, KeyError) as error:
        raise ConfigError(f"recording {str(path)!r} has an invalid event: {error}") from None
    profile = (document.get("snapshot") or {}).get("profile") or {}
    native = profile.get("native_tools")
    return Recording.from_events(events), native if isinstance(native, bool) else True


def _event(raw: Any) -> RunEvent:
    return RunEvent(
        str(raw["run_id"]),
        int(raw["seq"]),
        datetime.fromisoformat(str(raw["ts"])),
        parse_payload(str(raw["type"]), dict(raw["data"])),
    )
