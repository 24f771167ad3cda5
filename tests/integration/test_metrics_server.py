"""The /metrics endpoint over real HTTP: names, values, isolation between servers, shutdown."""

from __future__ import annotations

import asyncio
import http.client
from collections.abc import Iterator

import pytest
from prometheus_client.parser import text_string_to_metric_families

from bus_orchestrator.telemetry.metrics import Metrics
from bus_orchestrator.telemetry.prometheus import MetricsServer


def scrape(port: int) -> tuple[int, str, str]:
    """Status, content type and body of ``GET /metrics``."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request("GET", "/metrics")
        response = conn.getresponse()
        return response.status, response.getheader("Content-Type", ""), response.read().decode()
    finally:
        conn.close()


def samples(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


@pytest.fixture
def server() -> Iterator[MetricsServer]:
    server = MetricsServer.start("bus-test", port=0, host="127.0.0.1")
    yield server
    server.shutdown()


async def test_scrape_shows_the_recorded_metrics(server: MetricsServer) -> None:
    assert server.port > 0
    assert server.host == "127.0.0.1"
    metrics = Metrics(server.meter)
    metrics.saga_started("order_to_cash")
    metrics.saga_started("order_to_cash")
    metrics.saga_finished("order_to_cash", "compensated")
    metrics.step_finished("order_to_cash", "charge_payment", "failed", 0.03)
    metrics.dead_lettered("adapter.payments", "handler-error")
    metrics.duplicate("coordinator")
    metrics.set_outbox_backlog(4, 2.5)

    status, content_type, text = await asyncio.to_thread(scrape, server.port)

    assert status == 200
    assert content_type.startswith("text/plain")
    assert 'bus_sagas_started_total{saga_type="order_to_cash"} 2.0' in text
    assert "bus_outbox_backlog 4.0" in text
    found = samples(text)
    step = frozenset(
        {("saga_type", "order_to_cash"), ("step", "charge_payment"), ("outcome", "failed")}
    )
    assert found[("bus_sagas_compensated_total", frozenset({("saga_type", "order_to_cash")}))] == 1
    assert found[("bus_saga_step_duration_seconds_count", step)] == 1
    assert found[("bus_saga_step_duration_seconds_sum", step)] == pytest.approx(0.03)
    assert found[("bus_saga_step_duration_seconds_bucket", step | {("le", "0.05")})] == 1
    assert found[("bus_saga_step_duration_seconds_bucket", step | {("le", "0.025")})] == 0
    dead = frozenset({("consumer", "adapter.payments"), ("reason", "handler-error")})
    assert found[("bus_messages_dead_lettered_total", dead)] == 1
    assert found[("bus_inbox_duplicates_total", frozenset({("consumer", "coordinator")}))] == 1
    assert found[("bus_outbox_oldest_age_seconds", frozenset())] == 2.5
    target = next(labels for name, labels in found if name == "target_info")
    assert ("service_name", "bus-test") in target

    # The gauges follow the relay's latest measurement, scrape by scrape.
    metrics.set_outbox_backlog(0, None)
    _, _, text = await asyncio.to_thread(scrape, server.port)
    found = samples(text)
    assert found[("bus_outbox_backlog", frozenset())] == 0
    assert found[("bus_outbox_oldest_age_seconds", frozenset())] == 0
    assert found[("bus_sagas_started_total", frozenset({("saga_type", "order_to_cash")}))] == 2


def test_two_servers_in_one_process_keep_their_own_metrics() -> None:
    with (
        MetricsServer.start("svc-a", port=0, host="127.0.0.1") as a,
        MetricsServer.start("svc-b", port=0, host="127.0.0.1") as b,
    ):
        assert a.port != b.port
        assert a.registry is not b.registry
        Metrics(a.meter).saga_started("order_to_cash")
        metrics_b = Metrics(b.meter)
        metrics_b.saga_started("refund")
        metrics_b.saga_started("refund")

        found_a = samples(scrape(a.port)[2])
        found_b = samples(scrape(b.port)[2])

    started = "bus_sagas_started_total"
    assert {k: v for k, v in found_a.items() if k[0] == started} == {
        (started, frozenset({("saga_type", "order_to_cash")})): 1
    }
    assert {k: v for k, v in found_b.items() if k[0] == started} == {
        (started, frozenset({("saga_type", "refund")})): 2
    }
    assert ("service_name", "svc-a") in next(k for n, k in found_a if n == "target_info")
    assert ("service_name", "svc-b") in next(k for n, k in found_b if n == "target_info")


def test_shutdown_stops_serving_and_is_idempotent() -> None:
    server = MetricsServer.start("bus-test", port=0, host="127.0.0.1")
    port = server.port
    assert scrape(port)[0] == 200
    server.shutdown()
    server.shutdown()
    with pytest.raises(ConnectionRefusedError):
        scrape(port)
    # The reader left the server's registry with the provider.
    assert list(server.registry.collect()) == []


def test_a_taken_port_raises_and_leaves_the_first_server_serving(server: MetricsServer) -> None:
    with pytest.raises(OSError, match="in use"):
        MetricsServer.start("bus-test", port=server.port, host="127.0.0.1")
    assert scrape(server.port)[0] == 200
