"""How routes reach the runtime: the services live on the app's state, set up by its lifespan."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

from starlette.requests import HTTPConnection

from agentstage.access.guard import Guard
from agentstage.access.permissions import require
from agentstage.access.principals import Principal
from agentstage.errors import ForbiddenError
from agentstage.runtime.batches import BatchService
from agentstage.runtime.conversations import ConversationService
from agentstage.runtime.keys import KeyService
from agentstage.runtime.observe import Telemetry
from agentstage.runtime.service import RunService
from agentstage.settings import Settings


@dataclass
class Runtime:
    runs: RunService
    conversations: ConversationService
    batches: BatchService
    keys: KeyService
    guard: Guard
    telemetry: Telemetry
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


TENANT_HEADER = "x-agentstage-tenant"


def principal(connection: HTTPConnection) -> Principal:
    found: Principal = connection.scope["state"]["principal"]
    return found


def tenant_scope(connection: HTTPConnection) -> str | None:
    """The tenant this request reads and changes: the caller's own. An admin (``tenants.any``) may
    name another with ``X-Agentstage-Tenant: NAME``, or ``*`` for every tenant (None)."""
    caller = principal(connection)
    asked = connection.headers.get(TENANT_HEADER)
    if asked is None or asked == caller.tenant:
        return caller.tenant
    require(caller.permissions, "tenants.any")
    return None if asked == "*" else asked


def owner_tenant(connection: HTTPConnection) -> str:
    """The tenant new objects belong to: the scope, or the caller's own when acting across all."""
    scope = tenant_scope(connection)
    tenant = scope if scope is not None else principal(connection).tenant
    if tenant not in runtime(connection).settings.security.tenants:
        raise ForbiddenError(f"tenant {tenant!r} does not exist", code="unknown_tenant")
    return tenant


def request_id(connection: HTTPConnection) -> str | None:
    value = connection.scope.get("state", {}).get("request_id")
    return str(value) if value else None
