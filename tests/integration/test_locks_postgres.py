"""Entity locks on the real services: 50 sagas of one lock key, two coordinators; and a
grant racing the commit that ends the saga it grants.

The sagas all post to one account, so they all need the key ``account:acc-1``. They are
started at once and handled by two coordinators consuming one queue (each with its own
pool, as two processes would be), with the lock sweep running often besides. From their
histories: each saga was granted the key once, and between its grant and its end no
other saga was granted it; all completed, and no lock row is left.
"""

from __future__ import annotations

import asyncio
import itertools
import random
import uuid
from collections.abc import AsyncIterator
from datetime import datetime, timedelta
from typing import Annotated

import aio_pika
import pytest
from pydantic import BaseModel, ConfigDict, Field

from bus_orchestrator.adapters import Adapter, CommandContext
from bus_orchestrator.app import App
from bus_orchestrator.config import Settings
from bus_orchestrator.core import SagaStatus
from bus_orchestrator.core.decision import LOCKS_GRANTED_TYPE
from bus_orchestrator.core.definition import SagaDefinition, Step
from bus_orchestrator.core.lifecycle import end_event
from bus_orchestrator.core.messages import Command, Event, Reply
from bus_orchestrator.ports import CommitResult, Direction, SagaLocks
from bus_orchestrator.store.postgres import PostgresSagaStore, create_pool
from tests.conftest import TestBus
from tests.integration.harness import migrated, publish, sql, wait_for_status
from tests.integration.test_store_contract import bump, change, make_saga
from tests.integration.test_two_apps import Running

pytestmark = pytest.mark.integration

Id = Annotated[str, Field(min_length=1, max_length=200)]
SAGAS = 50
ACCOUNT = "acc-1"


class PostingRequested(Event):
    message_type = "ledger.posting_requested.v1"
    posting_id: Id
    account: Id


class Debit(Command):
    message_type = "bank.debit.v1"
    posting_id: Id


class Debited(Reply):
    message_type = "bank.debited.v1"


class Credit(Command):
    message_type = "bank.credit.v1"
    posting_id: Id


class Credited(Reply):
    message_type = "bank.credited.v1"


class Posting(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")
    posting_id: str
    account: str


def posting_saga() -> SagaDefinition[Posting, PostingRequested]:
    return SagaDefinition(
        name="posting",
        data_model=Posting,
        started_by=PostingRequested,
        correlate=lambda e: e.posting_id,
        initial_data=lambda e: Posting(posting_id=e.posting_id, account=e.account),
        steps=(
            Step(
                name="debit",
                command=lambda d: Debit(posting_id=d.posting_id),
                succeeds_on=(Debited,),
                sends=Debit,
            ),
            Step(
                name="credit",
                command=lambda d: Credit(posting_id=d.posting_id),
                succeeds_on=(Credited,),
                sends=Credit,
            ),
        ),
        locks=("account:{account}",),
    )


def bank() -> Adapter:
    adapter = Adapter("bank")

    @adapter.handles(Debit, replies=(Debited,))
    async def debit(command: Debit, ctx: CommandContext) -> Debited:
        await asyncio.sleep(random.uniform(0, 0.01))
        return Debited()

    @adapter.handles(Credit, replies=(Credited,))
    async def credit(command: Credit, ctx: CommandContext) -> Credited:
        await asyncio.sleep(random.uniform(0, 0.01))
        return Credited()

    return adapter


@pytest.fixture
async def coordinators(
    settings: Settings, db_schema: str, bus: TestBus
) -> AsyncIterator[list[Running]]:
    """Two coordinators (and adapter runners) of one app on one queue and one schema."""
    await migrated(settings)
    app = App("ledger", sagas=[posting_saga()], adapters=[bank()])
    fast = settings.model_copy(update={"lock_sweep_seconds": 0.1, "db_pool_size": 4})
    running = [Running(app, fast), Running(app, fast)]
    try:
        for one in running:
            await one.start(bus)
        yield running
    finally:
        for one in running:
            await one.stop()


async def test_no_two_sagas_hold_one_key_at_once(
    settings: Settings, bus: TestBus, coordinators: list[Running]
) -> None:
    run = uuid.uuid4().hex[:6]
    ids = [f"p-{run}-{n:02d}" for n in range(SAGAS)]
    connection = await aio_pika.connect(settings.amqp_url)
    try:
        channel = await connection.channel(publisher_confirms=True)
        await asyncio.gather(
            *(
                publish(
                    channel,
                    bus.topology.events,
                    PostingRequested(posting_id=i, account=ACCOUNT),
                    correlation_id=i,
                )
                for i in ids
            )
        )
    finally:
        await connection.close()

    done = await wait_for_status(settings, ids, {SagaStatus.COMPLETED}, within=120)
    assert len(done) == SAGAS

    pool = await create_pool(settings.model_copy(update={"db_pool_size": 1}))
    store = PostgresSagaStore(pool, timedelta(seconds=1))
    ended = end_event("posting", "completed").message_type
    held: list[tuple[datetime, datetime, str]] = []
    try:
        for saga in done.values():
            assert saga.locks == (f"account:{ACCOUNT}",) and not saga.waiting_for_locks
            history = await store.history(saga.saga_id)
            granted = [e.at for e in history if e.message_type == LOCKS_GRANTED_TYPE]
            finished = [
                e.at for e in history if e.direction is Direction.OUT and e.message_type == ended
            ]
            assert len(granted) == 1 and len(finished) == 1, [e.message_type for e in history]
            commands = [
                e.at
                for e in history
                if e.direction is Direction.OUT and e.message_type.startswith("bank.")
            ]
            assert len(commands) == 2 and granted[0] <= min(commands)
            held.append((granted[0], finished[0], saga.correlation_id))
    finally:
        await pool.close()

    held.sort()
    overlaps = [
        (before[2], after[2]) for before, after in itertools.pairwise(held) if after[0] < before[1]
    ]
    assert overlaps == [], "sagas granted the key while another still held it"
    assert await sql(settings, "SELECT lock_key, saga_id FROM saga_lock") == []


async def test_a_saga_that_ends_as_it_is_granted_leaves_no_lock_behind(
    settings: Settings, db_schema: str
) -> None:
    """A grant and the commit that ends the saga it grants, at the same moment: whichever
    comes first, the saga holds nothing once both are done, and neither fails."""
    await migrated(settings)
    pool = await create_pool(settings.model_copy(update={"db_pool_size": 4}))
    store = PostgresSagaStore(pool, timedelta(seconds=1))
    try:
        for n in range(40):
            keys = (f"race:{n}:a", f"race:{n}:b")
            saga = make_saga(f"race-{n}").model_copy(
                update={"locks": keys, "waiting_for_locks": True}
            )
            assert (await store.commit(change(f"s{n}", saga))).result is CommitResult.COMMITTED
            cancelled = bump(saga, status=SagaStatus.COMPENSATED, waiting_for_locks=False)
            end = change(f"e{n}", cancelled, saga.version)
            _, ended = await asyncio.gather(store.grant_locks(list(keys)), store.commit(end))
            assert ended.result is CommitResult.COMMITTED
            assert await store.saga_locks(saga.saga_id) == SagaLocks()
    finally:
        await pool.close()
    assert await sql(settings, "SELECT lock_key FROM saga_lock") == []
