"""``POST /webhooks/{name}`` on the real services: a signed callback is published as the
app's event (and the saga it starts completes, with the coordinator and the adapters
running); every badly signed request is 401 and publishes nothing; a replay publishes
once. The secret appears in no log, no error body and no span."""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import AsyncIterator
from typing import Any

import aio_pika
import pytest

from adapters import example_adapters
from bus_orchestrator.adapters.runner import run_adapters
from bus_orchestrator.config import Settings
from bus_orchestrator.core.state import SagaStatus
from bus_orchestrator.webhooks import SIGNATURE_HEADER, TIMESTAMP_HEADER, sign
from example import create_app, create_onboarding_app
from tests.conftest import TestBus
from tests.integration.api_serving import OPERATOR, Served, serving
from tests.integration.harness import migrated, rows_when, sql, start_coordinator, wait_for_status
from tests.integration.test_dead_letters import until_consumed

pytestmark = pytest.mark.integration

SECRET = "whsec-storefront-5d1e9b"
PLACED = "orders.order_placed.v1"
HOOK = "/webhooks/storefront"


def storefront_order(number: str, delivery: str | None = None, **order: Any) -> dict[str, Any]:
    return {
        "delivery_id": delivery or f"dlv-{number}",
        "order": {
            "number": number,
            "customer": {"id": "cust-1"},
            "lines": [{"sku": "SKU-1", "quantity": 2, "price": "12.50"}],
            "total": "25.00",
            "currency": "EUR",
            "ship_to": {"country": "DE", "city": "Berlin"},
            **order,
        },
    }


def signed(body: bytes, secret: str = SECRET, at: float | None = None) -> dict[str, str]:
    return {**sign(secret.encode(), body, time.time() if at is None else at)}


def encoded(payload: Any) -> bytes:
    return json.dumps(payload).encode()


@pytest.fixture
async def served(
    settings: Settings,
    db_schema: str,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> AsyncIterator[Served]:
    caplog.set_level(logging.DEBUG)
    monkeypatch.setenv("BUS_WEBHOOK_SECRET_STOREFRONT", SECRET)
    await migrated(settings)
    async with serving(settings, create_app(settings)) as found:
        yield found
    logged = caplog.text + "".join(str(r.args) for r in caplog.records)
    assert SECRET not in logged and OPERATOR not in logged


@pytest.fixture
async def tap(bus: TestBus) -> aio_pika.abc.AbstractQueue:
    return await bus.tap(bus.topology.events, "orders.#")


async def settled(served: Served, tap: aio_pika.abc.AbstractQueue) -> None:
    """Every outbox row is confirmed by the broker (so routed to the tap); the tap holds
    nothing more."""
    unsent = "SELECT id FROM outbox WHERE sent_at IS NULL"
    assert await rows_when(served.outlet.settings, unsent, lambda rows: not rows) == []
    assert await tap.get(fail=False) is None


async def test_a_signed_callback_is_published_as_the_apps_event(
    served: Served, bus: TestBus, tap: aio_pika.abc.AbstractQueue
) -> None:
    body = encoded(storefront_order("wh-1"))
    response = await served.post(HOOK, content=body, headers=signed(body), token=None)
    assert response.status_code == 202, response.text
    accepted = response.json()
    assert accepted["event_type"] == PLACED and accepted["duplicate"] is False
    [message] = await bus.drain(tap, 1)
    assert message.message_id == accepted["event_id"]
    data = json.loads(message.body)
    assert data["order_id"] == "wh-1" and data["total"] == "25.00"
    assert data["items"] == [{"sku": "SKU-1", "quantity": 2, "unit_price": "12.50"}]
    assert data["shipping_address"]["city"] == "Berlin"
    await settled(served, tap)


async def test_badly_signed_requests_are_401_and_publish_nothing(
    served: Served, tap: aio_pika.abc.AbstractQueue
) -> None:
    body = encoded(storefront_order("wh-bad"))
    now = time.time()
    good = signed(body)
    cases: dict[str, tuple[bytes, dict[str, str]]] = {
        "wrong secret": (body, signed(body, secret="whsec-guessed")),
        "no headers": (body, {}),
        "no signature": (body, {TIMESTAMP_HEADER: good[TIMESTAMP_HEADER]}),
        "no timestamp": (body, {SIGNATURE_HEADER: good[SIGNATURE_HEADER]}),
        "stale": (body, signed(body, at=now - 301)),
        "future": (body, signed(body, at=now + 301)),
        "tampered body": (body.replace(b"12.50", b"0.01"), good),
        "other timestamp": (body, {**good, TIMESTAMP_HEADER: str(int(now) - 1)}),
        "not hex": (body, {**good, SIGNATURE_HEADER: "sha256=" + "z" * 64}),
        "no scheme": (body, {**good, SIGNATURE_HEADER: good[SIGNATURE_HEADER][7:]}),
        "bearer instead": (body, {"Authorization": f"Bearer {OPERATOR}"}),
    }
    for case, (sent, headers) in cases.items():
        response = await served.post(HOOK, content=sent, headers=headers, token=None)
        assert response.status_code == 401, (case, response.text)
        assert response.json()["error"] == "unauthorized"
        assert SECRET not in response.text and OPERATOR not in response.text
        assert good[SIGNATURE_HEADER] not in response.text
    await settled(served, tap)
    assert await sql(served.outlet.settings, "SELECT 1 FROM outbox") == []


async def test_unknown_webhooks_and_refused_payloads(
    served: Served, tap: aio_pika.abc.AbstractQueue
) -> None:
    unknown = b"{}"
    headers = signed(unknown)
    response = await served.post("/webhooks/nope", content=unknown, headers=headers, token=None)
    assert response.status_code == 404 and response.json()["error"] == "not_found"

    refused: dict[str, tuple[bytes, str]] = {
        # body, a word the detail holds
        "not JSON": (b"{order", "not JSON"),
        "mapping fails": (encoded({"delivery_id": "d-1"}), "KeyError"),
        "contract refuses": (encoded(storefront_order("wh-x", currency="EURO")), "currency"),
        "secret-looking value": (encoded(storefront_order("wh-y", total=SECRET)), "total"),
        "no delivery id": (encoded({"order": storefront_order("wh-z")["order"]}), "delivery"),
    }
    for case, (body, word) in refused.items():
        response = await served.post(HOOK, content=body, headers=signed(body), token=None)
        assert response.status_code == 422, (case, response.text)
        assert word in response.json()["detail"], (case, response.text)
        assert SECRET not in response.text
    await settled(served, tap)
    assert await sql(served.outlet.settings, "SELECT 1 FROM outbox") == []

    document = (await served.http.get("/openapi.json")).json()
    operation = document["paths"]["/webhooks/{name}"]["post"]
    assert {"202", "401", "404", "413", "422", "503"} <= set(operation["responses"])
    assert "security" not in operation  # no bearer token
    assert "HMAC-SHA256" in operation["description"]


async def test_a_replay_publishes_once(
    served: Served, bus: TestBus, tap: aio_pika.abc.AbstractQueue
) -> None:
    body = encoded(storefront_order("wh-r"))
    headers = signed(body)
    first = await served.post(HOOK, content=body, headers=headers, token=None)
    replayed = await served.post(HOOK, content=body, headers=headers, token=None)
    # the sender's retry: the same delivery, signed again later
    resigned = await served.post(
        "/webhooks/storefront", content=body, headers=signed(body, at=time.time() + 5), token=None
    )
    assert [r.status_code for r in (first, replayed, resigned)] == [202, 202, 202]
    ids = {r.json()["event_id"] for r in (first, replayed, resigned)}
    assert len(ids) == 1
    assert [r.json()["duplicate"] for r in (first, replayed, resigned)] == [False, True, True]
    # another delivery of the same order is another event
    again = encoded(storefront_order("wh-r", delivery="dlv-wh-r-2"))
    other = await served.post(HOOK, content=again, headers=signed(again), token=None)
    assert other.status_code == 202 and other.json()["event_id"] not in ids
    received = await bus.drain(tap, 2)
    assert sorted(m.message_id for m in received) == sorted([*ids, other.json()["event_id"]])
    await settled(served, tap)


async def test_a_webhook_without_a_secret_is_503_and_says_which_setting_in_the_log(
    settings: Settings,
    db_schema: str,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("BUS_WEBHOOK_SECRET_IDENTITY_PROVIDER", raising=False)
    monkeypatch.delenv("BUS_WEBHOOK_SECRET_IDENTITY_PROVIDER_FILE", raising=False)
    await migrated(settings)
    caplog.set_level(logging.WARNING)
    async with serving(settings, create_onboarding_app(settings)) as served:
        body = encoded({"verification_id": "v-1", "status": "verified"})
        response = await served.post(
            "/webhooks/identity-provider", content=body, headers=signed(body, ""), token=None
        )
    assert response.status_code == 503, response.text
    assert "BUS_WEBHOOK_SECRET_IDENTITY_PROVIDER" not in response.text
    assert "BUS_WEBHOOK_SECRET_IDENTITY_PROVIDER" in caplog.text


async def test_a_storefront_order_runs_its_saga_to_the_end(
    settings: Settings, db_schema: str, bus: TestBus, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The coordinator and the adapters of the example app, in process; the order comes
    in by webhook and its saga completes."""
    monkeypatch.setenv("BUS_WEBHOOK_SECRET_STOREFRONT", SECRET)
    await migrated(settings)
    service = await start_coordinator(settings)
    stop = asyncio.Event()
    adapters = asyncio.create_task(
        run_adapters(settings, example_adapters(), stop, grace=5.0, app="order-to-cash")
    )
    try:
        await until_consumed(bus, service.queue_name)
        for name in ("inventory", "payments", "shipping"):
            await until_consumed(bus, bus.topology.adapter_queue("order-to-cash", name))
        async with serving(settings, create_app(settings)) as served:
            body = encoded(storefront_order("wh-saga"))
            response = await served.post(
                "/webhooks/storefront", content=body, headers=signed(body), token=None
            )
            assert response.status_code == 202, response.text
            found = await wait_for_status(settings, ["wh-saga"], {SagaStatus.COMPLETED})
            saga = (
                await served.http.get(
                    "/sagas/wh-saga", headers={"Authorization": f"Bearer {OPERATOR}"}
                )
            ).json()
    finally:
        stop.set()
        await adapters
        await service.stop()
    assert found["wh-saga"].started_by is not None
    assert found["wh-saga"].started_by.message_id == response.json()["event_id"]
    assert saga["status"] == "completed"
    assert [s["status"] for s in saga["steps"]] == ["succeeded"] * 3
