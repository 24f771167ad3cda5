"""The SagaStore and Outbox contract, run against the in-memory twin and against Postgres."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import pytest

from bus_orchestrator.config import Settings
from bus_orchestrator.core.state import SagaInstance, SagaStatus, saga_id_for
from bus_orchestrator.errors import StoreUnavailableError
from bus_orchestrator.ports import (
    ByCorrelation,
    ByPendingCommand,
    BySagaId,
    Change,
    CommitResult,
    Direction,
    HistoryEntry,
    Loaded,
    OutboxMessage,
)
from bus_orchestrator.store import InMemorySagaStore, PostgresSagaStore, create_pool, migrate

pytestmark = pytest.mark.integration

T0 = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)
LEASE = timedelta(milliseconds=300)
CONSUMER = "coordinator"

Store = InMemorySagaStore | PostgresSagaStore


@dataclass
class Harness:
    store: Store
    advance: Callable[[timedelta], Awaitable[None]]
    """Lets a bit more than the given time pass: on a fake clock, or by a real sleep."""


class FakeClock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> datetime:
        return self.now

    async def advance(self, by: timedelta) -> None:
        self.now += by + timedelta(milliseconds=1)


async def sleep_past(by: timedelta) -> None:
    await asyncio.sleep(by.total_seconds() + 0.05)


@pytest.fixture(params=["memory", "postgres"])
def backend_settings(request: pytest.FixtureRequest) -> Settings | None:
    """``None`` for the in-memory store; settings naming a fresh schema for Postgres."""
    if request.param == "memory":
        return None
    request.getfixturevalue("db_schema")
    settings: Settings = request.getfixturevalue("settings")
    return settings


@pytest.fixture
async def harness(backend_settings: Settings | None) -> AsyncIterator[Harness]:
    if backend_settings is None:
        clock = FakeClock()
        yield Harness(InMemorySagaStore(outbox_lease=LEASE, clock=clock), clock.advance)
        return
    conn = await asyncpg.connect(backend_settings.database_url)
    try:
        await migrate(conn, backend_settings.database_schema)
    finally:
        await conn.close()
    pool = await create_pool(backend_settings.model_copy(update={"db_pool_size": 2}))
    try:
        yield Harness(PostgresSagaStore(pool, LEASE), sleep_past)
    finally:
        await pool.close()


@pytest.fixture
def store(harness: Harness) -> Store:
    return harness.store


# -- factories --------------------------------------------------------------------------


def make_saga(
    correlation_id: str = "order-1",
    *,
    saga_type: str = "order",
    saga_id: str | None = None,
    version: int = 1,
    status: SagaStatus = SagaStatus.RUNNING,
    pending_command_id: str | None = None,
    deadline: datetime | None = None,
    created_at: datetime = T0,
    **data: Any,
) -> SagaInstance:
    return SagaInstance(
        saga_id=saga_id or saga_id_for(saga_type, correlation_id),
        saga_type=saga_type,
        correlation_id=correlation_id,
        status=status,
        version=version,
        data=data or {"amount": 10, "items": ["a", "b"]},
        pending_command_id=pending_command_id,
        deadline=deadline,
        created_at=created_at,
        updated_at=created_at,
    )


def entry(
    message_id: str, note: str = "", outcome: str = "applied", **payload: Any
) -> HistoryEntry:
    return HistoryEntry(
        direction=Direction.IN,
        message_id=message_id,
        message_type="orders.order_placed.v1",
        correlation_id="order-1",
        causation_id=None,
        outcome=outcome,
        note=note,
        payload=payload or {"n": 1},
        at=T0,
    )


def command(n: int) -> OutboxMessage:
    return OutboxMessage(
        message_id=f"cmd-{n}",
        message_type="payments.charge_payment.v1",
        exchange="payments",
        routing_key="payments.charge_payment.v1",
        body=f'{{"n": {n}}}'.encode(),
        content_type="application/cloudevents+json",
        headers={"traceparent": f"00-{n:032x}-{n:016x}-01"},
        correlation_id="order-1",
    )


def change(
    message_id: str,
    instance: SagaInstance | None = None,
    expected_version: int | None = None,
    *,
    saga_id: str | None = None,
    outbox: tuple[OutboxMessage, ...] = (),
) -> Change:
    return Change(
        consumer=CONSUMER,
        message_id=message_id,
        saga_id=saga_id or (instance.saga_id if instance else None),
        instance=instance,
        expected_version=expected_version,
        history=(entry(message_id),),
        outbox=outbox,
    )


def bump(saga: SagaInstance, **updates: Any) -> SagaInstance:
    return saga.model_copy(update={"version": saga.version + 1, **updates})


async def unsent_after_lease(h: Harness) -> list[str]:
    """Message ids of every unsent row, once the commit-time lease has run out."""
    await h.advance(LEASE)
    return [p.message.message_id for p in await h.store.claim_unsent(LEASE, 100)]


# -- load and commit ---------------------------------------------------------------------


@pytest.mark.parametrize(
    "key",
    [
        ByCorrelation("order", "nope"),
        ByPendingCommand("nope"),
        BySagaId(saga_id_for("order", "nope")),
        BySagaId("not-a-uuid"),
    ],
)
async def test_load_of_a_missing_saga(store: Store, key: Any) -> None:
    assert await store.load(CONSUMER, "m1", key) == Loaded(seen=False, instance=None)


async def test_inserted_saga_loads_by_every_key(store: Store) -> None:
    saga = make_saga(pending_command_id="cmd-1", deadline=T0 + timedelta(seconds=30))
    assert (await store.commit(change("m1", saga))).result is CommitResult.COMMITTED

    for key in (
        ByCorrelation("order", "order-1"),
        ByPendingCommand("cmd-1"),
        BySagaId(saga.saga_id),
        BySagaId(saga.saga_id.upper()),
    ):
        loaded = await store.load(CONSUMER, "m2", key)
        assert loaded == Loaded(seen=False, instance=saga), key
    assert (await store.load(CONSUMER, "m2", ByCorrelation("other", "order-1"))).instance is None


async def test_seen_after_commit_per_consumer(store: Store) -> None:
    await store.commit(change("m1", make_saga()))
    key = ByCorrelation("order", "order-1")
    assert (await store.load(CONSUMER, "m1", key)).seen
    assert not (await store.load("another-consumer", "m1", key)).seen
    assert not (await store.load(CONSUMER, "m2", key)).seen


async def test_update_moves_the_saga_on(store: Store) -> None:
    saga = make_saga(pending_command_id="cmd-1")
    await store.commit(change("m1", saga))
    updated = bump(saga, pending_command_id="cmd-2", status=SagaStatus.COMPENSATING)

    committed = await store.commit(change("m2", updated, expected_version=1))

    assert committed.result is CommitResult.COMMITTED
    assert (await store.load(CONSUMER, "m3", ByPendingCommand("cmd-2"))).instance == updated
    assert (await store.load(CONSUMER, "m3", ByPendingCommand("cmd-1"))).instance is None


async def test_duplicate_message_writes_nothing(harness: Harness) -> None:
    store, saga = harness.store, make_saga()
    first = await store.commit(change("m1", saga, outbox=(command(1),)))
    assert first.result is CommitResult.COMMITTED

    again = await store.commit(change("m1", bump(saga), expected_version=1, outbox=(command(2),)))

    assert again.result is CommitResult.DUPLICATE
    assert again.outbox == ()
    assert (await store.load(CONSUMER, "x", BySagaId(saga.saga_id))).instance == saga
    assert [e.message_id for e in await store.history(saga.saga_id)] == ["m1"]
    assert await unsent_after_lease(harness) == ["cmd-1"]


async def test_duplicate_record_only_message(store: Store) -> None:
    saga_id = saga_id_for("order", "order-1")
    assert (await store.commit(change("m1", saga_id=saga_id))).result is CommitResult.COMMITTED
    again = await store.commit(change("m1", saga_id=saga_id))
    assert again.result is CommitResult.DUPLICATE
    assert len(await store.history(saga_id)) == 1


async def test_version_conflict_writes_nothing(harness: Harness) -> None:
    store, saga = harness.store, make_saga()
    await store.commit(change("m1", saga))
    stale = bump(saga, version=3)

    conflict = await store.commit(change("m2", stale, expected_version=2, outbox=(command(1),)))

    assert conflict.result is CommitResult.CONFLICT
    assert conflict.outbox == ()
    loaded = await store.load(CONSUMER, "m2", BySagaId(saga.saga_id))
    assert loaded == Loaded(seen=False, instance=saga)
    assert [e.message_id for e in await store.history(saga.saga_id)] == ["m1"]
    assert await unsent_after_lease(harness) == []


async def test_update_of_a_saga_that_does_not_exist_conflicts(store: Store) -> None:
    saga = make_saga(version=2)
    conflict = await store.commit(change("m1", saga, expected_version=1))
    assert conflict.result is CommitResult.CONFLICT
    assert not (await store.load(CONSUMER, "m1", BySagaId(saga.saga_id))).seen


async def test_conflict_wins_over_duplicate(store: Store) -> None:
    saga = make_saga()
    await store.commit(change("m1", saga))
    result = await store.commit(change("m1", bump(saga, version=5), expected_version=4))
    assert result.result is CommitResult.CONFLICT


@pytest.mark.parametrize("same_id", [True, False], ids=["same-saga-id", "same-correlation"])
async def test_starting_a_saga_twice_conflicts(harness: Harness, same_id: bool) -> None:
    store, saga = harness.store, make_saga()
    await store.commit(change("m1", saga))
    other_id = saga.saga_id if same_id else saga_id_for("order", "elsewhere")
    twin = make_saga(saga_id=other_id, amount=99)

    result = await store.commit(change("m2", twin, outbox=(command(1),)))

    assert result.result is CommitResult.CONFLICT
    loaded = await store.load(CONSUMER, "m2", ByCorrelation("order", "order-1"))
    assert loaded == Loaded(seen=False, instance=saga)
    assert await store.history(twin.saga_id) == ([entry("m1")] if same_id else [])
    assert await unsent_after_lease(harness) == []


async def test_record_only_change_writes_inbox_and_history(harness: Harness) -> None:
    store, saga = harness.store, make_saga()
    await store.commit(change("m1", saga))

    result = await store.commit(change("m2", saga_id=saga.saga_id, outbox=(command(1),)))
    no_saga = await store.commit(change("m3"))

    assert result.result is CommitResult.COMMITTED
    assert [p.message for p in result.outbox] == [command(1)]
    assert no_saga.result is CommitResult.COMMITTED
    loaded = await store.load(CONSUMER, "m2", BySagaId(saga.saga_id))
    assert loaded == Loaded(seen=True, instance=saga)
    assert (await store.load(CONSUMER, "m3", BySagaId(saga.saga_id))).seen
    assert [e.message_id for e in await store.history(saga.saga_id)] == ["m1", "m2"]
    assert await unsent_after_lease(harness) == ["cmd-1"]


# -- the outbox ----------------------------------------------------------------------------


async def test_outbox_ids_come_back_in_input_order(harness: Harness) -> None:
    store = harness.store
    messages = tuple(command(n) for n in (3, 1, 2))
    first = await store.commit(change("m1", make_saga(), outbox=messages))
    second = await store.commit(change("m2", make_saga("order-2"), outbox=(command(4),)))

    assert [p.message for p in first.outbox] == list(messages)
    ids = [p.outbox_id for p in first.outbox + second.outbox]
    assert ids == sorted(set(ids))

    await harness.advance(LEASE)
    claimed = await store.claim_unsent(LEASE, 10)
    assert claimed == list(first.outbox + second.outbox)


async def test_claims_wait_for_the_lease_and_honour_the_limit(harness: Harness) -> None:
    store = harness.store
    committed = await store.commit(
        change("m1", make_saga(), outbox=(command(1), command(2), command(3)))
    )
    ids = [p.outbox_id for p in committed.outbox]
    assert await store.claim_unsent(LEASE, 10) == []  # the committing relay holds them

    await harness.advance(LEASE)
    assert [p.outbox_id for p in await store.claim_unsent(LEASE, 2)] == ids[:2]
    assert [p.outbox_id for p in await store.claim_unsent(LEASE, 2)] == ids[2:]
    assert await store.claim_unsent(LEASE, 10) == []  # all claimed again

    await harness.advance(LEASE)
    assert [p.outbox_id for p in await store.claim_unsent(LEASE, 10)] == ids


async def test_sent_rows_are_never_claimed(harness: Harness) -> None:
    store = harness.store
    committed = await store.commit(change("m1", make_saga(), outbox=(command(1), command(2))))
    first, second = (p.outbox_id for p in committed.outbox)

    await store.mark_sent([first])
    await store.mark_sent([])
    unsent, oldest_age = await store.outbox_backlog()
    assert unsent == 1
    assert oldest_age is not None
    assert 0 <= oldest_age < 5

    await harness.advance(LEASE)
    assert [p.outbox_id for p in await store.claim_unsent(LEASE, 10)] == [second]
    await store.mark_sent([second])
    await harness.advance(LEASE)
    assert await store.claim_unsent(LEASE, 10) == []
    assert await store.outbox_backlog() == (0, None)


async def test_purge_sent_deletes_only_old_confirmed_rows(harness: Harness) -> None:
    store = harness.store
    committed = await store.commit(change("m1", make_saga(), outbox=(command(1), command(2))))
    await store.mark_sent([committed.outbox[0].outbox_id])
    await harness.advance(LEASE)

    assert await store.purge_sent(timedelta(hours=1)) == 0
    assert await store.purge_sent(timedelta(0)) == 1
    assert await store.purge_sent(timedelta(0)) == 0
    assert await unsent_after_lease(harness) == ["cmd-2"]


async def test_purge_inbox_forgets_only_old_message_ids(harness: Harness) -> None:
    store = harness.store
    await store.commit(change("m1", make_saga()))
    await harness.advance(LEASE)
    assert await store.purge_inbox(timedelta(hours=1)) == 0
    assert (await store.load(CONSUMER, "m1", BySagaId(make_saga().saga_id))).seen
    assert await store.purge_inbox(timedelta(0)) == 1
    assert not (await store.load(CONSUMER, "m1", BySagaId(make_saga().saga_id))).seen
    assert await store.purge_inbox(timedelta(0)) == 0


# -- queries -------------------------------------------------------------------------------


async def test_find_by_id_or_correlation(store: Store) -> None:
    mine = make_saga("order-1", saga_type="order")
    twin = make_saga("order-1", saga_type="refund", created_at=T0 + timedelta(seconds=1))
    other = make_saga("order-2")
    for n, saga in enumerate((mine, twin, other)):
        await store.commit(change(f"m{n}", saga))

    assert await store.find(mine.saga_id) == [mine]
    assert await store.find("order-1") == [twin, mine]
    assert await store.find("order-3") == []
    assert await store.find(saga_id_for("order", "order-3")) == []


async def test_list_sagas_filters_newest_first(store: Store) -> None:
    sagas = [
        make_saga("a", created_at=T0),
        make_saga("b", created_at=T0 + timedelta(seconds=2), status=SagaStatus.COMPLETED),
        make_saga("c", created_at=T0 + timedelta(seconds=1), saga_type="refund"),
        make_saga("d", created_at=T0 + timedelta(seconds=2)),
    ]
    for n, saga in enumerate(sagas):
        await store.commit(change(f"m{n}", saga))
    same_time = sorted([sagas[1], sagas[3]], key=lambda s: s.saga_id)

    assert await store.list_sagas() == [*same_time, sagas[2], sagas[0]]
    assert await store.list_sagas(limit=2) == same_time
    assert await store.list_sagas(status=SagaStatus.COMPLETED) == [sagas[1]]
    assert await store.list_sagas(saga_type="order", status=SagaStatus.RUNNING) == [
        sagas[3],
        sagas[0],
    ]
    assert await store.list_sagas(saga_type="nope") == []


async def test_history_oldest_first(store: Store) -> None:
    saga = make_saga()
    await store.commit(change("m1", saga))
    await store.commit(change("m1", saga_id=saga.saga_id))  # duplicate: not recorded
    await store.commit(change("m2", saga_id=saga.saga_id))
    await store.commit(change("m0", make_saga("order-2")))
    later = entry("m3", note="nested", deep={"list": [1, 2, {"x": None}]}, flag=True)
    batch = Change(
        consumer=CONSUMER,
        message_id="m3",
        saga_id=saga.saga_id,
        instance=bump(saga),
        expected_version=1,
        history=(
            later,
            HistoryEntry(
                direction=Direction.OUT,
                message_id="cmd-1",
                message_type="payments.charge_payment.v1",
                correlation_id="order-1",
                causation_id="m3",
                outcome="sent",
                note="",
                payload={},
                at=T0 + timedelta(microseconds=1),
            ),
        ),
    )
    await store.commit(batch)

    history = await store.history(saga.saga_id)
    assert [e.message_id for e in history] == ["m1", "m2", "m3", "cmd-1"]
    assert history[2:] == list(batch.history)
    assert await store.history("not-a-uuid") == []


# -- concurrency -----------------------------------------------------------------------------


async def test_concurrent_updates_one_wins(harness: Harness) -> None:
    store, saga = harness.store, make_saga()
    await store.commit(change("m1", saga))
    left = change("m2", bump(saga, data={"by": "left"}), 1, outbox=(command(1),))
    right = change("m3", bump(saga, data={"by": "right"}), 1, outbox=(command(2),))

    results = await asyncio.gather(store.commit(left), store.commit(right))

    assert sorted(r.result for r in results) == [CommitResult.COMMITTED, CommitResult.CONFLICT]
    winner = left if results[0].result is CommitResult.COMMITTED else right
    assert (await store.load(CONSUMER, "x", BySagaId(saga.saga_id))).instance == winner.instance
    assert await unsent_after_lease(harness) == [winner.outbox[0].message_id]


async def test_concurrent_starts_one_wins(store: Store) -> None:
    results = await asyncio.gather(
        store.commit(change("m1", make_saga(amount=1))),
        store.commit(change("m2", make_saga(amount=2))),
    )
    assert sorted(r.result for r in results) == [CommitResult.COMMITTED, CommitResult.CONFLICT]


async def test_concurrent_duplicates_one_wins(store: Store) -> None:
    saga_id = saga_id_for("order", "order-1")
    results = await asyncio.gather(*(store.commit(change("m1", saga_id=saga_id)) for _ in "ab"))
    assert sorted(r.result for r in results) == [CommitResult.COMMITTED, CommitResult.DUPLICATE]
    assert len(await store.history(saga_id)) == 1


# -- Postgres only: driver failures become StoreUnavailableError ------------------------------


async def test_closed_pool_is_unavailable(settings: Settings, db_schema: str) -> None:
    pool = await create_pool(settings.model_copy(update={"db_pool_size": 1}))
    store = PostgresSagaStore(pool, LEASE)
    await pool.close()
    with pytest.raises(StoreUnavailableError) as raised:
        await store.load(CONSUMER, "m1", ByCorrelation("order", "order-1"))
    assert isinstance(raised.value.__cause__, asyncpg.InterfaceError)
    assert raised.value.retryable


async def test_unreachable_database_is_unavailable(settings: Settings) -> None:
    unreachable = settings.model_copy(
        update={"database_url": "postgresql://root@127.0.0.1:1/test", "db_pool_size": 1}
    )
    with pytest.raises(StoreUnavailableError) as raised:
        await create_pool(unreachable)
    assert isinstance(raised.value.__cause__, OSError)


# -- message ids per source, and the park ---------------------------------------------


async def test_a_message_is_known_by_its_source_and_id(store: Store) -> None:
    from dataclasses import replace

    key = ByCorrelation("order", "order-1")
    web = replace(change("m1", make_saga()), source="urn:web")
    assert (await store.commit(web)).result is CommitResult.COMMITTED
    assert (await store.load(CONSUMER, "m1", key, "urn:web")).seen
    assert not (await store.load(CONSUMER, "m1", key, "urn:mobile")).seen
    mobile = replace(change("m1", make_saga("order-2")), source="urn:mobile")
    assert (await store.commit(mobile)).result is CommitResult.COMMITTED
    again = replace(change("m1", make_saga("order-3")), source="urn:web")
    assert (await store.commit(again)).result is CommitResult.DUPLICATE


def parked(correlation_id: str = "order-1", message_id: str = "p1", **changes: Any) -> Any:
    from bus_orchestrator.ports import ParkedMessage

    fields: dict[str, Any] = {
        "saga_type": "order",
        "correlation_id": correlation_id,
        "message_id": message_id,
        "source": "urn:web",
        "message_type": "orders.order_cancelled.v1",
        "exchange": "bus.events",
        "routing_key": "orders.order_cancelled.v1",
        "content_type": "application/json",
        "headers": {"ce-id": message_id, "traceparent": "00-ab-cd-01"},
        "body": b'{"order_id": "order-1", "note": "\xc3\xbc"}',
        "expires_at": T0 + timedelta(hours=1),
    }
    fields.update(changes)
    return ParkedMessage(**fields)


async def test_a_parked_event_waits_in_order_and_is_recorded_once(store: Store) -> None:
    first, second = parked(message_id="p1"), parked(message_id="p2")
    assert await store.park("park.order", first, entry("p1", "parked"))
    assert await store.park("park.order", second, entry("p2", "parked"))
    assert not await store.park("park.order", first, entry("p1", "parked"))  # redelivered
    waiting = await store.parked("order", "order-1")
    assert [p.message for p in waiting] == [first, second]
    assert waiting[0].parked_id < waiting[1].parked_id
    assert await store.parked("order", "order-2") == []
    # recorded in the history of the saga it waits for, before that saga exists
    history = await store.history(saga_id_for("order", "order-1"))
    assert [(e.message_id, e.note) for e in history] == [("p1", "parked"), ("p2", "parked")]
    # the load that would start that saga says events wait for it
    key = ByCorrelation("order", "order-1")
    assert (await store.load(CONSUMER, "m1", key)).parked
    assert not (await store.load(CONSUMER, "m1", ByCorrelation("order", "order-2"))).parked


async def test_applying_a_parked_event_removes_it_with_the_commit(store: Store) -> None:
    from dataclasses import replace

    await store.park("park.order", parked(), entry("p1", "parked"))
    [waiting] = await store.parked("order", "order-1")
    saga = make_saga()
    await store.commit(change("m1", saga))
    # a commit that fails takes nothing out of the park
    stale = replace(change("p1", bump(saga, version=5), 4), unparked=waiting.parked_id)
    assert (await store.commit(stale)).result is CommitResult.CONFLICT
    assert len(await store.parked("order", "order-1")) == 1
    applied = replace(change("p1", bump(saga), 1), source="urn:web", unparked=waiting.parked_id)
    assert (await store.commit(applied)).result is CommitResult.COMMITTED
    assert await store.parked("order", "order-1") == []
    assert not (await store.load(CONSUMER, "m9", ByCorrelation("order", "order-1"))).parked


async def test_parked_events_are_ready_when_their_saga_exists_or_they_expire(
    store: Store,
) -> None:
    await store.park("park.order", parked("order-1", "p1"), entry("p1"))
    await store.park(
        "park.order", parked("order-2", "p2", expires_at=T0 - timedelta(seconds=1)), entry("p2")
    )
    await store.park("park.order", parked("order-3", "p3"), entry("p3"))
    assert [p.message.message_id for p in await store.parked_ready(T0, 10)] == ["p2"]
    await store.commit(change("m1", make_saga("order-1")))
    ready = await store.parked_ready(T0, 10)
    assert [p.message.message_id for p in ready] == ["p1", "p2"]
    assert [p.message.message_id for p in await store.parked_ready(T0, 1)] == ["p1"]
    await store.unpark(ready[0].parked_id)
    assert [p.message.message_id for p in await store.parked_ready(T0, 10)] == ["p2"]


async def test_history_of_parked_events_whose_saga_never_started_is_purged(
    harness: Harness,
) -> None:
    store = harness.store
    await store.park("park.order", parked("order-1", "p1"), entry("p1", outcome="parked"))
    await store.park("park.order", parked("order-2", "p2"), entry("p2", outcome="parked"))
    await store.commit(change("m1", make_saga("order-2")))  # order-2 started, order-1 never
    await harness.advance(timedelta(seconds=1))
    assert await store.purge_orphan_history(timedelta(0)) == 1
    assert await store.history(saga_id_for("order", "order-1")) == []
    kept = await store.history(saga_id_for("order", "order-2"))
    assert [e.message_id for e in kept] == ["p2", "m1"]
