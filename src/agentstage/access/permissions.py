"""The one permission table: every HTTP route, WebSocket frame type and gRPC method → a permission.

Roles are sets of permissions. ``viewer`` reads its tenant's runs, conversations, tools and the
masked configuration; ``operator`` also starts and cancels runs, talks in conversations and
executes tools; ``admin`` also changes the configuration, registers tool servers, manages keys,
reads the audit log and acts across tenants; ``monitor`` only scrapes ``/metrics``. Custom roles (``security.roles``) are named sets of
these permissions. ``config.security`` — changing the settings that guard the host (allow-lists,
authentication, the store) over the network — belongs to no built-in role: those settings live in
files on the host.

A route missing from this table is refused for everyone (and a test fails), so a new route cannot
be reachable by accident.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping

from agentstage.errors import ForbiddenError

PUBLIC = "public"  # no credential needed (health probes, the API description)

PERMISSIONS: dict[str, str] = {
    "runs.read": "read runs, their events, snapshots and batches",
    "runs.start": "start runs and batches",
    "runs.cancel": "cancel runs",
    "conversations.read": "read conversations and their history",
    "conversations.write": "create, talk in and delete conversations",
    "tools.read": "list and describe tools",
    "tools.execute": "run a tool directly",
    "tools.register": "connect or remove tool servers and tools (runs programs, reaches the network)",
    "config.read": "read the configuration (secrets masked) and profiles",
    "config.write": "change the configuration and profiles",
    "config.security": "change host-guarding settings over the network (no built-in role has it)",
    "keys.manage": "create, rotate and revoke API keys",
    "audit.read": "read the audit log",
    "tenants.any": "act on other tenants' objects, explicitly",
    "metrics.read": "scrape /metrics (counts across all tenants; public when metrics.public is true)",
}

_VIEWER = frozenset({"runs.read", "conversations.read", "tools.read", "config.read"})
_OPERATOR = _VIEWER | {"runs.start", "runs.cancel", "conversations.write", "tools.execute"}
_ADMIN = frozenset(PERMISSIONS) - {"config.security"}
_MONITOR = frozenset({"metrics.read"})  # a scraper's key (Prometheus): metrics and nothing else
BUILTIN_ROLES: dict[str, frozenset[str]] = {
    "viewer": _VIEWER,
    "operator": _OPERATOR,
    "admin": _ADMIN,
    "monitor": _MONITOR,
}

# HTTP routes by (method, path template). HEAD is checked as GET.
HTTP: dict[tuple[str, str], str] = {
    ("POST", "/api/v1/agent/run"): "runs.start",
    ("POST", "/api/v1/agent/run/stream"): "runs.start",
    ("POST", "/api/agent/run"): "runs.start",  # the unversioned alias (JSON or SSE by Accept)
    ("POST", "/api/v1/agent/batch"): "runs.start",
    ("GET", "/api/v1/agent/batch/{batch_id}"): "runs.read",
    ("GET", "/api/v1/agent/status/{run_id}"): "runs.read",
    ("DELETE", "/api/v1/agent/cancel/{run_id}"): "runs.cancel",
    ("GET", "/api/v1/agent/runs"): "runs.read",
    ("GET", "/api/v1/agent/runs/{run_id}/events"): "runs.read",
    ("GET", "/api/v1/snapshots/diff"): "runs.read",
    ("GET", "/api/v1/snapshots/{run_id}"): "runs.read",
    ("GET", "/api/v1/snapshots/{run_id}/export"): "runs.read",
    ("POST", "/api/v1/snapshots/{run_id}/replay"): "runs.start",
    ("POST", "/api/v1/conversations"): "conversations.write",
    ("GET", "/api/v1/conversations/{conversation_id}"): "conversations.read",
    ("DELETE", "/api/v1/conversations/{conversation_id}"): "conversations.write",
    ("POST", "/api/v1/conversations/{conversation_id}/messages"): "conversations.write",
    ("GET", "/api/v1/conversations/{conversation_id}/history"): "conversations.read",
    ("GET", "/api/v1/tools"): "tools.read",
    ("POST", "/api/v1/tools/register"): "tools.register",
    ("GET", "/api/v1/tools/{tool_id}"): "tools.read",
    ("POST", "/api/v1/tools/{tool_id}/execute"): "tools.execute",
    ("DELETE", "/api/v1/tools/{tool_id}"): "tools.register",
    ("GET", "/api/v1/config"): "config.read",
    ("PUT", "/api/v1/config"): "config.write",
    ("GET", "/api/v1/config/profiles"): "config.read",
    ("POST", "/api/v1/config/profiles"): "config.write",
    ("GET", "/api/v1/audit"): "audit.read",
    ("GET", "/health/live"): PUBLIC,
    ("GET", "/health/ready"): PUBLIC,
    ("GET", "/health/startup"): PUBLIC,
    ("GET", "/metrics"): "metrics.read",
    ("GET", "/openapi.json"): PUBLIC,
    ("GET", "/docs"): PUBLIC,
    ("GET", "/docs/oauth2-redirect"): PUBLIC,
    ("GET", "/redoc"): PUBLIC,
}

# WebSocket endpoints: opening one needs a credential; each client frame type needs its permission.
# ``None`` = allowed to any authenticated caller (keep-alive frames).
WEBSOCKET: dict[str, dict[str, str | None]] = {
    "/ws/agent/stream": {
        "run": "runs.start",
        "cancel": "runs.cancel",
        "resume": "runs.read",
        "ping": None,
        "pong": None,
    },
    "/ws/agent/chat": {
        "message": "conversations.write",
        "reset": "conversations.write",
        "cancel": "runs.cancel",
        "resume": "runs.read",
        "ping": None,
        "pong": None,
    },
}

# gRPC methods by full name (/package.Service/Method).
GRPC: dict[str, str] = {
    "/agentstage.v1.AgentService/Execute": "runs.start",
    "/agentstage.v1.AgentService/ExecuteStream": "runs.start",
    "/agentstage.v1.AgentService/Resume": "runs.read",
    "/agentstage.v1.AgentService/GetStatus": "runs.read",
    "/agentstage.v1.AgentService/Cancel": "runs.cancel",
    "/agentstage.v1.AgentService/Chat": "conversations.write",
    "/agentstage.v1.ToolService/ListTools": "tools.read",
    "/agentstage.v1.ToolService/ExecuteTool": "tools.execute",
    "/agentstage.v1.ToolService/RegisterTool": "tools.register",
    "/agentstage.v1.ConfigService/GetConfig": "config.read",
    "/agentstage.v1.ConfigService/ListProfiles": "config.read",
}

# Changes that must be durable in the audit log before the caller hears they happened.
SENSITIVE = frozenset({"tools.register", "config.write", "config.security", "keys.manage"})


def http_permission(method: str, path_template: str) -> str | None:
    """The permission of a route, or None when the table does not list it (refused)."""
    return HTTP.get(("GET" if method == "HEAD" else method, path_template))


_PARAM = re.compile(r"\{[^}/]+\}")
_COMPILED = [
    (method, re.compile("^" + _PARAM.sub("[^/]+", re.escape(template).replace(r"\{", "{").replace(r"\}", "}")) + "$"),
     template, permission)
    for (method, template), permission in HTTP.items()
]  # fmt: skip


def match_http(method: str, path: str) -> tuple[str, str] | None:
    """(path template, permission) of the table entry a concrete request path falls under."""
    method = "GET" if method == "HEAD" else method
    for entry_method, pattern, template, permission in _COMPILED:
        if entry_method == method and pattern.match(path):
            return template, permission
    return None


def websocket_permission(path: str, frame_type: object) -> str | None:
    """The permission of a client frame; raises ForbiddenError for a frame type not in the table."""
    frames = WEBSOCKET.get(path, {})
    if not isinstance(frame_type, str) or frame_type not in frames:
        raise ForbiddenError(
            f"frame type {frame_type!r} is not in the permission table for {path!r}", code="forbidden"
        )
    return frames[frame_type]


def check_permissions(names: Iterable[str], where: str) -> None:
    unknown = sorted(set(names) - set(PERMISSIONS))
    if unknown:
        raise ValueError(f"{where}: unknown permission(s) {', '.join(map(repr, unknown))}")


class RoleTable:
    """Built-in roles plus the custom ones from ``security.roles``."""

    def __init__(self, custom: Mapping[str, Iterable[str]] | None = None):
        self.roles: dict[str, frozenset[str]] = dict(BUILTIN_ROLES)
        for name, permissions in (custom or {}).items():
            if name in BUILTIN_ROLES:
                raise ValueError(f"security.roles: {name!r} is a built-in role and cannot be redefined")
            check_permissions(permissions, f"security.roles.{name}")
            self.roles[name] = frozenset(permissions)

    def permissions(self, roles: Iterable[str]) -> frozenset[str]:
        """The union of the roles' permissions; an unknown role is refused (403 unknown_role)."""
        granted: set[str] = set()
        for role in roles:
            if role not in self.roles:
                known = ", ".join(sorted(self.roles))
                raise ForbiddenError(f"role {role!r} does not exist (roles: {known})", code="unknown_role")
            granted |= self.roles[role]
        return frozenset(granted)


def require(permissions: frozenset[str], permission: str) -> None:
    """Raise 403 ``forbidden`` naming the missing permission."""
    if permission not in permissions:
        raise ForbiddenError(
            f"this needs the permission {permission!r} ({PERMISSIONS.get(permission, 'unlisted')})",
            code="forbidden",
            details={"permission": permission},
        )
