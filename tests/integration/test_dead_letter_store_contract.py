"""The dead-letter archive's contract (``ports.DeadLetterArchive``), run against the
in-memory twin and against Postgres."""

from __future__ import annotations

import asyncio
import hashlib
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from bus_orchestrator.config import Settings
from bus_orchestrator.ports import (
    DeadAfter,
    DeadFilter,
    DeadLetterArchive,
    DeadLetterRecord,
    DeadStatus,
)
from bus_orchestrator.store.dead_letters import PostgresDeadLetters
from bus_orchestrator.store.memory_dead_letters import InMemoryDeadLetters
from bus_orchestrator.store.postgres import create_pool
from tests.integration.harness import migrated

pytestmark = pytest.mark.integration

T0 = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)


def record(
    n: int, *, at: datetime = T0, reason: str = "malformed", **changes: Any
) -> DeadLetterRecord:
    body = f'{{"n": {n}}}'.encode()
    fingerprint = hashlib.sha256(body + str(changes).encode() + at.isoformat().encode()).digest()
    values: dict[str, Any] = {
        "id": str(uuid.uuid5(uuid.NAMESPACE_URL, fingerprint.hex())),
        "fingerprint": fingerprint,
        "message_id": f"m-{n}",
        "message_type": "orders.order_placed.v1",
        "source": "urn:test",
        "correlation_id": f"o-{n}",
        "reason": reason,
        "detail": "why",
        "dead_lettered_by": "coordinator",
        "original_exchange": "bus.events",
        "original_routing_key": "orders.order_placed.v1",
        "content_type": "application/json",
        "properties": {"content_type": "application/json"},
        "headers": {"ce-id": f"m-{n}", "x-bin": {"$bytes": "AAE="}},
        "body": body,
        "dead_lettered_at": at,
        "saga_id": None,
    }
    values.update(changes)
    return DeadLetterRecord(**values)


@pytest.fixture(params=["memory", "postgres"])
async def archive(
    request: pytest.FixtureRequest, settings: Settings, db_schema: str
) -> AsyncIterator[DeadLetterArchive]:
    if request.param == "memory":
        yield InMemoryDeadLetters()
        return
    await migrated(settings)
    pool = await create_pool(settings.model_copy(update={"db_pool_size": 3}))
    try:
        yield PostgresDeadLetters(pool)
    finally:
        await pool.close()


async def test_a_record_is_kept_once(archive: DeadLetterArchive) -> None:
    first = record(1)
    saga = str(uuid.uuid4())
    assert await archive.archive(first, saga) is True
    assert await archive.archive(first, saga) is False  # the same fingerprint
    found = await archive.get(first.id)
    assert found is not None
    assert (found.message_id, found.reason, found.saga_id) == ("m-1", "malformed", saga)
    assert found.body == first.body and found.body_bytes == len(first.body)
    assert found.headers == first.headers and found.properties == first.properties
    assert found.status is DeadStatus.DEAD and found.dead_lettered_at == T0
    assert await archive.get(str(uuid.uuid4())) is None
    assert await archive.get("not a uuid") is None


async def test_pages_newest_first_by_filter(archive: DeadLetterArchive) -> None:
    saga = str(uuid.uuid4())
    kept = [
        record(n, at=T0 + timedelta(seconds=n // 2), reason="expired" if n % 3 else "malformed")
        for n in range(9)
    ]
    for n, r in enumerate(kept):
        await archive.archive(r, saga if n == 4 else None)
    expected = sorted(kept, key=lambda r: (-r.dead_lettered_at.timestamp(), r.id))

    pages: list[str] = []
    after = None
    while True:
        page = await archive.page(DeadFilter(), after, 4)
        pages += [r.id for r in page]
        if len(page) < 4:
            break
        after = DeadAfter(page[-1].dead_lettered_at, page[-1].id)
    assert pages == [r.id for r in expected]
    assert all(r.body is None and r.headers is None for r in page)

    expired = await archive.page(DeadFilter(reason="expired"), None, 50)
    assert [r.id for r in expired] == [r.id for r in expected if r.reason == "expired"]
    assert [r.id for r in await archive.page(DeadFilter(saga_id=saga), None, 50)] == [kept[4].id]
    assert await archive.page(DeadFilter(saga_id="nope"), None, 50) == []
    assert await archive.page(DeadFilter(message_type="a\x00b"), None, 50) == []
    assert await archive.page(DeadFilter(status=DeadStatus.PURGED), None, 50) == []
    assert len(await archive.page(DeadFilter(status=None), None, 50)) == 9


async def test_replaying_marks_what_the_block_did_and_undoes_on_error(
    archive: DeadLetterArchive,
) -> None:
    r = record(1)
    await archive.archive(r, None)
    with pytest.raises(RuntimeError):
        async with archive.replaying(r.id) as locked:
            assert locked.row is not None and locked.row.body == r.body
            await locked.mark("ann", "try", "m-1")
            raise RuntimeError("not confirmed")
    found = await archive.get(r.id)
    assert found is not None and found.status is DeadStatus.DEAD

    async with archive.replaying(r.id) as locked:
        marked = await locked.mark("ann", "fixed", "m-1b")
    assert marked.status is DeadStatus.REPLAYED
    found = await archive.get(r.id)
    assert found is not None and found.status is DeadStatus.REPLAYED
    assert (found.replayed_by, found.replay_reason, found.replayed_as) == ("ann", "fixed", "m-1b")
    assert found.replayed_at is not None
    async with archive.replaying(str(uuid.uuid4())) as missing:
        assert missing.row is None


async def test_two_replays_of_one_dead_letter_take_turns(archive: DeadLetterArchive) -> None:
    r = record(1)
    await archive.archive(r, None)
    order: list[str] = []

    async def replay(name: str) -> None:
        async with archive.replaying(r.id) as locked:
            assert locked.row is not None
            if locked.row.status is DeadStatus.DEAD:
                order.append(name)
                await asyncio.sleep(0.2)
                await locked.mark(name, "race", None)

    await asyncio.gather(replay("a"), replay("b"))
    assert len(order) == 1  # the second saw it replayed


async def test_purge_drops_the_body_once(archive: DeadLetterArchive) -> None:
    r = record(1)
    await archive.archive(r, None)
    purged = await archive.purge(r.id, "ann", "junk")
    assert purged is not None and purged.status is DeadStatus.PURGED and purged.body is None
    assert (purged.purged_by, purged.purge_reason) == ("ann", "junk")
    assert await archive.purge(r.id, "ann", "again") is None
    assert await archive.purge(str(uuid.uuid4()), "ann", "none") is None
    found = await archive.get(r.id)
    assert found is not None and found.body is None and found.body_bytes == len(r.body)
