"""How the SQL store reads, shared by the store and its table mixins.

SQLite reads run whole on the store's read threads with a plain connection: one thread hand-over
per read, where aiosqlite makes one per step of a query (execute, fetch, close, the pool's
rollback: five, ~1 ms of CPU for a lookup SQLite answers in well under 0.1 ms). PostgreSQL reads
run the same work function through the async pool (``run_sync``).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

from sqlalchemy.engine import Connection, Engine, Row
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlalchemy.sql import Executable

T = TypeVar("T")


class Reads:
    """Set by the store when it opens an SQLite database; ``None`` on PostgreSQL."""

    _read_engine: Engine | None = None
    _read_threads: ThreadPoolExecutor | None = None

    @property
    def engine(self) -> AsyncEngine:
        raise NotImplementedError

    async def _read(self, work: Callable[[Connection], T]) -> T:
        """Run ``work`` on a connection of its own: SQLite on the read threads, PostgreSQL on the pool."""
        engine, threads = self._read_engine, self._read_threads
        if engine is not None and threads is not None:
            return await asyncio.get_running_loop().run_in_executor(threads, _read_with, engine, work)
        async with self.engine.connect() as connection:
            return await connection.run_sync(work)

    async def _rows(self, query: Executable) -> list[Row[Any]]:
        return await self._read(lambda connection: list(connection.execute(query)))

    async def _first(self, query: Executable) -> Row[Any] | None:
        return await self._read(lambda connection: connection.execute(query).first())

    async def _scalar(self, query: Executable) -> Any:
        return await self._read(lambda connection: connection.execute(query).scalar_one_or_none())


def _read_with(engine: Engine, work: Callable[[Connection], T]) -> T:
    with engine.connect() as connection:
        return work(connection)
