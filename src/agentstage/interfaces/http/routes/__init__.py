"""HTTP routes, one module per resource; each calls the runtime only."""

from __future__ import annotations

from typing import Any

from agentstage.interfaces.http.problems import TITLES
from agentstage.interfaces.http.schemas import Problem


def problems(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """Document error responses (rewritten to application/problem+json in the OpenAPI document)."""
    return {status: {"model": Problem, "description": TITLES.get(status, "Error")} for status in statuses}
