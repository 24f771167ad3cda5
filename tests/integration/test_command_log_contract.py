"""The CommandLog contract for claims, tombstones and retention, on both logs.

The in-memory log is the twin of the Postgres one: every test here but the last few runs
against both. Time passes on a fake clock for the in-memory log, and by moving the rows'
timestamps back for Postgres.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import asyncpg
import pytest

from bus_orchestrator.adapters import (
    CommandLog,
    CommandRecord,
    InMemoryCommandLog,
    PostgresCommandLog,
    Standing,
)
from bus_orchestrator.adapters.command_log import PURGE_BATCH
from bus_orchestrator.config import Settings
from bus_orchestrator.ports import OutboxMessage
from bus_orchestrator.store.migrate import migrate
from bus_orchestrator.store.postgres import create_pool

pytestmark = pytest.mark.integration

LEASE = timedelta(minutes=5)


@dataclass
class Harness:
    log: CommandLog
    age: Callable[[timedelta], Awaitable[None]]
    """Make every row (and every lease) older by this much."""


class FakeClock:
    def __init__(self) -> None:
        self.now = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now


@pytest.fixture
async def migrated(database_url: str, db_schema: str) -> str:
    conn = await asyncpg.connect(database_url)
    try:
        await migrate(conn, db_schema)
    finally:
        await conn.close()
    return db_schema


@pytest.fixture
async def pool(settings: Settings, migrated: str) -> AsyncIterator[asyncpg.Pool]:
    pool = await create_pool(settings)
    try:
        yield pool
    finally:
        await pool.close()


@pytest.fixture(params=["memory", "postgres"])
async def harness(
    request: pytest.FixtureRequest, settings: Settings, migrated: str
) -> AsyncIterator[Harness]:
    if request.param == "memory":
        clock = FakeClock()

        async def advance(by: timedelta) -> None:
            clock.now += by

        yield Harness(InMemoryCommandLog(clock=clock), advance)
        return
    pool = await create_pool(settings)

    async def backdate(by: timedelta) -> None:
        await pool.execute(
            "UPDATE adapter_claim SET created_at = created_at - $1::interval,"
            " lease_until = lease_until - $1::interval",
            by,
        )
        await pool.execute(
            "UPDATE adapter_command SET processed_at = processed_at - $1::interval", by
        )

    try:
        yield Harness(PostgresCommandLog(pool), backdate)
    finally:
        await pool.close()


def reply(command_id: str, body: bytes = b'{"order_id": "o1"}') -> OutboxMessage:
    return OutboxMessage(
        message_id=f"reply-{command_id}",
        message_type="payments.payment_declined.v1",
        exchange="x.bus.replies",
        routing_key="payments.payment_declined.v1",
        body=body,
        content_type="application/json",
        headers={"ce-id": f"reply-{command_id}"},
        correlation_id="o1",
    )


def record(command_id: str, adapter: str = "payments") -> CommandRecord:
    return CommandRecord(adapter, command_id, "payments.charge_payment.v1", "o1", reply(command_id))


async def test_a_compensation_first_lays_a_tombstone_that_refuses_the_command(
    harness: Harness,
) -> None:
    log = harness.log

    laid = await log.tombstone("payments", "k1", "f1")
    refused = await log.claim("payments", "f1", LEASE)

    assert laid.standing is Standing.FORWARD_UNSEEN and laid.reply is None
    assert refused.standing is Standing.COMPENSATED
    assert refused.compensated_by == "k1"
    assert refused.reply is None
    # the refusal is recorded like any reply, and comes back with the next claim
    recorded = await log.record(record("f1"))
    assert recorded.inserted and recorded.tombstoned
    again = await log.claim("payments", "f1", LEASE)
    assert again.standing is Standing.COMPENSATED
    assert again.reply == reply("f1")


async def test_a_second_compensation_finds_the_tombstone(harness: Harness) -> None:
    await harness.log.tombstone("payments", "k1", "f1")

    assert (await harness.log.tombstone("payments", "k2", "f1")).standing is (
        Standing.FORWARD_UNSEEN
    )
    assert (await harness.log.claim("payments", "f1", LEASE)).compensated_by == "k1"


async def test_a_compensation_waits_for_a_claim_until_its_outcome_is_recorded(
    harness: Harness,
) -> None:
    log = harness.log

    claimed = await log.claim("payments", "f1", LEASE)
    while_under_way = await log.tombstone("refunds", "k1", "f1")
    recorded = await log.record(record("f1"))
    after = await log.tombstone("refunds", "k1", "f1")

    assert claimed.standing is Standing.CLAIMED and claimed.reply is None
    assert while_under_way.standing is Standing.FORWARD_UNDER_WAY
    assert recorded.inserted and not recorded.tombstoned
    assert after.standing is Standing.FORWARD_SETTLED
    # and the command, delivered again, is answered with its own reply, not refused
    again = await log.claim("payments", "f1", LEASE)
    assert again.standing is Standing.CLAIMED and again.reply == reply("f1")


async def test_a_redelivery_takes_the_claim_over_and_renews_its_lease(harness: Harness) -> None:
    log = harness.log
    await log.claim("payments", "f1", LEASE)
    await harness.age(LEASE - timedelta(seconds=1))

    assert (await log.claim("payments", "f1", LEASE)).standing is Standing.CLAIMED
    await harness.age(timedelta(seconds=2))  # past the first lease, within the renewed one

    assert (await log.tombstone("payments", "k1", "f1")).standing is Standing.FORWARD_UNDER_WAY


async def test_a_live_call_renews_its_claim_until_it_is_settled(harness: Harness) -> None:
    log = harness.log
    await log.claim("payments", "f1", LEASE)
    await harness.age(LEASE - timedelta(seconds=1))

    assert await log.renew("f1", LEASE)
    await harness.age(timedelta(seconds=2))
    assert (await log.tombstone("refunds", "k1", "f1")).standing is Standing.FORWARD_UNDER_WAY
    await log.record(record("f1"))
    assert not await log.renew("f1", LEASE)  # settled: nothing left to renew
    assert not await log.renew("f-unknown", LEASE)


async def test_a_lapsed_claim_cannot_be_renewed(harness: Harness) -> None:
    log = harness.log
    await log.claim("payments", "f1", LEASE)
    await harness.age(LEASE)
    await log.tombstone("refunds", "k1", "f1")

    assert not await log.renew("f1", LEASE)
    assert (await log.claim("payments", "f1", LEASE)).standing is Standing.COMPENSATED


async def test_a_claim_that_ran_out_unsettled_gives_way_to_the_tombstone(
    harness: Harness,
) -> None:
    log = harness.log
    await log.claim("payments", "f1", LEASE)
    await harness.age(LEASE)

    lapsed = await log.tombstone("refunds", "k1", "f1")
    late = await log.claim("payments", "f1", LEASE)

    assert lapsed.standing is Standing.FORWARD_LAPSED
    assert late.standing is Standing.COMPENSATED and late.compensated_by == "k1"
    assert (await log.tombstone("refunds", "k1", "f1")).standing is Standing.FORWARD_LAPSED


async def test_an_outcome_recorded_after_the_claim_lapsed_says_so(harness: Harness) -> None:
    log = harness.log
    await log.claim("payments", "f1", LEASE)
    await harness.age(LEASE)
    await log.tombstone("refunds", "k1", "f1")

    recorded = await log.record(record("f1"))

    assert recorded.inserted and recorded.tombstoned


async def test_a_settled_claim_never_lapses(harness: Harness) -> None:
    log = harness.log
    await log.claim("payments", "f1", LEASE)
    await log.record(record("f1"))
    await harness.age(LEASE * 2)

    assert (await log.tombstone("refunds", "k1", "f1")).standing is Standing.FORWARD_SETTLED


async def test_a_released_claim_lets_the_compensation_tombstone_the_command(
    harness: Harness,
) -> None:
    log = harness.log
    await log.claim("payments", "f1", LEASE)

    await log.release("f1")

    assert (await log.tombstone("refunds", "k1", "f1")).standing is Standing.FORWARD_UNSEEN
    assert (await log.claim("payments", "f1", LEASE)).standing is Standing.COMPENSATED


async def test_release_leaves_tombstones_and_settled_claims_alone(harness: Harness) -> None:
    log = harness.log
    await log.tombstone("refunds", "k1", "f1")
    await log.claim("payments", "f2", LEASE)
    await log.record(record("f2"))

    await log.release("f1")
    await log.release("f2")

    assert (await log.claim("payments", "f1", LEASE)).standing is Standing.COMPENSATED
    assert (await log.tombstone("refunds", "k2", "f2")).standing is Standing.FORWARD_SETTLED


async def test_a_claim_on_a_command_already_recorded_is_settled_at_once(
    harness: Harness,
) -> None:
    """A command recorded before its claim existed (or whose claim was purged)."""
    log = harness.log
    await log.record(record("f1"))

    claimed = await log.claim("payments", "f1", LEASE)

    assert claimed.reply == reply("f1")
    assert (await log.tombstone("refunds", "k1", "f1")).standing is Standing.FORWARD_SETTLED


async def test_a_compensation_already_answered_comes_back_with_its_reply(
    harness: Harness,
) -> None:
    log = harness.log
    await log.tombstone("refunds", "k1", "f1")
    await log.record(record("k1", adapter="refunds"))

    again = await log.tombstone("refunds", "k1", "f1")

    assert again.reply == reply("k1")


async def test_claims_and_tombstones_are_keyed_by_command_id_across_adapters(
    harness: Harness,
) -> None:
    log = harness.log
    await log.tombstone("refunds", "k1", "f1")

    assert (await log.claim("payments", "f1", LEASE)).standing is Standing.COMPENSATED
    assert (await log.claim("billing", "f1", LEASE)).standing is Standing.COMPENSATED


async def test_purge_forgets_old_commands_claims_and_tombstones_only(harness: Harness) -> None:
    log = harness.log
    await log.tombstone("refunds", "k-old", "f-old")
    await log.record(record("k-old", adapter="refunds"))
    await log.claim("payments", "f-done", LEASE)
    await log.record(record("f-done"))
    await harness.age(timedelta(days=31))
    await log.claim("payments", "f-new", LEASE)
    await log.record(record("f-new"))

    removed = await log.purge(timedelta(days=30))

    assert removed == 4  # two commands, a tombstone and a claim
    assert await log.purge(timedelta(days=30)) == 0
    assert await log.find("payments", "f-new") == reply("f-new")
    assert await log.find("refunds", "k-old") is None
    assert await log.find("payments", "f-done") is None
    assert (await log.tombstone("refunds", "k1", "f-new")).standing is Standing.FORWARD_SETTLED
    # the tombstone is gone with its retention: the command would now run
    assert (await log.claim("payments", "f-old", LEASE)).standing is Standing.CLAIMED


# -- Postgres only: concurrency and batch size ------------------------------------------------


async def test_concurrent_claims_and_tombstones_always_agree(pool: asyncpg.Pool) -> None:
    """For each pair raced on separate connections, exactly one of them wins."""
    log = PostgresCommandLog(pool)
    pairs = 200

    async def race(i: int) -> tuple[Standing, Standing]:
        claim, tombstone = await asyncio.gather(
            log.claim("payments", f"f{i}", LEASE), log.tombstone("refunds", f"k{i}", f"f{i}")
        )
        return claim.standing, tombstone.standing

    outcomes = await asyncio.gather(*(race(i) for i in range(pairs)))

    allowed = {
        (Standing.CLAIMED, Standing.FORWARD_UNDER_WAY),  # the claim first
        (Standing.COMPENSATED, Standing.FORWARD_UNSEEN),  # the tombstone first
    }
    assert set(outcomes) <= allowed
    rows = await pool.fetch("SELECT command_id, compensated_by FROM adapter_claim")
    assert len(rows) == pairs
    tombstones = {row["command_id"] for row in rows if row["compensated_by"] is not None}
    assert tombstones == {f"f{i}" for i, o in enumerate(outcomes) if o[0] is Standing.COMPENSATED}


async def test_purge_deletes_in_bounded_batches(pool: asyncpg.Pool) -> None:
    log = PostgresCommandLog(pool)
    old = PURGE_BATCH + 3
    await pool.execute(
        "INSERT INTO adapter_command (adapter, command_id, command_type, reply_id, reply_type,"
        " reply, processed_at)"
        " SELECT 'payments', 'c' || i, 't', 'r' || i, 't', '{}'::jsonb, now() - interval '40 days'"
        " FROM generate_series(1, $1::int) AS i",
        old,
    )
    await pool.execute(
        "INSERT INTO adapter_claim (command_id, adapter, compensated_by, created_at)"
        " SELECT 'f' || i, 'refunds', 'k' || i, now() - interval '40 days'"
        " FROM generate_series(1, 2) AS i"
    )
    await log.record(record("recent"))

    batches = [await log.purge(timedelta(days=30)) for _ in range(3)]

    assert batches == [PURGE_BATCH + 2, 3, 0]
    assert await pool.fetchval("SELECT count(*) FROM adapter_command") == 1
    assert await pool.fetchval("SELECT count(*) FROM adapter_claim") == 0
