"""The read side's queries (``SagaReader``: keyset pages of sagas, stats), on both stores.

Fixtures and factories are those of ``test_store_contract``.
"""

from __future__ import annotations

from datetime import timedelta

import pytest

from bus_orchestrator.core.state import SagaInstance, SagaStatus
from bus_orchestrator.ports import (
    CommitResult,
    OldestRunning,
    PageAfter,
    SagaCount,
    SagaFilter,
    SagaStats,
)
from tests.integration import test_store_contract as contract
from tests.integration.test_store_contract import T0, Store, bump, change, make_saga

pytestmark = pytest.mark.integration

backend_settings = contract.backend_settings
harness = contract.harness
store = contract.store


async def insert(store: Store, *sagas: SagaInstance) -> None:
    for saga in sagas:
        result = await store.commit(change(f"start-{saga.saga_type}-{saga.correlation_id}", saga))
        assert result.result is CommitResult.COMMITTED


async def all_pages(store: Store, where: SagaFilter, size: int) -> list[list[str]]:
    pages: list[list[str]] = []
    after = None
    while True:
        page = await store.page_sagas(where, after, size)
        if not page:
            return pages
        pages.append([s.correlation_id for s in page])
        after = PageAfter(page[-1].created_at, page[-1].saga_id)


def at(seconds: float) -> dict[str, object]:
    return {"created_at": T0 + timedelta(seconds=seconds)}


async def test_pages_are_newest_first_with_ties_broken_by_saga_id(store: Store) -> None:
    sagas = [make_saga(f"s{n}", **at(n // 3)) for n in range(10)]  # threes share a time
    await insert(store, *sagas)
    expected = [
        s.correlation_id
        for s in sorted(sagas, key=lambda s: (-s.created_at.timestamp(), s.saga_id))
    ]
    for size in (1, 2, 3, 4, 10, 11):
        pages = await all_pages(store, SagaFilter(), size)
        assert [c for page in pages for c in page] == expected, size
        assert all(len(page) == size for page in pages[:-1])


async def test_a_page_is_stable_while_sagas_are_inserted(store: Store) -> None:
    await insert(store, *(make_saga(f"old{n}", **at(n)) for n in range(6)))
    first = await store.page_sagas(SagaFilter(), None, 3)
    assert [s.correlation_id for s in first] == ["old5", "old4", "old3"]
    # newer sagas come in meanwhile: they precede the first page, the next one is unmoved
    await insert(store, *(make_saga(f"new{n}", **at(100 + n)) for n in range(4)))
    after = PageAfter(first[-1].created_at, first[-1].saga_id)
    second = await store.page_sagas(SagaFilter(), after, 3)
    assert [s.correlation_id for s in second] == ["old2", "old1", "old0"]
    last = PageAfter(second[-1].created_at, second[-1].saga_id)
    assert await store.page_sagas(SagaFilter(), last, 3) == []


async def test_every_filter(store: Store) -> None:
    a = make_saga("a", **at(0))
    b = make_saga("b", saga_type="refund", **at(1))
    c = make_saga("c", status=SagaStatus.FAILED, **at(2))
    d = make_saga("a", saga_type="refund", **at(3))
    await insert(store, a, b, c, d)
    later = bump(a, updated_at=T0 + timedelta(seconds=50))
    assert (await store.commit(change("touch-a", later, a.version))).result is (
        CommitResult.COMMITTED
    )

    async def found(**where: object) -> list[str]:
        page = await store.page_sagas(SagaFilter(**where), None, 50)  # type: ignore[arg-type]
        return [f"{s.saga_type}/{s.correlation_id}" for s in page]

    assert await found() == ["refund/a", "order/c", "refund/b", "order/a"]
    assert await found(status=SagaStatus.FAILED) == ["order/c"]
    assert await found(saga_type="refund") == ["refund/a", "refund/b"]
    assert await found(saga_types=("order",)) == ["order/c", "order/a"]
    assert await found(saga_types=("order",), saga_type="refund") == []
    assert await found(correlation_id="a") == ["refund/a", "order/a"]
    assert await found(created_after=T0 + timedelta(seconds=1)) == ["refund/a", "order/c"]
    assert await found(created_before=T0 + timedelta(seconds=1)) == ["order/a"]
    assert await found(updated_before=T0 + timedelta(seconds=10)) == [
        "refund/a",
        "order/c",
        "refund/b",
    ]
    assert await found(saga_type="nope") == []
    assert await found(correlation_id="a\x00") == []
    assert await found(saga_type="order\x00") == []
    assert await store.find("a\x00") == []


async def test_stats_count_by_type_and_status_and_name_the_oldest_unfinished(
    store: Store,
) -> None:
    await insert(
        store,
        make_saga("o1", status=SagaStatus.COMPLETED, **at(0)),
        make_saga("o2", **at(1)),
        make_saga("o3", **at(2)),
        make_saga("r1", saga_type="refund", status=SagaStatus.COMPENSATING, **at(3)),
        make_saga("r2", saga_type="refund", status=SagaStatus.FAILED, **at(-5)),
    )
    stats = await store.saga_stats()
    assert stats.counts == (
        SagaCount("order", SagaStatus.COMPLETED, 1),
        SagaCount("order", SagaStatus.RUNNING, 2),
        SagaCount("refund", SagaStatus.COMPENSATING, 1),
        SagaCount("refund", SagaStatus.FAILED, 1),
    )
    o2, r1 = make_saga("o2"), make_saga("r1", saga_type="refund")
    assert stats.oldest_running == (
        OldestRunning("order", o2.saga_id, "o2", SagaStatus.RUNNING, T0 + timedelta(seconds=1)),
        OldestRunning(
            "refund", r1.saga_id, "r1", SagaStatus.COMPENSATING, T0 + timedelta(seconds=3)
        ),
    )
    only_refunds = await store.saga_stats(["refund"])
    assert [c.saga_type for c in only_refunds.counts] == ["refund", "refund"]
    assert await store.saga_stats(["nope"]) == SagaStats()
