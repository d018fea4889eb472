"""A token bucket per API key (per client address when auth is off): 429 with ``Retry-After``."""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

from starlette.types import ASGIApp, Receive, Scope, Send

from agentstage.interfaces.http.middleware.asgi import is_open, state
from agentstage.interfaces.http.problems import problem


@dataclass
class Bucket:
    capacity: float
    tokens: float
    updated: float

    def take(self, now: float, per_second: float) -> float:
        """Take one token; return 0 when allowed, else the seconds until one is available."""
        self.tokens = min(self.capacity, self.tokens + (now - self.updated) * per_second)
        self.updated = now
        if self.tokens >= 1:
            self.tokens -= 1
            return 0.0
        return (1 - self.tokens) / per_second


class RateLimitMiddleware:
    def __init__(self, app: ASGIApp, default_per_minute: int):
        self.app = app
        self.default_per_minute = default_per_minute
        self._buckets: dict[str, Bucket] = {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or is_open(scope["path"]):
            await self.app(scope, receive, send)
            return
        info = state(scope)
        per_minute = info.get("api_key_rpm") or self.default_per_minute
        client = scope.get("client") or ("unknown", 0)
        identity = info.get("api_key_name") or f"client:{client[0]}"
        now = time.monotonic()
        bucket = self._buckets.get(identity)
        if bucket is None or bucket.capacity != per_minute:
            bucket = self._buckets[identity] = Bucket(per_minute, per_minute, now)
        wait = bucket.take(now, per_minute / 60)
        if wait > 0:
            retry_after = max(1, math.ceil(wait))
            response = problem(
                429,
                "rate_limited",
                f"more than {per_minute} requests per minute; retry in {retry_after}s",
                instance=scope["path"],
                request_id=info.get("request_id"),
                headers={"Retry-After": str(retry_after)},
            )
            await response(scope, receive, send)
            return
        await self.app(scope, receive, send)
