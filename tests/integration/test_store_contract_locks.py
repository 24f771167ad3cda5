"""The store contract for entity locks, on both stores.

A saga is queued for its keys by the commit that starts it waiting, granted all its keys at
once when each is free and it is first in line for each, and leaves every line (holding or
waiting) with the commit that gives it a final status. Fixtures and factories are those
of ``test_store_contract``.
"""

from __future__ import annotations

import asyncio

import pytest

from bus_orchestrator.core.state import SagaInstance, SagaStatus
from bus_orchestrator.ports import CommitResult, SagaLocks
from tests.integration import test_store_contract as contract
from tests.integration.test_store_contract import Store, bump, change, make_saga

pytestmark = pytest.mark.integration

backend_settings = contract.backend_settings
harness = contract.harness
store = contract.store


def waiting(correlation_id: str, *keys: str) -> SagaInstance:
    """A saga just started, waiting for ``keys``."""
    return make_saga(correlation_id).model_copy(
        update={"locks": tuple(sorted(keys)), "waiting_for_locks": True}
    )


async def start(store: Store, correlation_id: str, *keys: str) -> SagaInstance:
    saga = waiting(correlation_id, *keys)
    result = await store.commit(change(f"start-{correlation_id}", saga))
    assert result.result is CommitResult.COMMITTED
    return saga


async def end(store: Store, saga: SagaInstance) -> SagaInstance:
    """Give the saga (as last written) a final status."""
    current = (await store.find(saga.saga_id))[0]
    done = bump(current, status=SagaStatus.COMPLETED, waiting_for_locks=False)
    result = await store.commit(change(f"end-{saga.correlation_id}", done, current.version))
    assert result.result is CommitResult.COMMITTED
    return done


async def granted(store: Store, *keys: str) -> list[str]:
    """Grant ``keys``; the correlation ids of the sagas granted, sorted."""
    return sorted(g.correlation_id for g in await store.grant_locks(list(keys)))


async def line(store: Store, saga: SagaInstance) -> tuple[list[str], list[tuple[str, int]]]:
    """The keys a saga holds, and those it waits for with its place."""
    locks = await store.saga_locks(saga.saga_id)
    return [h.key for h in locks.held], [(a.key, a.place) for a in locks.awaited]


async def test_sagas_wait_in_line_and_are_granted_as_each_holder_ends(store: Store) -> None:
    a = await start(store, "a", "customer:1")
    b = await start(store, "b", "customer:1")
    c = await start(store, "c", "customer:1")
    assert await line(store, a) == ([], [("customer:1", 1)])
    assert await line(store, c) == ([], [("customer:1", 3)])

    assert await granted(store, "customer:1") == ["a"]
    assert await granted(store, "customer:1") == []  # held: nobody else gets it
    assert await line(store, a) == (["customer:1"], [])
    assert await line(store, b) == ([], [("customer:1", 1)])
    assert await line(store, c) == ([], [("customer:1", 2)])
    b_locks = await store.saga_locks(b.saga_id)
    assert b_locks.awaited[0].holder == a.saga_id

    await end(store, a)
    assert await store.saga_locks(a.saga_id) == SagaLocks()
    assert await granted(store, "customer:1") == ["b"]
    await end(store, b)
    assert await granted(store, "customer:1") == ["c"]
    await end(store, c)
    assert await store.grantable_keys(10) == []


async def test_a_saga_takes_all_its_keys_at_once_and_never_jumps_the_line(
    store: Store,
) -> None:
    t1 = await start(store, "t1", "account:a", "account:b")
    assert await granted(store, "account:a", "account:b") == ["t1"]
    t2 = await start(store, "t2", "account:b", "account:c")
    t3 = await start(store, "t3", "account:c", "account:d")
    # t2 waits for b; t3 could take c and d, but t2 is ahead of it for c.
    assert await granted(store, "account:b", "account:c", "account:d") == []
    assert await store.grantable_keys(10) == []
    assert await line(store, t2) == ([], [("account:b", 1), ("account:c", 1)])
    assert await line(store, t3) == ([], [("account:c", 2), ("account:d", 1)])

    await end(store, t1)
    assert await store.grantable_keys(10) == ["account:b", "account:c"]
    assert await granted(store, "account:a", "account:b") == ["t2"]
    assert await line(store, t2) == (["account:b", "account:c"], [])
    await end(store, t2)
    assert await granted(store, "account:b", "account:c") == ["t3"]


async def test_a_grant_for_one_key_gives_a_saga_all_of_its_keys(store: Store) -> None:
    t1 = await start(store, "t1", "account:a", "account:b")
    assert await granted(store, "account:b") == ["t1"]
    assert await line(store, t1) == (["account:a", "account:b"], [])


async def test_a_waiting_saga_that_ends_leaves_the_line(store: Store) -> None:
    a = await start(store, "a", "customer:1")
    assert await granted(store, "customer:1") == ["a"]
    b = await start(store, "b", "customer:1")
    c = await start(store, "c", "customer:1")
    await end(store, b)  # cancelled while it waited
    assert await store.saga_locks(b.saga_id) == SagaLocks()
    assert await line(store, c) == ([], [("customer:1", 1)])
    await end(store, a)
    assert await granted(store, "customer:1") == ["c"]


async def test_sagas_granted_but_not_told_are_found_until_told(store: Store) -> None:
    a = await start(store, "a", "customer:1")
    await start(store, "b", "customer:2")
    assert await store.untold_grants(10) == []
    assert await store.grantable_keys(10) == ["customer:1", "customer:2"]
    assert await store.grantable_keys(1) in (["customer:1"], ["customer:2"])
    assert await granted(store, "customer:1") == ["a"]
    (untold,) = await store.untold_grants(10)
    assert (untold.saga_id, untold.saga_type, untold.correlation_id) == (a.saga_id, "order", "a")

    told = bump(a, waiting_for_locks=False)
    assert (await store.commit(change("told-a", told, a.version))).result is CommitResult.COMMITTED
    assert await store.untold_grants(10) == []
    assert await line(store, a) == (["customer:1"], [])  # told, it holds on


async def test_a_start_that_conflicts_queues_nothing(store: Store) -> None:
    await start(store, "a", "customer:1")
    again = waiting("a", "customer:1", "customer:9")
    assert (await store.commit(change("start-a-again", again))).result is CommitResult.CONFLICT
    assert await store.grantable_keys(10) == ["customer:1"]


async def test_an_end_that_conflicts_releases_nothing(store: Store) -> None:
    a = await start(store, "a", "customer:1")
    assert await granted(store, "customer:1") == ["a"]
    stale = bump(a, version=a.version + 5, status=SagaStatus.COMPLETED)
    result = await store.commit(change("end-a", stale, a.version + 4))
    assert result.result is CommitResult.CONFLICT
    assert await line(store, a) == (["customer:1"], [])


async def test_sagas_without_locks_take_no_place_in_any_line(store: Store) -> None:
    plain = make_saga("plain")
    assert (await store.commit(change("start-plain", plain))).result is CommitResult.COMMITTED
    assert await store.saga_locks(plain.saga_id) == SagaLocks()
    assert await store.grantable_keys(10) == []
    assert await store.saga_locks("not-a-uuid") == SagaLocks()


async def test_concurrent_grants_give_each_key_to_one_saga(store: Store) -> None:
    sagas = [await start(store, f"s{n}", "customer:1", f"own:{n}") for n in range(12)]
    keys = ["customer:1", *(f"own:{n}" for n in range(12))]
    rounds = await asyncio.gather(*(store.grant_locks(keys) for _ in range(8)))
    winners = [g.correlation_id for grants in rounds for g in grants]
    assert winners == ["s0"]
    holders = [s for s in sagas if (await store.saga_locks(s.saga_id)).held]
    assert [s.correlation_id for s in holders] == ["s0"]
