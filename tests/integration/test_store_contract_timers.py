"""The store contract for timers, on both stores.

Fixtures and factories are those of ``test_store_contract``. Timer claims take the caller's
clock.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import asyncpg
import pytest

from bus_orchestrator.config import Settings
from bus_orchestrator.store import InMemorySagaStore, PostgresSagaStore, create_pool, migrate
from tests.integration import test_store_contract as contract
from tests.integration.test_store_contract import (
    LEASE,
    T0,
    FakeClock,
    Store,
    bump,
    change,
    make_saga,
)

pytestmark = pytest.mark.integration

backend_settings = contract.backend_settings
CLAIM = timedelta(seconds=30)


@dataclass
class Backend:
    store: Store
    now: Callable[[], datetime]
    """The store's idea of now, which its purges go by."""
    settings: Settings | None
    """Set for Postgres."""


@pytest.fixture
async def backend(backend_settings: Settings | None) -> AsyncIterator[Backend]:
    if backend_settings is None:
        clock = FakeClock()
        yield Backend(InMemorySagaStore(outbox_lease=LEASE, clock=clock), clock, None)
        return
    conn = await asyncpg.connect(backend_settings.database_url)
    try:
        await migrate(conn, backend_settings.database_schema)
    finally:
        await conn.close()
    pool = await create_pool(backend_settings.model_copy(update={"db_pool_size": 2}))
    try:
        yield Backend(PostgresSagaStore(pool, LEASE), lambda: datetime.now(UTC), backend_settings)
    finally:
        await pool.close()


@pytest.fixture
def store(backend: Backend) -> Store:
    return backend.store


async def due(store: Store, now: datetime, limit: int = 10) -> list[tuple[str, int]]:
    """Claim what is due at ``now``: correlation ids and failed attempts so far."""
    claimed = await store.claim_timers(now, CLAIM, limit)
    return [(t.instance.correlation_id, t.failed_attempts) for t in claimed]


# -- claiming timers ---------------------------------------------------------------------


async def test_claims_take_the_earliest_deadline_first(store: Store) -> None:
    deadlines = {"a": 3, "b": 1, "c": 2, "d": 10}
    for n, (name, seconds) in enumerate(deadlines.items()):
        saga = make_saga(name, deadline=T0 + timedelta(seconds=seconds))
        await store.commit(change(f"m{n}", saga))
    await store.commit(change("m-none", make_saga("e")))

    assert await due(store, T0) == []
    assert await due(store, T0 + timedelta(seconds=3), limit=2) == [("b", 0), ("c", 0)]
    assert await due(store, T0 + timedelta(seconds=3)) == [("a", 0)]  # deadline == now is due
    assert await due(store, T0 + timedelta(seconds=20)) == [("d", 0)]  # the rest are held
    [claimed] = await store.claim_timers(T0 + timedelta(seconds=3) + CLAIM, CLAIM, 1)
    assert claimed.instance == make_saga("b", deadline=T0 + timedelta(seconds=1))


async def test_a_cleared_deadline_is_never_due(store: Store) -> None:
    saga = make_saga(deadline=T0)
    await store.commit(change("m1", saga))
    await store.commit(change("m2", bump(saga, deadline=None), expected_version=1))
    assert await due(store, T0 + timedelta(days=1)) == []


async def test_a_claim_holds_until_its_lease_runs_out(store: Store) -> None:
    await store.commit(change("m1", make_saga(deadline=T0)))
    assert await due(store, T0) == [("order-1", 0)]
    assert await due(store, T0 + CLAIM - timedelta(microseconds=1)) == []
    assert await due(store, T0 + CLAIM) == [("order-1", 0)]  # its holder died: taken over


async def test_a_moved_deadline_is_due_whatever_was_claimed(store: Store) -> None:
    saga = make_saga(deadline=T0)
    await store.commit(change("m1", saga))
    assert await due(store, T0) == [("order-1", 0)]
    await store.back_off_timer(saga.saga_id, T0, 4, T0 + timedelta(days=1))

    moved = bump(saga, deadline=T0 + timedelta(seconds=1))
    await store.commit(change("m2", moved, expected_version=1))

    assert await due(store, T0 + timedelta(seconds=1)) == [("order-1", 0)]


async def test_a_failed_try_backs_off_and_counts(store: Store) -> None:
    saga = make_saga(deadline=T0)
    await store.commit(change("m1", saga))
    await due(store, T0)

    await store.back_off_timer(saga.saga_id, T0, 1, T0 + timedelta(seconds=5))
    assert await due(store, T0 + timedelta(seconds=5) - timedelta(microseconds=1)) == []
    assert await due(store, T0 + timedelta(seconds=5)) == [("order-1", 1)]

    await store.back_off_timer(saga.saga_id, T0, 2, T0 + timedelta(minutes=1))
    assert await due(store, T0 + CLAIM + timedelta(seconds=5)) == []  # backoff beats lease
    assert await due(store, T0 + timedelta(minutes=1)) == [("order-1", 2)]


async def test_backing_off_a_moved_deadline_changes_nothing(store: Store) -> None:
    saga = make_saga(deadline=T0)
    await store.commit(change("m1", saga))
    await due(store, T0)
    moved = bump(saga, deadline=T0 + timedelta(seconds=1))
    await store.commit(change("m2", moved, expected_version=1))

    await store.back_off_timer(saga.saga_id, T0, 1, T0 + timedelta(days=1))  # a late failure
    await store.back_off_timer("not-a-uuid", T0, 1, T0 + timedelta(days=1))

    assert await due(store, T0 + timedelta(seconds=1)) == [("order-1", 0)]


async def test_a_claim_returns_the_saga_as_stored(store: Store) -> None:
    saga = make_saga(deadline=T0, pending_command_id="cmd-1", nested={"x": [1, None]})
    await store.commit(change("m1", saga))
    [claimed] = await store.claim_timers(T0, CLAIM, 10)
    assert claimed.instance == saga
