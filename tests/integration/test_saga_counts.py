"""The counts of ``GET /stats`` (``saga_stats``) stay exact on both stores whatever writes
the sagas: the engine's commits, purges, and (Postgres) any SQL at all, since a trigger
keeps them (migration 0012), also while several readers fold the deltas at once."""

from __future__ import annotations

import asyncio
from datetime import timedelta

import asyncpg
import pytest

from bus_orchestrator.config import Settings
from bus_orchestrator.core.state import SagaStatus
from bus_orchestrator.ports import CommitResult, SagaCount
from bus_orchestrator.store.migrate import migrate
from bus_orchestrator.store.postgres import PostgresSagaStore, create_pool
from tests.integration import test_store_contract as contract
from tests.integration.test_store_contract import T0, Store, bump, change, make_saga

pytestmark = pytest.mark.integration

backend_settings = contract.backend_settings
harness = contract.harness
store = contract.store


def counted(stats_counts: tuple[SagaCount, ...]) -> dict[tuple[str, str], int]:
    return {(c.saga_type, c.status.value): c.count for c in stats_counts}


async def test_counts_follow_commits_and_purges(store: Store) -> None:
    sagas = [make_saga(f"o{n}") for n in range(4)] + [make_saga("r1", saga_type="refund")]
    for saga in sagas:
        assert (await store.commit(change(f"start-{saga.correlation_id}", saga))).result is (
            CommitResult.COMMITTED
        )
    assert counted((await store.saga_stats()).counts) == {
        ("order", "running"): 4,
        ("refund", "running"): 1,
    }

    ends = [SagaStatus.COMPLETED, SagaStatus.COMPLETED, SagaStatus.FAILED]
    for saga, status in zip(sagas, ends, strict=False):
        done = bump(saga, status=status, updated_at=saga.updated_at - timedelta(days=30))
        committed = await store.commit(change(f"end-{saga.correlation_id}", done, saga.version))
        assert committed.result is CommitResult.COMMITTED
    # A version bump that keeps the status counts nothing twice.
    same = bump(sagas[3])
    assert (await store.commit(change("again", same, sagas[3].version))).result is (
        CommitResult.COMMITTED
    )
    assert counted((await store.saga_stats()).counts) == {
        ("order", "completed"): 2,
        ("order", "failed"): 1,
        ("order", "running"): 1,
        ("refund", "running"): 1,
    }

    assert await store.purge_finished(timedelta(days=1)) == 3
    assert counted((await store.saga_stats()).counts) == {
        ("order", "running"): 1,
        ("refund", "running"): 1,
    }
    assert counted((await store.saga_stats(["refund"])).counts) == {("refund", "running"): 1}


async def truth(conn: asyncpg.Connection) -> dict[tuple[str, str], int]:
    rows = await conn.fetch("SELECT saga_type, status, count(*) AS n FROM saga GROUP BY 1, 2")
    return {(r["saga_type"], r["status"]): r["n"] for r in rows}


async def test_counts_are_exact_under_any_sql_and_concurrent_readers(
    settings: Settings, db_schema: str
) -> None:
    conn = await asyncpg.connect(settings.database_url)
    await migrate(conn, db_schema)
    await conn.execute(f'SET search_path TO "{db_schema}"')
    pool = await create_pool(settings.model_copy(update={"db_pool_size": 6}))
    store = PostgresSagaStore(pool, timedelta(seconds=1))
    try:
        for n in range(30):
            saga = make_saga(f"c{n}", saga_type=("order", "refund")[n % 2])
            await store.commit(change(f"start-{n}", saga))

        async def write(n: int) -> None:
            # Writes no store method makes: an operator's SQL, a type renamed.
            async with pool.acquire() as writer:
                await writer.execute(
                    "UPDATE saga SET status = $1 WHERE correlation_id = $2",
                    ("completed", "failed", "compensating")[n % 3],
                    f"c{n}",
                )
                if n % 5 == 0:
                    await writer.execute("DELETE FROM saga WHERE correlation_id = $1", f"c{n}")
                if n % 7 == 0:
                    await writer.execute(
                        "UPDATE saga SET saga_type = 'renamed' WHERE correlation_id = $1", f"c{n}"
                    )

        async def read() -> None:
            for _ in range(5):
                await store.saga_stats()

        async def fold() -> None:
            for _ in range(5):
                await store.fold_counts()

        await asyncio.gather(*(write(n) for n in range(30)), read(), read(), fold())
        stats = await store.saga_stats()
        expected = await truth(conn)
        assert counted(stats.counts) == expected
        assert sum(expected.values()) == 30 - 6  # c0, c5, ... c25 deleted
        assert await conn.fetchval("SELECT count(*) FROM saga_count_delta") == 0
        await store.commit(change("late", make_saga("late")))
        assert await store.fold_counts() == 1  # the housekeeping's fold
        assert await store.fold_counts() == 0
        assert counted((await store.saga_stats()).counts) == await truth(conn)
    finally:
        await pool.close()
        await conn.close()


async def test_the_migration_counts_the_sagas_already_there(
    settings: Settings, db_schema: str
) -> None:
    """Sagas written before migration 0012 are counted from the start."""
    from bus_orchestrator.store.migrate import available

    conn = await asyncpg.connect(settings.database_url)
    try:
        await conn.execute(f'SET search_path TO "{db_schema}"')
        later = []
        for version, sql in available():
            if version >= "0012":
                later.append(sql)
            else:
                await conn.execute(sql)
        for n in range(3):
            await conn.execute(
                "INSERT INTO saga (saga_id, saga_type, correlation_id, status, version, state,"
                " created_at, updated_at) VALUES (gen_random_uuid(), 'order', $1, $2, 1, '{}',"
                " now(), now())",
                f"old-{n}",
                ("running", "completed", "completed")[n],
            )
        for sql in later:
            await conn.execute(sql)
        await conn.execute(
            "INSERT INTO saga (saga_id, saga_type, correlation_id, status, version, state,"
            " created_at, updated_at) VALUES (gen_random_uuid(), 'order', 'new', 'running', 1,"
            " '{}', now(), now())"
        )
        pool = await create_pool(settings.model_copy(update={"db_pool_size": 1}))
        try:
            stats = await PostgresSagaStore(pool, timedelta(seconds=1)).saga_stats()
        finally:
            await pool.close()
        assert counted(stats.counts) == {("order", "completed"): 2, ("order", "running"): 2}
    finally:
        await conn.close()


OLDEST_BY_SCAN = """
SELECT DISTINCT ON (saga_type) saga_type, saga_id::text AS saga_id, status, created_at
FROM saga WHERE status NOT IN ('completed', 'compensated', 'failed')
ORDER BY saga_type, created_at, saga_id
"""


async def test_the_oldest_unfinished_is_what_a_scan_of_every_saga_finds(
    settings: Settings, db_schema: str
) -> None:
    """oldest_running.sql reads a few index entries per type; the answer is the one of
    the plain query over every saga, ties on the creation time included."""
    conn = await asyncpg.connect(settings.database_url)
    await migrate(conn, db_schema)
    await conn.execute(f'SET search_path TO "{db_schema}"')
    pool = await create_pool(settings.model_copy(update={"db_pool_size": 1}))
    store = PostgresSagaStore(pool, timedelta(seconds=1))
    try:
        statuses = ["running", "compensating", "suspended", "completed", "failed"]
        for n in range(40):
            await conn.execute(
                "INSERT INTO saga (saga_id, saga_type, correlation_id, status, version, state,"
                " created_at, updated_at) VALUES (gen_random_uuid(), $1, $2, $3, 1, '{}',"
                " $4, $4)",
                ("order", "refund", "ship")[n % 3],
                f"t{n}",
                statuses[n % 5],
                T0 + timedelta(seconds=n // 6),  # six sagas share each time
            )
        expected = [
            (r["saga_type"], r["saga_id"], r["status"], r["created_at"])
            for r in await conn.fetch(OLDEST_BY_SCAN)
        ]
        for types in (None, ["order", "ship"]):
            found = (await store.saga_stats(types)).oldest_running
            assert [(o.saga_type, o.saga_id, o.status.value, o.created_at) for o in found] == [
                e for e in expected if types is None or e[0] in types
            ]
        assert len(expected) == 3
    finally:
        await pool.close()
        await conn.close()
