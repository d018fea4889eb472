"""How routes reach the runtime: the services live on the app's state, set up by its lifespan."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

from starlette.requests import HTTPConnection

from agentstage.access.guard import Guard
from agentstage.runtime.batches import BatchService
from agentstage.runtime.conversations import ConversationService
from agentstage.runtime.keys import KeyService
from agentstage.runtime.service import RunService
from agentstage.settings import Settings


@dataclass
class Runtime:
    runs: RunService
    conversations: ConversationService
    batches: BatchService
    keys: KeyService
    guard: Guard
    started: bool = False
    background: set[asyncio.Task[Any]] = field(default_factory=set)

    @property
    def settings(self) -> Settings:
        """The service's current settings (they change when the config is updated)."""
        return self.runs.settings

    def spawn(self, coroutine: Any) -> None:
        """Run work that must outlive a request (cancel on disconnect), keeping a reference."""
        task = asyncio.get_running_loop().create_task(coroutine)
        self.background.add(task)
        task.add_done_callback(self.background.discard)


def runtime(connection: HTTPConnection) -> Runtime:
    found: Runtime = connection.app.state.runtime
    return found


def request_id(connection: HTTPConnection) -> str | None:
    value = connection.scope.get("state", {}).get("request_id")
    return str(value) if value else None
