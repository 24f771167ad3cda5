"""The fault suite's own instrument: the fakes' ledger honours idempotency keys, and its
counters do see a repeated side effect and a forward effect after its compensation (or the
storms' zeros would prove nothing)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from decimal import Decimal

import asyncpg
import pytest

from bus_orchestrator.config import Settings
from bus_orchestrator.store.postgres import create_pool
from tests.faults.fleet import duplicated
from tests.faults.ledger import Ledger

pytestmark = [pytest.mark.faults, pytest.mark.timeout(60)]


@pytest.fixture
async def ledger(settings: Settings, ledger_schema: str) -> AsyncIterator[Ledger]:
    pool: asyncpg.Pool = await create_pool(settings.model_copy(update={"db_pool_size": 2}))
    try:
        yield Ledger(pool)
    finally:
        await pool.close()


async def test_the_same_key_has_one_effect(settings: Settings, ledger: Ledger) -> None:
    first = await ledger.charge("k1", "o-1", Decimal("10.00"), "EUR")
    again = await ledger.charge("k1", "o-1", Decimal("10.00"), "EUR")
    assert first == again and first.effect
    refund = await ledger.refund("k2", "o-1", None)
    assert refund.effect and refund.ref == first.ref
    assert not (await ledger.refund("k3", "o-1", None)).effect  # nothing left to refund
    assert await duplicated(settings) == (0, 0)


async def test_the_business_rules_of_the_example_fakes(ledger: Ledger) -> None:
    assert not (await ledger.reserve("r1", "o-1", ["OOS-1", "SKU-2"])).effect
    assert (await ledger.reserve("r2", "o-2", ["SKU-2"])).effect
    assert not (await ledger.charge("c1", "o-1", Decimal("10000.01"), "EUR")).effect
    assert (await ledger.charge("c2", "o-2", Decimal("10000"), "EUR")).effect
    assert not (await ledger.ship("s1", "o-1", "ZZ")).effect
    assert (await ledger.ship("s2", "o-2", "DE")).effect


async def test_a_second_charge_is_counted(settings: Settings, ledger: Ledger) -> None:
    await ledger.charge("k1", "o-1", Decimal("10.00"), "EUR")
    await ledger.charge("k2", "o-1", Decimal("10.00"), "EUR")  # a new command id, same step
    assert await duplicated(settings) == (1, 0)


async def test_a_charge_after_its_refund_is_counted(settings: Settings, ledger: Ledger) -> None:
    assert not (await ledger.refund("k1", "o-1", None)).effect  # overtook its charge
    await ledger.charge("k2", "o-1", Decimal("10.00"), "EUR")
    await ledger.release("k3", "o-2", None)
    await ledger.reserve("k4", "o-2", ["SKU-1"])
    assert await duplicated(settings) == (0, 2)
