"""The one permission table: every route is in it, and every route and role answers as it says.

The matrix is generated from the table, so a new route or a changed permission is checked
without editing this file; a route the table does not list fails the walk."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
from websockets.sync.client import connect

from agentstage.access.permissions import BUILTIN_ROLES, GRPC, HTTP, PERMISSIONS, PUBLIC, WEBSOCKET
from agentstage.settings import load_settings

from .conftest import ROLES, SecureServer


def app_routes(home: Path) -> tuple[set[tuple[str, str]], set[str]]:
    """Every (method, path) and WebSocket path the real app serves, nested routers included."""
    from agentstage.interfaces.http.app import create_app

    app = create_app(load_settings(environ={"AGENT_HOME": str(home)}))
    http: set[tuple[str, str]] = set()
    sockets: set[str] = set()
    pending = list(app.router.routes)
    while pending:
        route = pending.pop()
        methods: set[str] | None = getattr(route, "methods", None)
        path: str | None = getattr(route, "path", None)
        if hasattr(route, "original_router"):  # an included router: walk into it
            pending.extend(route.original_router.routes)
        elif methods and path is not None:
            http.update((m, path) for m in methods if m != "HEAD")
        elif path is not None:
            sockets.add(path)
    return http, sockets


def test_every_route_and_socket_is_in_the_table(tmp_path: Path) -> None:
    http, sockets = app_routes(tmp_path)
    assert len(http) > 20 and sockets  # the walk found the real routes
    assert sorted(http - set(HTTP)) == [], "routes without an entry in access/permissions.py"
    assert sorted(sockets - set(WEBSOCKET)) == [], "WebSocket endpoints without an entry"
    for permission in [*HTTP.values(), *GRPC.values()]:
        assert permission == PUBLIC or permission in PERMISSIONS
    for frames in WEBSOCKET.values():
        assert all(p is None or p in PERMISSIONS for p in frames.values())


def test_every_grpc_method_of_the_protos_is_in_the_table() -> None:
    protos = list(Path(__file__).resolve().parents[2].glob("protos/**/*.proto"))
    for proto in protos:
        text = proto.read_text(encoding="utf-8")
        package = re.search(r"^package\s+([\w.]+);", text, re.M)
        for service, body in re.findall(r"service\s+(\w+)\s*\{(.*?)\n\}", text, re.S):
            for method in re.findall(r"rpc\s+(\w+)\s*\(", body):
                name = f"/{package[1] if package else ''}.{service}/{method}".replace("/.", "/")
                assert name in GRPC, f"{name} (from {proto.name}) has no permission"
    assert {name.split("/")[1] for name in GRPC} == {
        "agentstage.v1.AgentService", "agentstage.v1.ToolService", "agentstage.v1.ConfigService",
    }  # fmt: skip


def concrete(template: str) -> str:
    return re.sub(r"\{[^}]+\}", "nope", template)


def expected(role: str | None, permission: str) -> str:
    if permission == PUBLIC:
        return "allowed"
    if role is None:
        return "unauthorized"
    return "allowed" if permission in BUILTIN_ROLES[role] else "forbidden"


MATRIX = [
    (method, template, permission, role)
    for (method, template), permission in sorted(HTTP.items())
    for role in (None, *ROLES)
]


@pytest.mark.parametrize(("method", "template", "permission", "role"), MATRIX)
def test_permission_matrix(
    secure: SecureServer, method: str, template: str, permission: str, role: str | None
) -> None:
    with secure.as_role(role) as client:
        body: dict[str, Any] = {"json": {}} if method in ("POST", "PUT") else {}
        if template == "/api/v1/config" and method == "PUT":
            body = {"json": {"description": "matrix"}}
        response = client.request(method, concrete(template), **body)
    outcome = expected(role, permission)
    if outcome == "unauthorized":
        assert response.status_code == 401, response.text
        assert response.json()["code"] == "unauthorized"
    elif outcome == "forbidden":
        assert response.status_code == 403, response.text
        problem = response.json()
        assert problem["code"] == "forbidden" and problem["permission"] == permission
        assert permission in problem["detail"]
    else:
        assert response.status_code not in (401, 403), response.text


def ws_url(server: SecureServer, path: str) -> str:
    return server.url.replace("http://", "ws://") + path


WS_MATRIX = [
    (path, frame, permission, role)
    for path, frames in sorted(WEBSOCKET.items())
    for frame, permission in sorted(frames.items())
    if frame not in ("ping", "pong")
    for role in ROLES
]


@pytest.mark.parametrize(("path", "frame", "permission", "role"), WS_MATRIX)
def test_websocket_frame_matrix(
    secure: SecureServer, path: str, frame: str, permission: str, role: str
) -> None:
    headers = {"Authorization": f"Bearer {secure.keys[role]}"}
    with connect(ws_url(secure, path), additional_headers=headers, open_timeout=10) as socket:
        socket.send(json.dumps({"type": frame}))
        answer = json.loads(socket.recv(timeout=10))
    if permission in BUILTIN_ROLES[role]:
        assert answer.get("code") != "forbidden", answer
    else:
        assert answer["type"] == "error" and answer["code"] == "forbidden"
        assert answer["permission"] == permission
