"""``bench/api_queries.py`` in its smoke mode (2,000 sagas, a few requests), so the
benchmark cannot rot: it loads, serves, requests and explains every query. No timing is
asserted; the benchmark itself reports them (bench/README.md)."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

import asyncpg
import pytest

from bus_orchestrator.config import Settings
from tests.e2e.processes import free_port

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]  # loads, then a process

ROOT = Path(__file__).resolve().parents[2]
ROUTES = (
    "GET /sagas/{saga_id} ",
    "GET /sagas/{correlation_id} ",
    "GET /sagas/{type}/{correlation_id} ",
    "GET /sagas status=failed&type ",
    "GET /sagas status=running&updated_before (stuck) ",
    "GET /sagas created range (a day) ",
    "GET /sagas type +cursor (deep page) ",
    "GET /sagas/{saga_id}/history ",
    "GET /stats ",
)


async def test_the_smoke_mode_runs_every_query_and_explains_it(
    settings: Settings, unique_name: str
) -> None:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "bench/api_queries.py",
        *("--sagas", "2000", "--rounds", "1", "--requests", "3", "--warmup", "1"),
        *("--write-cost", "5", "--schema", unique_name, "--port", str(free_port())),
        cwd=ROOT,
        env={"BENCH_PG_DSN": settings.database_url, "PATH": "/usr/bin:/bin"},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        out, err = await asyncio.wait_for(process.communicate(), 240)
    finally:
        conn = await asyncpg.connect(settings.database_url)
        try:
            for schema in (unique_name, f"{unique_name}_writes"):
                await conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
        finally:
            await conn.close()
    text = out.decode()
    assert process.returncode == 0, err.decode()[-3000:]
    assert "2,000 sagas" in text
    table = text.split("scans\n", 1)[1].split("\n\n", 1)[0].splitlines()
    for route in ROUTES:
        [row] = [line for line in table if line.startswith(route.strip() + "  ")]
        assert "Scan" in row, row  # each query's plan was explained
    assert text.count("\n== GET ") >= len(ROUTES)  # and its plan printed
    assert "0012 indexes + counts trigger" in text
