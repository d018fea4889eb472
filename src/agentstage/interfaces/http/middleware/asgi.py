"""Small helpers shared by the middleware."""

from __future__ import annotations

from typing import Any

from starlette.types import Scope

OPEN_PREFIXES = ("/health/", "/metrics", "/openapi.json", "/docs", "/redoc")


def header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope.get("headers", []):
        if key == name:
            return str(value.decode("latin-1"))
    return None


def state(scope: Scope) -> dict[str, Any]:
    return scope.setdefault("state", {})  # type: ignore[no-any-return]


def is_open(path: str) -> bool:
    return path.startswith(OPEN_PREFIXES)
