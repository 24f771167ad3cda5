"""Tracing, metrics and logs of real processes: the coordinator, the adapters and the CLI.

Each process exports its spans over OTLP/HTTP to a receiver in the test, which decodes them
with opentelemetry-proto, the way Jaeger would.
"""

from __future__ import annotations

import asyncio
import json
import urllib.request
import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from bus_orchestrator.config import Settings
from bus_orchestrator.core.state import SagaStatus
from tests.conftest import TestBus
from tests.e2e.processes import (
    WORK_QUEUES,
    Processes,
    cli,
    free_port,
    wait_for_consumers,
)
from tests.integration.harness import publish_raw, sql, wait_for_status
from tests.otlp_receiver import OtlpReceiver, ReceivedSpan

pytestmark = pytest.mark.e2e

FINAL = {SagaStatus.COMPLETED, SagaStatus.COMPENSATED, SagaStatus.FAILED}
MESSAGING = (
    "messaging.system",
    "messaging.operation.name",
    "messaging.operation.type",
    "messaging.destination.name",
    "messaging.rabbitmq.destination.routing_key",
    "messaging.message.id",
    "messaging.message.conversation_id",
)
SAGA = ("saga.id", "saga.type", "saga.step", "saga.status")


@pytest.fixture
async def receiver() -> AsyncIterator[OtlpReceiver]:
    otlp = OtlpReceiver().start()
    try:
        yield otlp
    finally:
        otlp.stop()


def otel(receiver: OtlpReceiver, service: str, **extra: str) -> dict[str, str]:
    return {
        "OTEL_EXPORTER_OTLP_ENDPOINT": receiver.endpoint,
        "OTEL_SERVICE_NAME": service,
        "OTEL_BSP_SCHEDULE_DELAY": "100",
        "BUS_LOG_FORMAT": "json",
        **extra,
    }


def order_data(order_id: str, **changes: Any) -> str:
    data = {
        "order_id": order_id,
        "customer_id": "c-1",
        "items": [{"sku": "SKU-1", "quantity": 1, "unit_price": "10.00"}],
        "total": "10.00",
        "currency": "EUR",
        "shipping_address": {"country": "DE"},
    }
    data.update(changes)
    return json.dumps(data)


async def place(settings: Settings, receiver: OtlpReceiver, order_id: str, **changes: Any) -> None:
    code, _, err = await cli(
        settings,
        "publish",
        "orders.order_placed.v1",
        "--data",
        order_data(order_id, **changes),
        "--correlation-id",
        order_id,
        **otel(receiver, "bus-cli"),
    )
    assert code == 0, err


async def show(settings: Settings, saga: str) -> dict[str, Any]:
    code, out, err = await cli(
        settings, "sagas", "show", saga, "--json", BUS_JAEGER_UI_URL="http://jaeger:16686"
    )
    assert code == 0, err
    return json.loads(out)


def hops_are_linked(spans: list[ReceivedSpan]) -> int:
    """Every CONSUMER span is the child of the PRODUCER span of the same message."""
    by_id = {s.span_id: s for s in spans}
    consumers = [s for s in spans if s.kind == "CONSUMER"]
    for consumer in consumers:
        producer = by_id[consumer.parent_span_id or ""]
        assert producer.kind == "PRODUCER", (consumer.name, producer.name)
        for key in ("messaging.message.id", "messaging.destination.name"):
            assert producer.attributes[key] == consumer.attributes[key], key
        destination = consumer.attributes["messaging.destination.name"]
        assert (producer.name, consumer.name) == (f"send {destination}", f"process {destination}")
    return len(consumers)


async def test_a_compensated_saga_is_one_trace_across_processes(
    settings: Settings, db_schema: str, bus: TestBus, receiver: OtlpReceiver, processes: Processes
) -> None:
    # The database password is a canary: trust auth ignores it, no log or span may show it.
    password = f"canary-password-{uuid.uuid4().hex[:8]}"
    secret = f"canary-token-{uuid.uuid4().hex[:8]}"
    settings = settings.model_copy(
        update={"database_url": settings.database_url.replace("root@", f"root:{password}@")}
    )
    assert (await cli(settings, "migrate"))[0] == 0
    coordinator = await processes.start(
        settings, "run", "--log-level", "debug", **otel(receiver, "bus-coordinator")
    )
    adapters = await processes.start(
        settings, "adapters", "--log-level", "debug", **otel(receiver, "bus-adapters")
    )
    await wait_for_consumers(bus.connection, settings, WORK_QUEUES)
    charges = await bus.tap(bus.topology.commands, "payments.charge_payment.v1")

    await place(
        settings, receiver, "zz-1", shipping_address={"country": "ZZ"}, payment_token=secret
    )
    await wait_for_status(settings, ["zz-1"], {SagaStatus.COMPENSATED})
    view = await show(settings, "zz-1")
    assert await processes.stop(coordinator) == 0  # flushes its spans
    assert await processes.stop(adapters) == 0

    trace_id, saga_id = view["trace_id"], view["saga_id"]
    assert view["jaeger_url"] == f"http://jaeger:16686/trace/{trace_id}"
    spans = [s for s in receiver.spans if s.trace_id == trace_id]
    saga_spans = [s for s in receiver.spans if s.attributes.get("saga.id") == saga_id]
    # one story: every span about this saga is in the trace of the event that started it
    assert saga_spans and {s.trace_id for s in saga_spans} == {trace_id}
    [root] = [s for s in spans if s.parent_span_id is None]
    assert (root.name, root.kind, root.service) == (
        f"send {bus.topology.events}",
        "PRODUCER",
        "bus-cli",
    )
    span_ids = {s.span_id for s in spans}
    assert all(s.parent_span_id in span_ids for s in spans if s is not root)
    assert {s.service for s in spans} == {"bus-cli", "bus-coordinator", "bus-adapters"}

    # producer and consumer linked across each hop: the event, 5 commands, 5 replies
    assert hops_are_linked(spans) == 11
    for span in spans:
        if span.kind in ("PRODUCER", "CONSUMER"):
            attributes = span.attributes
            assert all(a in attributes for a in MESSAGING), (span.name, attributes)
            assert attributes["messaging.system"] == "rabbitmq"
            assert attributes["messaging.message.conversation_id"] == "zz-1"
            operation = "send" if span.kind == "PRODUCER" else "process"
            assert attributes["messaging.operation.name"] == operation
            assert attributes["messaging.operation.type"] == operation
        if span.service != "bus-cli":  # every span the engine makes names its saga
            assert all(a in span.attributes for a in SAGA), (span.name, span.attributes)
    names = {s.name for s in spans}
    assert {"load saga", "commit saga"} <= names  # Postgres work
    calls = [s for s in spans if s.kind == "CLIENT" and s.service == "bus-adapters"]
    assert [s.name for s in sorted(calls, key=lambda s: s.start_ns)] == [
        "inventory inventory.reserve_stock.v1",
        "payments payments.charge_payment.v1",
        "shipping shipping.create_shipment.v1",
        "payments payments.refund_payment.v1",
        "inventory inventory.release_stock.v1",
    ]
    [rejected] = [
        s
        for s in spans
        if s.name == f"process {bus.topology.replies}"
        and s.attributes["messaging.rabbitmq.destination.routing_key"]
        == "shipping.shipment_rejected.v1"
    ]
    compensations = sorted(
        (
            s
            for s in spans
            if s.kind == "PRODUCER"
            and s.service == "bus-coordinator"
            and s.attributes.get("saga.compensation") is True
        ),
        key=lambda s: s.start_ns,
    )
    # the compensations follow the failure, in reverse step order
    assert [s.attributes["saga.step"] for s in compensations] == ["charge_payment", "reserve_stock"]
    assert all(s.start_ns > rejected.start_ns for s in compensations)
    assert rejected.attributes["saga.step"] == "create_shipment"
    # the saga's end goes out last, in the same trace: an event, not a compensation
    [ended] = [
        s
        for s in spans
        if s.kind == "PRODUCER"
        and s.attributes["messaging.rabbitmq.destination.routing_key"]
        == "saga.order_to_cash.compensated.v1"
    ]
    assert (ended.name, ended.service) == (f"send {bus.topology.events}", "bus-coordinator")
    assert ended.attributes["saga.status"] == "compensated"
    assert "saga.compensation" not in ended.attributes
    assert all(ended.start_ns > s.start_ns for s in compensations)

    # logs: JSON lines that name the trace and the saga
    records = [json.loads(line) for line in processes.log_lines() if line.startswith("{")]
    assert any(r.get("saga_id") == saga_id and r.get("trace_id") == trace_id for r in records)

    # canary: the secret did flow (the adapter needs it to charge), yet no span or log shows
    # it, and the finished saga does not keep it
    [charge] = await bus.drain(charges, 1)
    assert secret in charge.body.decode()
    state = await sql(settings, "SELECT state::text AS s FROM saga")
    assert secret not in state[0]["s"]
    history = await sql(settings, "SELECT payload::text AS p, trace_id FROM saga_history")
    assert not any(secret in row["p"] for row in history)
    # each history entry names the trace of the work that wrote it: the saga's
    assert {row["trace_id"] for row in history} == {trace_id}
    shown = json.dumps([s.attributes for s in receiver.spans]) + json.dumps(
        [s.resource for s in receiver.spans]
    )
    logs = "\n".join(processes.log_lines())
    for canary in (secret, password):
        assert canary not in shown
        assert canary not in logs


async def test_spans_after_a_coordinator_restart_stay_in_the_saga_trace(
    settings: Settings, db_schema: str, bus: TestBus, receiver: OtlpReceiver, processes: Processes
) -> None:
    assert (await cli(settings, "migrate"))[0] == 0
    # The adapters' queues exist, but nobody consumes them until after the restart.
    channel = await bus.channel()
    for name, types in (
        (
            "order-to-cash.adapter.inventory",
            ["inventory.reserve_stock.v1", "inventory.release_stock.v1"],
        ),
        (
            "order-to-cash.adapter.payments",
            ["payments.charge_payment.v1", "payments.refund_payment.v1"],
        ),
        ("order-to-cash.adapter.shipping", ["shipping.create_shipment.v1"]),
    ):
        await bus.topology.declare_work_queue(
            channel, bus.topology.queue(name), [(bus.topology.commands, t) for t in types]
        )
    short = {"BUS_STEP_TIMEOUT_SECONDS": "2"}
    first = await processes.start(
        settings,
        "run",
        **otel(receiver, "bus-coordinator", **short),
        OTEL_RESOURCE_ATTRIBUTES="service.instance.id=first",
    )
    await wait_for_consumers(bus.connection, settings, ("order-to-cash.coordinator",))
    await place(settings, receiver, "r-1")
    await wait_for_status(settings, ["r-1"], {SagaStatus.RUNNING})
    assert await processes.stop(first) == 0
    second = await processes.start(
        settings,
        "run",
        **otel(receiver, "bus-coordinator", **short),
        OTEL_RESOURCE_ATTRIBUTES="service.instance.id=second",
    )
    # the reply is late: the second coordinator's timer resends the command (same id) ...
    for _ in range(100):
        if await sql(
            settings, "SELECT 1 FROM saga_history WHERE message_type = 'bus.saga_timer_fired'"
        ):
            break
        await asyncio.sleep(0.1)
    # ... and then the adapters come up and answer
    adapters = await processes.start(settings, "adapters", **otel(receiver, "bus-adapters"))
    sagas = await wait_for_status(settings, ["r-1"], FINAL, within=60)
    view = await show(settings, "r-1")
    for process in (second, adapters):
        assert await processes.stop(process) == 0

    trace_id = view["trace_id"]
    saga_spans = [s for s in receiver.spans if s.attributes.get("saga.id") == view["saga_id"]]
    after_restart = [s for s in saga_spans if s.resource.get("service.instance.id") == "second"]
    assert after_restart, "the second coordinator made no spans for the saga"
    assert {s.trace_id for s in saga_spans} == {trace_id}
    timeouts = [s for s in after_restart if s.name == "saga timeout"]
    assert timeouts and all(s.attributes["saga.timeout"] is True for s in timeouts)
    assert sagas["r-1"].status in FINAL


def scrape(port: int) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        text = response.read().decode()
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


async def test_metrics_count_what_happened(
    settings: Settings, db_schema: str, bus: TestBus, processes: Processes
) -> None:
    assert (await cli(settings, "migrate"))[0] == 0
    coordinator_port, adapters_port = free_port(), free_port()
    await processes.start(settings, "run", BUS_METRICS_PORT=str(coordinator_port))
    await processes.start(settings, "adapters", BUS_METRICS_PORT=str(adapters_port))
    await wait_for_consumers(bus.connection, settings, WORK_QUEUES)
    for order_id, changes in (
        ("m-ok", {}),
        ("m-oos", {"items": [{"sku": "OOS-1", "quantity": 1, "unit_price": "10.00"}]}),
        ("m-zz", {"shipping_address": {"country": "ZZ"}}),
    ):
        code, _, err = await cli(
            settings,
            "publish",
            "orders.order_placed.v1",
            "--data",
            order_data(order_id, **changes),
            "--id",
            f"event-{order_id}",
        )
        assert code == 0, err
    # the same delivery again, and a malformed message
    code, _, _ = await cli(
        settings,
        "publish",
        "orders.order_placed.v1",
        "--data",
        order_data("m-ok"),
        "--id",
        "event-m-ok",
    )
    assert code == 0
    channel = await bus.channel()
    await publish_raw(
        channel,
        bus.topology.events,
        "orders.order_placed.v1",
        b"{oops",
        {},
        "application/cloudevents+json",
    )
    await wait_for_status(settings, ["m-ok", "m-oos", "m-zz"], FINAL)

    saga = (("saga_type", "order_to_cash"),)
    expected = {
        ("bus_sagas_started_total", saga): 3.0,
        ("bus_sagas_completed_total", saga): 1.0,
        ("bus_sagas_compensated_total", saga): 2.0,
        ("bus_inbox_duplicates_total", (("consumer", "coordinator"),)): 1.0,
        (
            "bus_messages_dead_lettered_total",
            (("consumer", "coordinator"), ("reason", "malformed")),
        ): 1.0,
        ("bus_outbox_backlog", ()): 0.0,
    }
    for name, labels in (
        ("reserve_stock", "succeeded"),
        ("reserve_stock", "failed"),
        ("charge_payment", "succeeded"),
        ("create_shipment", "succeeded"),
        ("create_shipment", "failed"),
    ):
        key = (("outcome", labels), ("saga_type", "order_to_cash"), ("step", name))
        expected[("bus_saga_step_duration_seconds_count", key)] = (
            2.0
            if (name, labels) in {("reserve_stock", "succeeded"), ("charge_payment", "succeeded")}
            else 1.0
        )
    for _ in range(100):  # the backlog gauge is refreshed every few seconds
        metrics = scrape(coordinator_port)
        if all(metrics.get(k) == v for k, v in expected.items()):
            break
        await asyncio.sleep(0.2)
    assert {k: metrics.get(k) for k in expected} == expected
    assert ("bus_sagas_failed_total", saga) not in metrics or metrics[
        ("bus_sagas_failed_total", saga)
    ] == 0
    adapter_metrics = scrape(adapters_port)
    assert not any(name == "bus_messages_dead_lettered_total" for name, _ in adapter_metrics)
