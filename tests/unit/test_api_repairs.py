"""The repair routes over the in-memory store a harness ran sagas on: who may repair,
each refusal, what a repair commits, and a repeated request applied once. (Over the real
services, with the commands published: tests/e2e/test_repairs.py.)"""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any

import httpx
import pytest

from bus_orchestrator.api import create_api
from bus_orchestrator.config import Settings
from bus_orchestrator.core import SagaStatus
from bus_orchestrator.testing import SagaHarness
from contracts import CreateShipment, RefundPayment, ShipmentRejected
from example import create_app
from tests.integration.harness import order

TOKENS = "r-token=reader, o-token=operator:alice"


@pytest.fixture
async def harness() -> SagaHarness:
    """o-failed: its refund never answered (failed); o-stuck: its shipment unanswered."""
    harness = SagaHarness(create_app())
    harness.reply(CreateShipment, lambda c: _reject_or_hold(c))
    harness.reply(RefundPayment)
    await harness.publish(order("o-failed"))
    await harness.publish(order("o-stuck"))
    await harness.run_until_idle()
    await harness.advance(timedelta(seconds=45))
    return harness


def _reject_or_hold(command: CreateShipment) -> ShipmentRejected | None:
    if command.order_id == "o-failed":
        return ShipmentRejected(order_id=command.order_id, reason="no")
    return None


@pytest.fixture
async def client(harness: SagaHarness) -> AsyncIterator[httpx.AsyncClient]:
    settings = Settings(api_tokens=TOKENS)
    api = create_api(settings, harness.app, store=harness.store)
    async with (
        api.router.lifespan_context(api),
        httpx.AsyncClient(transport=httpx.ASGITransport(api), base_url="http://api") as http,
    ):
        yield http


def operator(**more: str) -> dict[str, str]:
    return {"Authorization": "Bearer o-token", **more}


async def post(
    client: httpx.AsyncClient, path: str, body: dict[str, Any], **headers: str
) -> httpx.Response:
    return await client.post(path, json=body, headers=operator(**headers))


async def test_setup(harness: SagaHarness) -> None:
    assert (await harness.saga("o-failed")).status is SagaStatus.COMPENSATING
    assert (await harness.saga("o-stuck")).status is SagaStatus.RUNNING


async def test_resume_of_a_failed_saga_is_recorded_with_who_and_why(
    harness: SagaHarness, client: httpx.AsyncClient
) -> None:
    await harness.advance(timedelta(minutes=5))
    assert (await harness.saga("o-failed")).status is SagaStatus.FAILED
    response = await post(client, "/sagas/o-failed/resume", {"reason": "PSP is back"})
    assert response.status_code == 200, response.text
    result = response.json()
    assert result["repeated"] is False
    assert result["saga"]["status"] == "compensating"
    assert result["saga"]["awaiting"]["kind"] == "compensation"
    assert "resume by alice: PSP is back" in result["note"]
    history = (await client.get("/sagas/o-failed/history", headers=operator())).json()
    [entry] = [e for e in history["entries"] if e["message_type"] == "bus.operator.resume"]
    assert entry["payload"]["by"] == "alice"
    assert entry["payload"]["reason"] == "PSP is back"
    # the refund went to the outbox with the repair, for the relay to publish
    out = [e for e in history["entries"] if e["causation_id"] == entry["message_id"]]
    assert [e["message_type"] for e in out] == ["payments.refund_payment.v1"]


async def test_the_same_idempotency_key_applies_a_repair_once(
    harness: SagaHarness, client: httpx.AsyncClient
) -> None:
    body = {"reason": "resend the shipment"}
    first = await post(client, "/sagas/o-stuck/retry", body, **{"Idempotency-Key": "k-1"})
    again = await post(client, "/sagas/o-stuck/retry", body, **{"Idempotency-Key": "k-1"})
    assert first.status_code == again.status_code == 200
    assert (first.json()["repeated"], again.json()["repeated"]) == (False, True)
    assert again.json()["saga"]["version"] == first.json()["saga"]["version"]
    history = await harness.history("o-stuck")
    assert [h.message_type for h in history].count("bus.operator.retry") == 1


async def test_skip_validates_the_reply_and_completes_the_saga(client: httpx.AsyncClient) -> None:
    bad = await post(client, "/sagas/o-stuck/skip", {"reason": "by hand", "data": {}})
    assert bad.status_code == 422
    assert "shipping.shipment_created.v1" in bad.text and "shipment_id" in bad.text
    data = {"order_id": "o-stuck", "shipment_id": "s-by-hand"}
    good = await post(client, "/sagas/o-stuck/skip", {"reason": "by hand", "data": data})
    assert good.status_code == 200, good.text
    assert good.json()["saga"]["status"] == "completed"
    assert good.json()["saga"]["repairs"] == []


@pytest.mark.parametrize(
    ("path", "body", "headers", "status", "error"),
    [
        ("/sagas/o-stuck/abort", {"reason": "x"}, {}, 401, "unauthorized"),
        ("/sagas/o-stuck/abort", {"reason": "x"}, {"Authorization": "Bearer r-token"}, 403, ""),
        ("/sagas/nope/abort", {"reason": "x"}, operator(), 404, "not_found"),
        ("/sagas/o-stuck/resume", {"reason": "x"}, operator(), 409, "refused"),
        ("/sagas/o-failed/abort", {"reason": "x"}, operator(), 409, "refused"),
        ("/sagas/o-stuck/abort", {}, operator(), 422, ""),
        ("/sagas/o-stuck/abort", {"reason": "   "}, operator(), 422, ""),
        ("/sagas/o-stuck/abort", {"reason": "x", "extra": 1}, operator(), 422, ""),
        ("/sagas/o-stuck/retry", {"reason": "x", "step": "nope"}, operator(), 409, "refused"),
    ],
)
async def test_refusals_change_nothing(
    harness: SagaHarness,
    client: httpx.AsyncClient,
    path: str,
    body: dict[str, Any],
    headers: dict[str, str],
    status: int,
    error: str,
) -> None:
    before = [await harness.saga(o) for o in ("o-stuck", "o-failed")]
    response = await client.post(path, json=body, headers=headers)
    assert response.status_code == status, response.text
    if error:
        assert response.json()["error"] == error
    if status == 409:
        assert response.json()["status"] in ("running", "compensating")
    assert [await harness.saga(o) for o in ("o-stuck", "o-failed")] == before


async def test_abort_compensates_a_running_saga(client: httpx.AsyncClient) -> None:
    response = await post(client, "/sagas/o-stuck/abort", {"reason": "customer cancelled"})
    assert response.status_code == 200, response.text
    saga = response.json()["saga"]
    assert saga["status"] == "running"  # stopping: it awaits the shipment's answer first
    assert "compensation starts once create_shipment answer" in response.json()["note"]
    assert saga["repairs"] == []
