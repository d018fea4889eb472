"""Orchestration modes. Each turns an input into a stream of event drafts and a final output."""

from agentstage.core.orchestrators.base import AgentContext, Orchestrator
from agentstage.core.orchestrators.chat import ChatOrchestrator
from agentstage.core.orchestrators.planner import PlannerOrchestrator
from agentstage.core.orchestrators.react import ReactOrchestrator
from agentstage.core.orchestrators.routing import choose_mode
from agentstage.errors import UnknownModeError
from agentstage.types import Mode

ORCHESTRATORS: dict[Mode, type[Orchestrator]] = {
    Mode.CHAT: ChatOrchestrator,
    Mode.REACT: ReactOrchestrator,
    Mode.PLANNER: PlannerOrchestrator,
}


def parse_mode(value: str) -> Mode:
    try:
        return Mode(value)
    except ValueError:
        choices = ", ".join(m.value for m in Mode)
        raise UnknownModeError(f"unknown mode {value!r} (choose one of: {choices})") from None


def orchestrator_for(mode: Mode) -> Orchestrator:
    if mode is Mode.AUTO:
        raise UnknownModeError("mode 'auto' must be resolved with choose_mode() before running")
    return ORCHESTRATORS[mode]()


__all__ = [
    "ORCHESTRATORS",
    "AgentContext",
    "ChatOrchestrator",
    "Orchestrator",
    "PlannerOrchestrator",
    "ReactOrchestrator",
    "choose_mode",
    "orchestrator_for",
    "parse_mode",
]
