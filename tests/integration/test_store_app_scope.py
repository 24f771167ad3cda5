"""The Postgres store of one app among several on one schema: what each scoped call takes.

Each app's store writes its name on its inbox, history and outbox rows; its background
calls (timers, park sweep, outbox claim and backlog, purges) take only its own rows, and
rows of no app (written before migration 0007, or by a store of no app) as well.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable
from datetime import UTC, datetime, timedelta

import asyncpg
import pytest

from bus_orchestrator.config import Settings
from bus_orchestrator.core.state import SagaStatus
from bus_orchestrator.errors import AppConflictError
from bus_orchestrator.ports import AppScope, Change, Direction, HistoryEntry, OutboxMessage
from bus_orchestrator.runtime.service import CoordinatorService
from bus_orchestrator.store.postgres import PostgresSagaStore, create_pool, register_app
from tests.conftest import TestBus
from tests.integration.harness import migrated, sql, start_coordinator
from tests.integration.test_timer_loop_postgres import awaiting_stock

pytestmark = pytest.mark.integration

A, B = AppScope("app-a", ("a_saga",)), AppScope("app-b", ("b_saga",))


@pytest.fixture
async def pool(settings: Settings, db_schema: str) -> AsyncIterator[asyncpg.Pool]:
    await migrated(settings)
    opened = await create_pool(settings.model_copy(update={"db_pool_size": 2}))
    try:
        yield opened
    finally:
        await opened.close()


def command(name: str) -> OutboxMessage:
    return OutboxMessage(f"cmd-{name}", "x.command.v1", "bus.commands", "x.command.v1", b"{}", "a")


def note(name: str) -> HistoryEntry:
    at = datetime.now(UTC) - timedelta(hours=1)
    return HistoryEntry(Direction.IN, name, "x.reply.v1", name, None, "ignored", "", {}, at)


async def write(store: PostgresSagaStore, saga_type: str | None, name: str) -> None:
    """For ``saga_type``: a saga whose timer is due, one finished an hour ago, and an
    ignored message (history of no saga) with an outbox row; without a type, the last."""
    if saga_type is not None:
        due = awaiting_stock(f"{name}-due", datetime.now(UTC) - timedelta(hours=1), saga_type)
        old = awaiting_stock(f"{name}-old", datetime.now(UTC), saga_type).model_copy(
            update={
                "status": SagaStatus.COMPLETED,
                "deadline": None,
                "updated_at": datetime.now(UTC) - timedelta(hours=1),
            }
        )
        for saga in (due, old):
            change = Change(saga_type, f"start-{saga.saga_id}", saga.saga_id, saga, None, ())
            await store.commit(change)
    ignored = Change("replies", f"m-{name}", None, None, None, (note(name),), (command(name),))
    await store.commit(ignored)


async def test_each_app_takes_its_own_rows_and_those_of_no_app(
    settings: Settings, pool: asyncpg.Pool
) -> None:
    lease = timedelta(0)  # every outbox row is claimable at once
    store_a, store_b = PostgresSagaStore(pool, lease, A), PostgresSagaStore(pool, lease, B)
    legacy = PostgresSagaStore(pool, lease)
    await write(store_a, "a_saga", "a")
    await write(store_b, "b_saga", "b")
    await write(legacy, None, "legacy")
    rows = await sql(settings, "SELECT app, count(*) AS n FROM outbox GROUP BY app")
    assert {r["app"]: r["n"] for r in rows} == {"app-a": 1, "app-b": 1, None: 1}

    now = datetime.now(UTC)
    [timer] = await store_a.claim_timers(now, timedelta(seconds=30), 10)
    assert timer.instance.saga_type == "a_saga"
    [timer] = await store_b.claim_timers(now, timedelta(seconds=30), 10)
    assert timer.instance.saga_type == "b_saga"

    assert (await store_a.outbox_backlog())[0] == 2  # its own row and the one of no app
    assert (await legacy.outbox_backlog())[0] == 3
    claimed = await store_a.claim_unsent(timedelta(seconds=30), 10)
    assert {row.message.message_id for row in claimed} == {"cmd-a", "cmd-legacy"}
    assert [r.message.message_id for r in await store_b.claim_unsent(lease, 10)] == ["cmd-b"]
    await store_a.mark_sent([row.outbox_id for row in claimed])

    # purging everything older than nothing: each app purges only its own (and no app's)
    assert await store_a.purge_finished(timedelta(0)) == 1
    assert await store_a.purge_orphan_history(timedelta(0)) == 2  # its own, no app's
    assert await store_a.purge_sent(timedelta(0)) == 2
    assert await store_a.purge_inbox(timedelta(0)) == 4  # 3 messages of its own, 1 of no app
    left = await sql(
        settings,
        "SELECT (SELECT count(*) FROM saga WHERE saga_type = 'b_saga') AS sagas,"
        " (SELECT count(*) FROM saga_history WHERE app = 'app-b') AS history,"
        " (SELECT count(*) FROM saga_inbox WHERE app = 'app-b') AS inbox,"
        " (SELECT count(*) FROM outbox WHERE app = 'app-b') AS outbox,"
        " (SELECT count(*) FROM saga WHERE saga_type = 'a_saga') AS a_sagas",
    )
    assert dict(left[0]) == {"sagas": 2, "history": 1, "inbox": 3, "outbox": 1, "a_sagas": 1}


async def test_a_saga_type_is_one_apps_and_stays_so(
    settings: Settings, pool: asyncpg.Pool, bus: TestBus
) -> None:
    assert await register_app(pool, "app-a", ["a_saga"]) == AppScope("app-a", ("a_saga",))
    with pytest.raises(AppConflictError, match=r"'a_saga' by app 'app-a'"):
        await register_app(pool, "app-b", ["b_saga", "a_saga"])
    assert await register_app(pool, "app-b", ["b_saga"]) == AppScope("app-b", ("b_saga",))
    # a type the app no longer defines stays its own (its timers are still its to fire)
    assert await register_app(pool, "app-a", ["c_saga"]) == AppScope("app-a", ("a_saga", "c_saga"))

    # a second app running the example's saga on the example's database does not start
    example = await start_coordinator(settings)  # the example app: order_to_cash is its own
    try:
        service = await _stopping(start_coordinator(settings, app="order-to-cash-copy"))
    finally:
        await example.stop()
    assert isinstance(service, AppConflictError)
    assert "'order_to_cash' by app 'order-to-cash'" in str(service)


async def _stopping(starting: Awaitable[CoordinatorService]) -> CoordinatorService | Exception:
    try:
        service = await starting
    except AppConflictError as exc:
        return exc
    await service.stop()
    return service
