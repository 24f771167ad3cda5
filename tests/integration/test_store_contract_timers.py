"""The store contract for timers, retention and confirmed outbox rows, on both stores.

Fixtures and factories are those of ``test_store_contract``. Timer claims take the caller's
clock; purges go by the store's own clock (the fake one, or Postgres ``now()``), so these
tests age rows relative to ``Backend.now``.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import asyncpg
import pytest

from bus_orchestrator.config import Settings
from bus_orchestrator.core.state import SagaInstance, SagaStatus
from bus_orchestrator.ports import ByCorrelation, Change, CommitResult
from bus_orchestrator.store import InMemorySagaStore, PostgresSagaStore, create_pool, migrate
from tests.integration import test_store_contract as contract
from tests.integration.harness import sql
from tests.integration.test_store_contract import (
    CONSUMER,
    LEASE,
    T0,
    FakeClock,
    Store,
    bump,
    change,
    command,
    entry,
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


# -- retention -------------------------------------------------------------------------------


def finished(name: str, status: SagaStatus, at: datetime) -> SagaInstance:
    return make_saga(name, status=status, created_at=at - timedelta(hours=1)).model_copy(
        update={"updated_at": at}
    )


async def test_purge_finished_deletes_old_finished_sagas_with_their_history(
    backend: Backend,
) -> None:
    store, now = backend.store, backend.now()
    old, fresh = now - timedelta(days=2), now - timedelta(minutes=1)
    sagas = {
        "completed-old": finished("completed-old", SagaStatus.COMPLETED, old),
        "compensated-old": finished("compensated-old", SagaStatus.COMPENSATED, old),
        "failed-old": finished("failed-old", SagaStatus.FAILED, old),
        "running-old": finished("running-old", SagaStatus.RUNNING, old),
        "compensating-old": finished("compensating-old", SagaStatus.COMPENSATING, old),
        "completed-fresh": finished("completed-fresh", SagaStatus.COMPLETED, fresh),
    }
    for name, saga in sagas.items():
        await store.commit(change(f"start-{name}", saga))
        await store.commit(change(f"later-{name}", saga_id=saga.saga_id))

    assert await store.purge_finished(timedelta(days=3)) == 0
    assert await store.purge_finished(timedelta(days=1)) == 3
    assert await store.purge_finished(timedelta(days=1)) == 0

    kept = {s.correlation_id for s in await store.list_sagas(limit=100)}
    assert kept == {"running-old", "compensating-old", "completed-fresh"}
    for name, saga in sagas.items():
        history = [e.message_id for e in await store.history(saga.saga_id)]
        assert history == ([] if name not in kept else [f"start-{name}", f"later-{name}"])
    # the correlation id is free again: a new saga of that order may start
    again = make_saga("completed-old")
    assert (await store.commit(change("restart", again))).result is CommitResult.COMMITTED
    loaded = await store.load(CONSUMER, "x", ByCorrelation("order", "completed-old"))
    assert loaded.instance == again


async def test_purge_orphan_history_deletes_old_rows_of_no_saga(backend: Backend) -> None:
    store, now = backend.store, backend.now()
    saga = make_saga()
    await store.commit(change("m1", saga))

    def at(message_id: str, when: datetime, saga_id: str | None) -> Change:
        row = dataclasses.replace(entry(message_id), at=when)
        return Change(CONSUMER, message_id, saga_id, None, None, (row,))

    await store.commit(at("orphan-old", now - timedelta(days=2), None))
    await store.commit(at("orphan-fresh", now - timedelta(minutes=1), None))
    await store.commit(at("mine-old", now - timedelta(days=2), saga.saga_id))

    assert await store.purge_orphan_history(timedelta(days=3)) == 0
    assert await store.purge_orphan_history(timedelta(days=1)) == 1
    assert await store.purge_orphan_history(timedelta(days=1)) == 0
    assert [e.message_id for e in await store.history(saga.saga_id)] == ["m1", "mine-old"]
    assert await store.purge_orphan_history(timedelta(seconds=0)) == 1  # orphan-fresh


# -- Postgres only ---------------------------------------------------------------------------


@pytest.fixture
async def postgres(settings: Settings, db_schema: str) -> AsyncIterator[PostgresSagaStore]:
    conn = await asyncpg.connect(settings.database_url)
    try:
        await migrate(conn, db_schema)
    finally:
        await conn.close()
    pool = await create_pool(settings.model_copy(update={"db_pool_size": 4}))
    try:
        yield PostgresSagaStore(pool, LEASE)
    finally:
        await pool.close()


async def test_purge_finished_goes_in_bounded_batches(
    postgres: PostgresSagaStore, settings: Settings
) -> None:
    old = datetime.now(UTC) - timedelta(days=2)
    sagas = [finished(f"o-{n}", SagaStatus.COMPLETED, old) for n in range(600)]
    for batch in range(0, 600, 50):
        await asyncio.gather(
            *(postgres.commit(change(f"m-{s.saga_id}", s)) for s in sagas[batch : batch + 50])
        )
    assert [await postgres.purge_finished(timedelta(days=1)) for _ in range(3)] == [500, 100, 0]
    assert (await sql(settings, "SELECT count(*) AS n FROM saga_history"))[0]["n"] == 0


async def test_a_confirmed_row_keeps_no_body_or_headers(
    postgres: PostgresSagaStore, settings: Settings
) -> None:
    committed = await postgres.commit(change("m1", make_saga(), outbox=(command(1), command(2))))
    first, second = (p.outbox_id for p in committed.outbox)

    await postgres.mark_sent([first])

    rows = await sql(settings, "SELECT id, sent_at, body, headers, message_type FROM outbox")
    by_id = {r["id"]: r for r in rows}
    assert by_id[first]["sent_at"] is not None
    assert (by_id[first]["body"], by_id[first]["headers"]) == (None, None)
    assert by_id[second]["sent_at"] is None
    assert by_id[second]["body"] == command(2).body
    assert json.loads(by_id[second]["headers"]) == command(2).headers
    assert {r["message_type"] for r in rows} == {"payments.charge_payment.v1"}
    unsent, _ = await postgres.outbox_backlog()
    assert unsent == 1
