"""``bus-orchestrator api`` as a user runs it: a process of its own, queried over HTTP
while the coordinator and the adapters (processes too) run a saga to its end."""

from __future__ import annotations

import asyncio
import json
from datetime import timedelta
from typing import Any

import httpx
import hypothesis
import pytest
import schemathesis

from bus_orchestrator.config import Settings
from bus_orchestrator.store.postgres import PostgresSagaStore, create_pool
from tests.conftest import TestBus
from tests.e2e.processes import WORK_QUEUES, Processes, cli, free_port, wait_for_consumers
from tests.e2e.test_cli import ORDER
from tests.integration.test_api_sagas import start_order

pytestmark = pytest.mark.e2e

TOKEN = "e2e-reader-token"


async def wait_until_serving(base: str, processes: Processes) -> None:
    async with httpx.AsyncClient(base_url=base) as http:
        for _ in range(150):
            try:
                if (await http.get("/healthz")).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            await asyncio.sleep(0.1)
    raise AssertionError(f"the API never answered: {processes.log_lines()}")


async def test_the_api_process_serves_a_running_saga(
    settings: Settings, schema: str, bus: TestBus, processes: Processes
) -> None:
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    api = await processes.start(
        settings, "api", BUS_API_PORT=str(port), BUS_API_TOKENS=f"{TOKEN}=reader"
    )
    await processes.start(settings, "run")
    await processes.start(settings, "adapters")
    await wait_for_consumers(bus.connection, settings, WORK_QUEUES)
    await wait_until_serving(base, processes)

    order = {**ORDER, "order_id": "api-1"}
    code, _, err = await cli(
        settings, "publish", "orders.order_placed.v1", "--data", json.dumps(order)
    )
    assert code == 0, err

    headers = {"Authorization": f"Bearer {TOKEN}"}
    async with httpx.AsyncClient(base_url=base, headers=headers) as http:
        assert (await http.get("/readyz")).json()["status"] == "ready"
        view: dict[str, Any] = {}
        for _ in range(150):
            response = await http.get("/sagas/api-1")
            if response.status_code == 200 and (view := response.json())["status"] == "completed":
                break
            await asyncio.sleep(0.2)
        assert view.get("status") == "completed", view
        assert [s["status"] for s in view["steps"]] == ["succeeded"] * 3

        page = (await http.get("/sagas", params={"status": "completed"})).json()
        assert [s["correlation_id"] for s in page["items"]] == ["api-1"]
        history = (await http.get(f"/sagas/{view['saga_id']}/history")).json()
        assert history["entries"][0]["message_type"] == "orders.order_placed.v1"
        assert len(history["entries"]) >= 6  # the event, and three commands and replies
        stats = (await http.get("/stats")).json()
        assert stats["counts"] == [
            {"saga_type": "order_to_cash", "status": "completed", "count": 1}
        ]
        refused = await http.get("/sagas", headers={"Authorization": "Bearer nope"})
        assert refused.status_code == 401
        document = (await http.get("/openapi.json")).json()
        assert "/sagas/{saga_id}" in document["paths"]

    assert await processes.stop(api) == 0
    assert not any(TOKEN in line for line in processes.log_lines())


async def test_the_api_refuses_to_start_without_tokens(settings: Settings) -> None:
    code, _, err = await cli(settings, "api", BUS_API_PORT=str(free_port()))
    assert code == 2
    assert err.strip().splitlines() == [
        "the HTTP API has no tokens: set BUS_API_TOKENS (token=reader,token=operator,...) or "
        "BUS_API_TOKENS_FILE, or BUS_API_INSECURE=1 to serve it without access control"
    ]


async def test_the_api_says_when_its_port_is_taken(settings: Settings) -> None:
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        code, _, err = await cli(
            settings, "api", BUS_API_PORT=str(port), BUS_API_TOKENS=f"{TOKEN}=reader"
        )
    assert code == 2
    assert f"cannot serve the HTTP API on 127.0.0.1:{port}" in err
    assert "BUS_API_PORT" in err and TOKEN not in err


async def test_schemathesis_finds_nothing_the_served_document_does_not_declare(
    settings: Settings, schema: str, processes: Processes
) -> None:
    """The served /openapi.json, against the process on the real Postgres store with
    sagas in it: no server error, and no response the document does not declare."""

    pool = await create_pool(settings.model_copy(update={"db_pool_size": 1}))
    try:
        store = PostgresSagaStore(pool, timedelta(seconds=1))
        for n in range(3):
            await start_order(store, f"st-{n}")
    finally:
        await pool.close()

    port = free_port()
    base = f"http://127.0.0.1:{port}"
    # an operator's token: the routes that change things are exercised too, not refused
    tokens = f"{TOKEN}=operator"
    await processes.start(settings, "api", BUS_API_PORT=str(port), BUS_API_TOKENS=tokens)
    await wait_until_serving(base, processes)

    def run() -> None:
        document = schemathesis.openapi.from_url(f"{base}/openapi.json")
        for result in document.get_all_operations():
            operation = result.ok()

            @hypothesis.given(case=operation.as_strategy())
            @hypothesis.settings(
                max_examples=40,
                derandomize=True,  # the same cases on every run: a failure is one to fix
                deadline=None,
                database=None,
                suppress_health_check=list(hypothesis.HealthCheck),
            )
            def check(case: Any) -> None:
                opaque = "cursor" in (case.query or {})
                case.call_and_validate(
                    headers={"Authorization": f"Bearer {TOKEN}"},
                    excluded_checks=[schemathesis.checks.positive_data_acceptance]
                    if opaque
                    else [],
                )

            check()

    await asyncio.to_thread(run)
