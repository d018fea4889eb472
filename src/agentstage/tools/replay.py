"""The replaying tool layer: tools that give back what the original run's tools returned.

Each :class:`ReplayTool` looks like the tool the original run had — the same name, version,
description and argument schema, so the model is told exactly what it was told then — but running
it only takes the next recorded ``tool.result`` from a shared :class:`ToolTape`. Nothing is
executed: no query, no program, no network. A call that does not match the recording (another
tool, other arguments, one call too many) is answered with a ``replay_diverged`` error; the
runtime's replay watch normally stops the run one event earlier, at the ``tool.call`` itself.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from agentstage.core.events import ErrorInfo, RunEvent, ToolCalled, ToolResulted
from agentstage.core.tools import Tool, ToolContext
from agentstage.errors import ToolError

NEVER_RAN = frozenset({"tool_not_found"})  # answered by the toolset itself: no tool was called


def _canonical(value: Any) -> str:
    return json.dumps(value, sort_keys=True, ensure_ascii=False, separators=(",", ":"), default=str)


@dataclass
class RecordedToolCall:
    tool: str  # name:version
    arguments: dict[str, Any]
    result: ToolResulted | None  # None: the run stopped while the tool ran


class ToolTape:
    """The original's tool calls in order; each replayed call takes the next one."""

    def __init__(self, calls: Sequence[RecordedToolCall]):
        self.calls = list(calls)
        self.position = 0

    @classmethod
    def from_events(cls, events: Iterable[RunEvent]) -> ToolTape:
        calls: dict[str, RecordedToolCall] = {}
        order: list[str] = []
        for event in events:
            match event.payload:
                case ToolCalled(call_id=call_id, tool=tool, arguments=arguments):
                    calls[call_id] = RecordedToolCall(tool, arguments, None)
                    order.append(call_id)
                case ToolResulted(call_id=call_id) as result if call_id in calls:
                    calls[call_id].result = result
                case _:
                    pass
        kept = [calls[c] for c in order]
        return cls(
            [
                c
                for c in kept
                if c.result is None or c.result.error is None or c.result.error.code not in NEVER_RAN
            ]
        )

    def take(self, tool: str, arguments: Mapping[str, Any]) -> Any:
        """The recorded output of this call (or raise its recorded error)."""
        if self.position >= len(self.calls):
            raise ToolError(
                f"the recording has no result for this call of {tool} (the original run made "
                f"{len(self.calls)} tool calls)",
                code="replay_diverged",
            )
        recorded = self.calls[self.position]
        self.position += 1
        if recorded.tool != tool or _canonical(recorded.arguments) != _canonical(arguments):
            raise ToolError(
                f"the replay called {tool} with {_canonical(arguments)}; the original called "
                f"{recorded.tool} with {_canonical(recorded.arguments)}",
                code="replay_diverged",
            )
        result = recorded.result
        if result is None:
            raise ToolError(f"the original run was stopped while {tool} ran", code="replay_diverged")
        if result.error is not None:
            raise _recorded_error(result.error)
        return result.output


def _recorded_error(error: ErrorInfo) -> ToolError:
    return ToolError(error.message, code=error.code)


# What a tool may tell the orchestrator about itself (worked examples, hints for the question,
# how its output is quoted back, the words that route a question to it): part of what the model is
# shown, so a replay must show the same.
GUIDANCE = frozenset({"action_examples", "string_grammars", "hints", "example_output", "quote", "keywords"})


class ReplayTool:
    """A stand-in for one tool of the original run, answering from the tape.

    Its guidance for the prompt comes from the installed tool of the same name and version
    (``guide``), when there is one: the model must be shown what it was shown then. A guide that
    changed since (new worked examples, another database) makes the replay diverge, as it should.
    The router's ``keywords`` (which tools a question calls for, hence which the prompt lists) come
    from the snapshot when it recorded them (version 3), so a tool that is no longer installed, or
    reads other data now, is still routed to as it was then."""

    def __init__(self, spec: Mapping[str, Any], tape: ToolTape, guide: Tool | None = None):
        self._name = str(spec["name"])
        self._version = str(spec["version"])
        self._description = str(spec.get("description") or "")
        self._category = str(spec.get("category") or "general")
        self._parameters: dict[str, Any] = dict(spec.get("parameters") or {})
        self.tape = tape
        self._guide = guide
        recorded = spec.get("keywords")
        self._keywords = tuple(str(k) for k in recorded) if isinstance(recorded, list) else None

    def __getattr__(self, name: str) -> Any:
        if name == "keywords" and self.__dict__.get("_keywords") is not None:
            return self.__dict__["_keywords"]
        guide = self.__dict__.get("_guide")
        if name in GUIDANCE and guide is not None:
            return getattr(guide, name)
        raise AttributeError(name)

    @property
    def name(self) -> str:
        return self._name

    @property
    def version(self) -> str:
        return self._version

    @property
    def description(self) -> str:
        return self._description

    @property
    def category(self) -> str:
        return self._category

    @property
    def parameters(self) -> dict[str, Any]:
        return self._parameters

    def validate_arguments(self, arguments: dict[str, Any]) -> dict[str, Any]:
        """Arguments are not judged again: the recorded result (or error) is what the call got."""
        return dict(arguments)

    async def run(self, arguments: dict[str, Any], context: ToolContext) -> Any:
        return self.tape.take(f"{self._name}:{self._version}", arguments)


def replay_tools(
    events: Sequence[RunEvent],
    specs: Iterable[Mapping[str, Any]],
    installed: Mapping[str, Tool] | None = None,
) -> list[Tool]:
    """The original run's tools, replaying its recorded results from one shared tape; each takes
    its prompt guidance from the ``installed`` tool of the same ``name:version``, if any."""
    tape = ToolTape.from_events(events)
    guides = installed or {}
    return [ReplayTool(spec, tape, guides.get(f"{spec['name']}:{spec['version']}")) for spec in specs]
