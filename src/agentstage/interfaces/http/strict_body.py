"""Request bodies read as strict JSON (:mod:`agentstage.core.strict_json`) by every route.

FastAPI parses a JSON body with ``Request.json()``; routes made by :class:`StrictJSONRoute` get a
request whose ``json()`` refuses ``NaN``/``Infinity`` and unpaired surrogates, so such a body is
answered like any malformed one (400 ``malformed_json``, saying where), before a run is started or
a conversation created."""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from typing import Any

from fastapi.routing import APIRoute
from starlette.requests import Request
from starlette.responses import Response

from agentstage.core import strict_json


class StrictJSONRequest(Request):
    async def json(self) -> Any:
        if not hasattr(self, "_json"):
            self._json = strict_json.loads(await self.body())
        return self._json


class StrictJSONRoute(APIRoute):
    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def strict(request: Request) -> Response:
            return await handler(StrictJSONRequest(request.scope, request.receive))

        return strict
