"""Starting sagas over HTTP, as a user runs it: ``bus-orchestrator api``, ``run`` and
``adapters`` as processes; one order published with ``POST /events/{type}`` (retried with
its ``Idempotency-Key``), one sent by a web shop to ``POST /webhooks/storefront``, signed
with ``bus-orchestrator webhooks sign``. Both sagas complete; neither the token nor the
webhook secret appears in any process's log."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import httpx
import pytest

from bus_orchestrator.config import Settings
from tests.conftest import TestBus
from tests.e2e.processes import WORK_QUEUES, Processes, cli, free_port, wait_for_consumers
from tests.e2e.test_api import wait_until_serving
from tests.e2e.test_cli import ORDER

pytestmark = pytest.mark.e2e

TOKEN = "e2e-operator-token-3b7"
SECRET = "e2e-storefront-secret-c41"


async def completed(http: httpx.AsyncClient, order_id: str) -> dict[str, Any]:
    view: dict[str, Any] = {}
    for _ in range(150):
        response = await http.get(f"/sagas/{order_id}")
        if response.status_code == 200 and (view := response.json())["status"] == "completed":
            return view
        await asyncio.sleep(0.2)
    raise AssertionError(f"saga {order_id} did not complete: {view}")


async def test_sagas_started_over_http_complete(
    settings: Settings, schema: str, bus: TestBus, processes: Processes, tmp_path: Path
) -> None:
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    api = await processes.start(
        settings,
        "api",
        BUS_API_PORT=str(port),
        BUS_API_TOKENS=f"{TOKEN}=operator:e2e",
        BUS_WEBHOOK_SECRET_STOREFRONT=SECRET,
    )
    await processes.start(settings, "run")
    await processes.start(settings, "adapters")
    await wait_for_consumers(bus.connection, settings, WORK_QUEUES)
    await wait_until_serving(base, processes)

    bearer = {"Authorization": f"Bearer {TOKEN}"}
    async with httpx.AsyncClient(base_url=base, headers=bearer) as http:
        body = {"data": {**ORDER, "order_id": "http-1"}, "correlation_id": "http-1"}
        key = {"Idempotency-Key": "http-1-try"}
        first = await http.post("/events/orders.order_placed.v1", json=body, headers=key)
        retried = await http.post("/events/orders.order_placed.v1", json=body, headers=key)
        assert first.status_code == retried.status_code == 202, (first.text, retried.text)
        assert retried.json() == {**first.json(), "duplicate": True}

        payload = {
            "delivery_id": "shop-delivery-77",
            "order": {
                "number": "shop-1",
                "customer": {"id": "c-77"},
                "lines": [{"sku": "SKU-7", "quantity": 3, "price": "4.00"}],
                "total": "12.00",
                "currency": "EUR",
                "ship_to": {"country": "NL"},
            },
        }
        raw = json.dumps(payload).encode()
        (tmp_path / "order.json").write_bytes(raw)
        code, out, err = await cli(
            settings,
            "webhooks",
            "sign",
            "storefront",
            "--body",
            str(tmp_path / "order.json"),
            BUS_WEBHOOK_SECRET_STOREFRONT=SECRET,
        )
        assert code == 0, err
        headers = dict(line.split(": ", 1) for line in out.strip().splitlines())
        assert set(headers) == {"X-Bus-Timestamp", "X-Bus-Signature"}
        hook = await http.post(
            "/webhooks/storefront",
            content=raw,
            headers={**headers, "Content-Type": "application/json", "Authorization": ""},
        )
        assert hook.status_code == 202, hook.text

        by_event = await completed(http, "http-1")
        by_hook = await completed(http, "shop-1")
        assert by_event["started_by"]["message_id"] == first.json()["event_id"]
        assert by_hook["started_by"]["message_id"] == hook.json()["event_id"]
        stats = (await http.get("/stats")).json()
        done = {"saga_type": "order_to_cash", "status": "completed", "count": 2}
        assert stats["counts"] == [done]

    assert await processes.stop(api) == 0
    logged = "\n".join(processes.log_lines())
    assert "event orders.order_placed.v1" in logged  # the API logged what it published
    assert TOKEN not in logged and SECRET not in logged
