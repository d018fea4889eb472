"""The baseline for benchmarks/http_gateway.py: a bare Starlette endpoint returning a fixed JSON body."""

from __future__ import annotations

import os

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

BODY = os.environ.get("BARE_BODY", "{}").encode()


async def run(request: Request) -> Response:
    await request.body()
    return Response(BODY, media_type="application/json")


app = Starlette(routes=[Route("/api/v1/agent/run", run, methods=["POST"])])
