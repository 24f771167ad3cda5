"""``POST /events/{type}`` on the real services: the event reaches ``bus.events`` (a tap
queue sees it), each refusal publishes nothing, an ``Idempotency-Key`` publishes once,
and the saga the event starts joins the request's trace. No token appears in a log or an
error body."""

from __future__ import annotations

import json
import logging
import uuid
from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any

import aio_pika
import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from bus_orchestrator.config import Settings
from bus_orchestrator.core.state import SagaStatus
from bus_orchestrator.ports import KeyedRequest
from bus_orchestrator.runtime.service import CoordinatorService
from bus_orchestrator.telemetry.metrics import Metrics
from bus_orchestrator.telemetry.setup import Telemetry
from bus_orchestrator.telemetry.tracing import trace_id_of
from example import create_app
from sagas import all_sagas
from tests.conftest import TestBus
from tests.integration.api_serving import OPERATOR, READER, Served, serving
from tests.integration.harness import migrated, order, rows_when, sql, wait_for_status

pytestmark = pytest.mark.integration

PLACED = "orders.order_placed.v1"
CARD = "tok-card-4242-secret"


def placed(order_id: str, **changes: Any) -> dict[str, Any]:
    data = json.loads(order(order_id).model_dump_json())
    return {**data, "payment_token": CARD, **changes}


@pytest.fixture
async def served(
    settings: Settings, db_schema: str, caplog: pytest.LogCaptureFixture
) -> AsyncIterator[Served]:
    caplog.set_level(logging.DEBUG)
    await migrated(settings)
    async with serving(settings, create_app(settings)) as found:
        yield found
    logged = caplog.text + "".join(str(r.args) for r in caplog.records)
    for secret in (OPERATOR, READER, CARD):
        assert secret not in logged


@pytest.fixture
async def tap(bus: TestBus) -> aio_pika.abc.AbstractQueue:
    return await bus.tap(bus.topology.events, "orders.#")


async def nothing_more(served: Served, tap: aio_pika.abc.AbstractQueue) -> None:
    """Nothing else reaches the tap: once every outbox row is confirmed by the broker (so
    routed to the tap), the tap is empty."""
    unsent = "SELECT id FROM outbox WHERE sent_at IS NULL"
    assert await rows_when(served.outlet.settings, unsent, lambda rows: not rows) == []
    assert await tap.get(fail=False) is None


async def test_an_event_is_published_with_its_id(
    served: Served, bus: TestBus, tap: aio_pika.abc.AbstractQueue
) -> None:
    response = await served.post(
        f"/events/{PLACED}", {"data": placed("ev-1"), "correlation_id": "corr-ev-1"}
    )
    assert response.status_code == 202, response.text
    accepted = response.json()
    assert accepted["event_type"] == PLACED and accepted["duplicate"] is False
    uuid.UUID(accepted["event_id"])

    [message] = await bus.drain(tap, 1)
    assert message.message_id == accepted["event_id"]
    assert message.routing_key == PLACED and message.type == PLACED
    assert message.correlation_id == "corr-ev-1"
    assert message.headers["ce-source"] == "urn:bus-orchestrator:api:order-to-cash"
    assert message.headers["ce-correlationid"] == "corr-ev-1"
    data = json.loads(message.body)
    assert data["order_id"] == "ev-1" and data["payment_token"] == CARD  # on the wire, in clear
    await nothing_more(served, tap)


async def test_refusals_publish_nothing(
    served: Served, bus: TestBus, tap: aio_pika.abc.AbstractQueue
) -> None:
    good = {"data": placed("ref-1")}
    cases: list[tuple[str, Any, dict[str, Any], int, str]] = [
        # path, body, post options, status, a word the detail holds
        (f"/events/{PLACED}", good, {"token": None}, 401, "bearer token"),
        (f"/events/{PLACED}", good, {"token": "not-a-token"}, 401, "bearer token"),
        (f"/events/{PLACED}", good, {"token": READER}, 403, "operator"),
        ("/events/orders.order_shipped.v9", good, {}, 404, PLACED),
        ("/events/payments.charge_payment.v1", good, {}, 422, "bus-orchestrator send"),
        ("/events/payments.payment_charged.v1", good, {}, 422, "replies are sent by adapters"),
        (f"/events/{PLACED}", {"data": placed("ref-1", total="x")}, {}, 422, "total"),
        (f"/events/{PLACED}", {"data": placed("ref-1", currency=CARD)}, {}, 422, "currency"),
        (f"/events/{PLACED}", {"data": placed("ref-1"), "extra": 1}, {}, 422, "extra"),
        (f"/events/{PLACED}", {"data": [1]}, {}, 422, "data"),
        (f"/events/{PLACED}", None, {"content": b"{not json"}, 422, "body"),
        (f"/events/{PLACED}", {"data": placed("ref\u0000")}, {}, 422, "NUL"),
        (
            f"/events/{PLACED}",
            {"data": placed("ref-1", customer_id="c" * 200, items=[_line()] * 20_000)},
            {},
            413,
            "BUS_MAX_MESSAGE_BYTES",
        ),
        (f"/events/{PLACED}", good, {"headers": {"Idempotency-Key": ""}}, 422, "Idempotency"),
        (f"/events/{PLACED}", good, {"headers": {"Idempotency-Key": "k" * 256}}, 422, "Idemp"),
    ]
    for path, body, options, status, word in cases:
        response = await served.post(path, body, **options)
        assert response.status_code == status, (path, body if status != 413 else "", response.text)
        refused = response.json()
        assert word in refused["detail"], refused
        for secret in (OPERATOR, CARD, "not-a-token"):
            assert secret not in response.text
    document = (await served.http.get("/openapi.json")).json()
    declared = document["paths"]["/events/{event_type}"]["post"]["responses"]
    assert {"202", "401", "403", "404", "413", "422", "503"} <= set(declared)
    await nothing_more(served, tap)
    assert await sql(served.outlet.settings, "SELECT 1 FROM outbox") == []


def _line() -> dict[str, Any]:
    return {"sku": "S" * 200, "quantity": 1, "unit_price": "1.00"}


async def test_an_idempotency_key_publishes_once(
    served: Served, bus: TestBus, tap: aio_pika.abc.AbstractQueue
) -> None:
    body = {"data": placed("idem-1"), "correlation_id": "idem-1"}
    key = {"Idempotency-Key": "order-idem-1-attempt"}
    first = await served.post(f"/events/{PLACED}", body, headers=key)
    again = await served.post(f"/events/{PLACED}", body, headers=key)
    assert first.status_code == again.status_code == 202, (first.text, again.text)
    assert first.json()["duplicate"] is False and again.json()["duplicate"] is True
    assert first.json()["event_id"] == again.json()["event_id"]

    # the same key, another request: refused, whatever differs
    for other in (
        {"data": placed("idem-2"), "correlation_id": "idem-1"},
        {"data": placed("idem-1"), "correlation_id": "idem-other"},
        {"data": placed("idem-1")},
    ):
        reused = await served.post(f"/events/{PLACED}", other, headers=key)
        assert reused.status_code == 422 and reused.json()["error"] == "key_reused", reused.text
    cancel = await served.post(
        "/events/orders.order_cancelled.v1", {"data": {"order_id": "idem-1"}}, headers=key
    )
    assert cancel.status_code == 422 and cancel.json()["error"] == "key_reused"

    # another key: another event
    other_key = await served.post(f"/events/{PLACED}", body, headers={"Idempotency-Key": "k2"})
    assert other_key.json()["event_id"] != first.json()["event_id"]

    received = await bus.drain(tap, 2)
    assert sorted(m.message_id for m in received) == sorted(
        [first.json()["event_id"], other_key.json()["event_id"]]
    )
    await nothing_more(served, tap)
    rows = await sql(
        served.outlet.settings,
        "SELECT message_id FROM outbox WHERE message_id = $1",
        first.json()["event_id"],
    )
    assert len(rows) == 1


async def test_a_key_remembered_before_a_crash_still_publishes_its_event(
    served: Served, bus: TestBus, tap: aio_pika.abc.AbstractQueue
) -> None:
    """The key is recorded before the event's commit: a process that died between the two
    left the key only. The retry commits the event, with the key's event id."""
    from bus_orchestrator.api.events import EventRequest, request_hash

    body = {"data": placed("crash-1")}
    asked = KeyedRequest(request_hash(PLACED, EventRequest.model_validate(body)), "ev-crash-1")
    await served.outlet.request_keys.remember(
        "order-to-cash", "crash-key", asked, window=timedelta(days=1), fresh_event_id="x"
    )
    key = {"Idempotency-Key": "crash-key"}
    response = await served.post(f"/events/{PLACED}", body, headers=key)
    assert response.status_code == 202, response.text
    assert response.json() == {"event_id": "ev-crash-1", "event_type": PLACED, "duplicate": False}
    [message] = await bus.drain(tap, 1)
    assert message.message_id == "ev-crash-1"


async def test_an_expired_key_is_a_new_request_with_a_new_event_id(
    settings: Settings, db_schema: str, bus: TestBus
) -> None:
    await migrated(settings)
    brief = settings.model_copy(update={"inbox_retention_seconds": 0.001})
    async with serving(brief, create_app(brief)) as served:
        key = {"Idempotency-Key": "short-lived"}
        first = await served.post(f"/events/{PLACED}", {"data": placed("exp-1")}, headers=key)
        later = await served.post(f"/events/{PLACED}", {"data": placed("exp-2")}, headers=key)
    assert first.status_code == later.status_code == 202, (first.text, later.text)
    assert later.json()["duplicate"] is False
    assert later.json()["event_id"] != first.json()["event_id"]
    keys = await sql(settings, "SELECT key, event_id FROM request_key")
    assert [(r["key"], r["event_id"]) for r in keys] == [("short-lived", later.json()["event_id"])]


async def test_the_saga_an_event_starts_joins_the_requests_trace(
    settings: Settings, db_schema: str, bus: TestBus
) -> None:
    await migrated(settings)
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    telemetry = Telemetry(provider.get_tracer("test"), Metrics.disabled())
    service = CoordinatorService(
        settings,
        all_sagas(timedelta(seconds=30)),
        create_app(settings).registry,
        app="order-to-cash",
        telemetry=telemetry,
    )
    await service.start()
    try:
        async with serving(settings, create_app(settings), telemetry) as served:
            response = await served.post(f"/events/{PLACED}", {"data": placed("tr-1")})
            assert response.status_code == 202, response.text
            found = await wait_for_status(settings, ["tr-1"], {SagaStatus.RUNNING})
    finally:
        await service.stop()
        provider.shutdown()
    spans = exporter.get_finished_spans()
    [publish] = [s for s in spans if s.name == f"publish {PLACED}"]
    assert publish.attributes is not None
    assert publish.attributes["messaging.message.id"] == response.json()["event_id"]
    trace_id = format(publish.context.trace_id, "032x")
    assert trace_id_of(found["tr-1"].trace_context) == trace_id
    sends = [s for s in spans if s.name.startswith("send ") and s.parent is not None]
    assert any(s.parent.span_id == publish.context.span_id for s in sends)  # type: ignore[union-attr]
    for span in spans:
        assert OPERATOR not in str(span.attributes) and CARD not in str(span.attributes)


async def test_writes_are_503_while_the_database_cannot_take_them(
    settings: Settings, db_schema: str
) -> None:
    """Unmigrated: 503 naming the fix; Postgres unreachable: 503 (the API still serves)."""
    async with serving(settings, create_app(settings)) as served:
        response = await served.post(f"/events/{PLACED}", {"data": placed("un-1")})
    assert response.status_code == 503, response.text
    assert "bus-orchestrator migrate" in response.json()["detail"]

    unreachable = "postgresql://root@127.0.0.1:1/test"
    nowhere = settings.model_copy(
        update={"database_url": unreachable, "db_connect_timeout_seconds": 1.0}
    )
    async with serving(nowhere, create_app(nowhere)) as served:
        response = await served.post(f"/events/{PLACED}", {"data": placed("un-2")})
        assert (await served.http.get("/healthz")).status_code == 200
    assert response.status_code == 503, response.text
    assert response.json()["error"] == "unavailable"
