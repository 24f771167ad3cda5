"""The idempotency keys' contract (``ports.RequestKeys``), run against Postgres and the
in-memory twin: a key stands for its first request until the window passes, whoever
asks, however many at once."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from datetime import timedelta

import pytest

from bus_orchestrator.config import Settings
from bus_orchestrator.ports import KeyedRequest, RequestKeys
from bus_orchestrator.store.postgres import create_pool
from bus_orchestrator.store.request_keys import InMemoryRequestKeys, PostgresRequestKeys
from tests.integration.harness import migrated, sql

pytestmark = pytest.mark.integration

DAY = timedelta(days=1)


@pytest.fixture(params=["postgres", "memory"])
async def keys(
    request: pytest.FixtureRequest, settings: Settings, db_schema: str
) -> AsyncIterator[RequestKeys]:
    if request.param == "memory":
        yield InMemoryRequestKeys()
        return
    await migrated(settings)
    pool = await create_pool(settings.model_copy(update={"db_pool_size": 10}))
    try:
        yield PostgresRequestKeys(pool)
    finally:
        await pool.close()


async def test_a_key_stands_for_its_first_request(keys: RequestKeys) -> None:
    first = KeyedRequest("hash-a", "ev-a")
    assert await keys.remember("app", "k", first, window=DAY, fresh_event_id="x") == first
    again = KeyedRequest("hash-b", "ev-b")
    assert await keys.remember("app", "k", again, window=DAY, fresh_event_id="y") == first
    # keys are per app
    other = await keys.remember("other-app", "k", again, window=DAY, fresh_event_id="z")
    assert other == again


async def test_an_expired_key_is_taken_anew_with_a_fresh_event_id(keys: RequestKeys) -> None:
    first = KeyedRequest("hash-a", "ev-a")
    await keys.remember("app", "k", first, window=DAY, fresh_event_id="x")
    await asyncio.sleep(0.01)
    later = KeyedRequest("hash-b", "ev-b")
    taken = await keys.remember("app", "k", later, window=timedelta(0), fresh_event_id="fresh")
    assert taken == KeyedRequest("hash-b", "fresh")


async def test_concurrent_requests_with_one_key_all_see_the_same_one(keys: RequestKeys) -> None:
    asked = [KeyedRequest(f"hash-{n}", f"ev-{n}") for n in range(10)]
    found = await asyncio.gather(
        *(keys.remember("app", "race", a, window=DAY, fresh_event_id="x") for a in asked)
    )
    assert len(set(found)) == 1 and found[0] in asked


async def test_expired_keys_of_the_app_are_forgotten_by_later_requests(
    settings: Settings, db_schema: str
) -> None:
    await migrated(settings)
    pool = await create_pool(settings.model_copy(update={"db_pool_size": 1}))
    try:
        keys = PostgresRequestKeys(pool)
        for n in range(25):
            asked = KeyedRequest("h", str(uuid.uuid4()))
            await keys.remember("app", f"old-{n}", asked, window=DAY, fresh_event_id="x")
            await keys.remember("other", f"old-{n}", asked, window=DAY, fresh_event_id="x")
        await asyncio.sleep(0.01)
        for n in range(2):  # each forgets up to 10 expired keys of its app
            asked = KeyedRequest("h", str(uuid.uuid4()))
            await keys.remember("app", f"new-{n}", asked, window=timedelta(0), fresh_event_id="x")
    finally:
        await pool.close()
    rows = await sql(settings, "SELECT app, count(*) AS n FROM request_key GROUP BY app")
    assert {r["app"]: r["n"] for r in rows} == {"app": 25 - 20 + 2, "other": 25}
