"""The HTTP API's idempotency keys (``ports.RequestKeys``): in Postgres (migration 0010),
and an in-memory twin for tests."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from importlib.resources import files

import asyncpg

from bus_orchestrator.ports import Clock, KeyedRequest
from bus_orchestrator.store.driver_errors import postgres_errors


class PostgresRequestKeys:
    """Idempotency keys in the ``request_key`` table."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool
        folder = files("bus_orchestrator.store").joinpath("sql")
        self._remember = folder.joinpath("remember_request.sql").read_text(encoding="utf-8")

    async def remember(
        self,
        app: str,
        key: str,
        request: KeyedRequest,
        *,
        window: timedelta,
        fresh_event_id: str,
    ) -> KeyedRequest:
        args = (app, key, request.request_hash, request.event_id, window, fresh_event_id)
        for _ in range(3):
            with postgres_errors:
                row = await self._pool.fetchrow(self._remember, *args)
            if row is not None:
                return KeyedRequest(row["request_hash"], row["event_id"])
        # three concurrent requests in a row, each committed after the last one's snapshot
        raise RuntimeError(f"idempotency key of app {app!r} could not be read back")


def _utc_now() -> datetime:
    return datetime.now(UTC)


@dataclass
class _Row:
    request: KeyedRequest
    at: datetime


class InMemoryRequestKeys:
    """``PostgresRequestKeys``' twin."""

    def __init__(self, clock: Clock = _utc_now) -> None:
        self._clock = clock
        self._rows: dict[tuple[str, str], _Row] = {}

    async def remember(
        self,
        app: str,
        key: str,
        request: KeyedRequest,
        *,
        window: timedelta,
        fresh_event_id: str,
    ) -> KeyedRequest:
        now = self._clock()
        row = self._rows.get((app, key))
        if row is None:
            self._rows[(app, key)] = _Row(request, now)
            return request
        if row.at < now - window:
            fresh = KeyedRequest(request.request_hash, fresh_event_id)
            self._rows[(app, key)] = _Row(fresh, now)
            return fresh
        return row.request
