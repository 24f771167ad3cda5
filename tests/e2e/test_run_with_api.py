"""``bus-orchestrator run --api``: the coordinator process serves the HTTP API too, with
``GET /metrics`` (no token) showing that very coordinator's counters."""

from __future__ import annotations

import asyncio
import json
import re
from typing import Any

import httpx
import pytest

from bus_orchestrator.config import Settings
from tests.conftest import TestBus
from tests.e2e.processes import WORK_QUEUES, Processes, cli, free_port, wait_for_consumers
from tests.e2e.test_api import wait_until_serving
from tests.e2e.test_cli import ORDER

pytestmark = pytest.mark.e2e

TOKEN = "e2e-run-api-reader"


def sample(metrics: str, name: str, **labels: str) -> float | None:
    """The value of one series of a Prometheus text exposition, if present."""
    wanted = ",".join(f'{k}="{v}"' for k, v in labels.items())
    for line in metrics.splitlines():
        found = re.fullmatch(rf"{re.escape(name)}\{{([^}}]*)\}} (\S+)", line)
        if found and found.group(1) == wanted:
            return float(found.group(2))
    return None


async def test_the_coordinator_serves_the_api_and_its_metrics(
    settings: Settings, schema: str, bus: TestBus, processes: Processes
) -> None:
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    env = {"BUS_API_PORT": str(port), "BUS_API_TOKENS": f"{TOKEN}=reader"}
    coordinator = await processes.start(settings, "run", "--api", **env)
    await processes.start(settings, "adapters")
    await wait_for_consumers(bus.connection, settings, WORK_QUEUES)
    await wait_until_serving(base, processes)

    code, _, err = await cli(
        settings,
        "publish",
        "orders.order_placed.v1",
        "--data",
        json.dumps({**ORDER, "order_id": "run-api-1"}),
    )
    assert code == 0, err

    auth = {"Authorization": f"Bearer {TOKEN}"}
    async with httpx.AsyncClient(base_url=base) as http:
        view: dict[str, Any] = {}
        for _ in range(150):
            response = await http.get("/sagas/run-api-1", headers=auth)
            if response.status_code == 200 and (view := response.json())["status"] == "completed":
                break
            await asyncio.sleep(0.2)
        assert view.get("status") == "completed", view
        by_id = await http.get(f"/sagas/{view['saga_id']}", headers=auth)
        assert by_id.status_code == 200
        assert by_id.json()["correlation_id"] == "run-api-1"
        assert (await http.get("/sagas/run-api-1")).status_code == 401  # no token

        ready = await http.get("/readyz")
        assert (ready.status_code, ready.json()["status"]) == (200, "ready"), ready.text

        # The coordinator counts the end just after its commit: the API may show it first.
        for _ in range(50):
            metrics = await http.get("/metrics")  # no token needed
            completed = sample(metrics.text, "bus_sagas_completed_total", saga_type="order_to_cash")
            if completed is not None:
                break
            await asyncio.sleep(0.1)
        assert metrics.status_code == 200
        assert metrics.headers["content-type"].startswith("text/plain")
        assert sample(metrics.text, "bus_sagas_started_total", saga_type="order_to_cash") == 1.0
        assert completed == 1.0
        assert 'service_name="bus-coordinator"' in metrics.text
        document = (await http.get("/openapi.json")).json()
        assert "text/plain" in document["paths"]["/metrics"]["get"]["responses"]["200"]["content"]

    # A second coordinator with the API on the same port: one line, exit 2.
    code, out, err = await cli(settings, "run", "--api", **env)
    lines = [line for line in err.splitlines() if line.strip()]
    assert (code, lines) == (
        2,
        [
            f"cannot serve the HTTP API on 127.0.0.1:{port} (Address already in use): "
            "set BUS_API_HOST / BUS_API_PORT to a free address"
        ],
    ), err
    assert out == ""

    assert await processes.stop(coordinator) == 0
    assert any("coordinator stopped" in line for line in processes.log_lines())
    assert not any(TOKEN in line for line in processes.log_lines())
