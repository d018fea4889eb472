"""Live events between processes over Redis Streams: one stream per run, entry id = ``{seq}-0``.

A worker commits a run's events to the store (the source of truth) and then, through a queued
sink, appends them to the run's stream; the stream is trimmed by length and expires a while after
the run's terminal event. An API process streaming the run reads the store after the client's seq,
then tails the stream from there (``XREAD`` from ``{seq}-0`` is exactly "after seq"). Redis may lose
entries (a restart, a trimmed stream): readers check seqs and fall back to the store for any gap,
and poll the store while Redis cannot be reached, so nothing a client sees depends on Redis.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from agentstage.core.events import RunEvent
from agentstage.runtime.sinks import EventSink, QueuedSink

log = logging.getLogger("agentstage.distributed")

KEY_PREFIX = "agentstage:run:"
CONNECT_TIMEOUT = 0.5


def stream_key(run_id: str) -> str:
    return f"{KEY_PREFIX}{run_id}"


def _masked(url: str) -> str:
    """The URL without its password (for logs and health answers)."""
    scheme, sep, rest = url.partition("://")
    credentials, at, host = rest.rpartition("@")
    if not at or ":" not in credentials:
        return url
    return f"{scheme}{sep}{credentials.split(':', 1)[0]}:***@{host}"


def _fields(event: RunEvent) -> dict[str, str]:
    return {
        "t": event.type,
        "ts": event.ts.isoformat(),
        "d": event.data_json,
        "tr": event.trace_id or "",
        "sp": event.span_id or "",
    }


def _event(run_id: str, entry_id: str, fields: dict[str, str]) -> RunEvent:
    return RunEvent(
        run_id,
        int(entry_id.split("-", 1)[0]),
        datetime.fromisoformat(fields["ts"]),
        type=fields["t"],  # type: ignore[arg-type]
        data_json=fields["d"],
        trace_id=fields["tr"] or None,
        span_id=fields["sp"] or None,
    )


class RedisEventBus:
    def __init__(self, url: str, *, maxlen: int = 10_000, ttl: float = 3600.0):
        self.url = url
        self.maxlen = maxlen
        self.ttl = ttl
        self._redis: Any = None
        self._sink: QueuedSink | None = None
        self.unavailable = 0  # publishes and reads that found Redis unreachable (counted, not fatal)

    async def open(self) -> None:
        import redis.asyncio as redis

        self._redis = redis.from_url(
            self.url,
            decode_responses=True,
            socket_connect_timeout=CONNECT_TIMEOUT,
            socket_timeout=5.0,
            health_check_interval=5,
            max_connections=2000,
        )
        problem = await self.problem()
        if problem is not None:
            log.warning("%s; live events go through the store (polled) until it is back", problem)

    async def problem(self) -> str | None:
        """Why Redis cannot be used now (unreachable, refusing our credentials), or None."""
        import redis.exceptions

        if self._redis is None:
            return "Redis is not connected"
        try:
            await self._redis.ping()
        except (redis.exceptions.RedisError, OSError) as error:
            reason = " ".join(str(error).split()) or type(error).__name__
            return f"Redis at {_masked(self.url)} cannot be used: {reason}"
        return None

    async def close(self) -> None:
        if self._sink is not None:
            await self._sink.aclose(drain_seconds=2.0)
        if self._redis is not None:
            await self._redis.aclose()
            self._redis = None

    def publisher(self) -> EventSink:
        if self._sink is None:
            self._sink = QueuedSink("redis-streams", self._publish)
        return self._sink

    async def _publish(self, events: Sequence[RunEvent]) -> None:
        import redis.exceptions

        if self._redis is None:
            return
        pipe = self._redis.pipeline(transaction=False)
        for event in events:
            key = stream_key(event.run_id)
            pipe.xadd(key, _fields(event), id=f"{event.seq}-0", maxlen=self.maxlen, approximate=True)
            if event.terminal:
                pipe.expire(key, int(self.ttl))
        try:
            # An entry the stream already has (published again after a requeue) is refused by
            # Redis and left out; the others still land.
            await pipe.execute(raise_on_error=False)
        except (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError, OSError):
            self.unavailable += 1
            if self.unavailable == 1 or self.unavailable % 1000 == 0:
                log.warning("Redis cannot be reached; live events go through the store (polled) meanwhile")

    async def tail(self, run_id: str, after: int, wait: float) -> list[RunEvent] | None:
        import redis.exceptions

        if self._redis is None:
            return None
        key = stream_key(run_id)
        try:
            answer = await self._redis.xread({key: f"{after}-0"}, count=1000, block=max(int(wait * 1000), 1))
        except (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError, OSError):
            self.unavailable += 1
            return None
        except redis.exceptions.ResponseError as error:
            log.warning("reading the stream of run %s failed: %s", run_id, error)
            return None
        events: list[RunEvent] = []
        for _key, entries in answer or []:
            events.extend(_event(run_id, entry_id, fields) for entry_id, fields in entries)
        return events
