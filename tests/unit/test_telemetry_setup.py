"""Tracing is built from the standard OTEL_* variables, and is off without an endpoint."""

from __future__ import annotations

import pytest
from opentelemetry.trace import NoOpTracer

from bus_orchestrator.telemetry.setup import Telemetry, tracer_of, tracer_provider_from_env
from bus_orchestrator.telemetry.tracing import extract, inject, parent_for, trace_id_of

TRACEPARENT = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
OTHER = "00-11111111111111111111111111111111-2222222222222222-01"


@pytest.mark.parametrize(
    ("env", "exports"),
    [
        ({}, False),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4318"}, True),
        ({"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://127.0.0.1:4318/v1/traces"}, True),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://x:4318", "OTEL_SDK_DISABLED": "true"}, False),
    ],
)
def test_export_only_with_an_endpoint(
    monkeypatch: pytest.MonkeyPatch, env: dict[str, str], exports: bool
) -> None:
    for name in (
        "OTEL_EXPORTER_OTLP_ENDPOINT",
        "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
        "OTEL_SDK_DISABLED",
    ):
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    provider = tracer_provider_from_env("bus-test")
    try:
        assert (provider is not None) is exports
        assert isinstance(tracer_of(provider), NoOpTracer) is not exports
        if provider is not None:
            assert provider.resource.attributes["service.name"] == "bus-test"
    finally:
        if provider is not None:
            provider.shutdown()


def test_disabled_telemetry_takes_every_call() -> None:
    telemetry = Telemetry.disabled()
    with telemetry.tracer.start_as_current_span("x"):
        telemetry.metrics.saga_started("t")
        telemetry.metrics.set_outbox_backlog(0, None)


def test_w3c_context_round_trips_through_headers() -> None:
    headers: dict[str, object] = {}
    inject(headers, extract({"traceparent": TRACEPARENT}))
    assert headers["traceparent"] == TRACEPARENT
    assert trace_id_of({"traceparent": TRACEPARENT}) == "0af7651916cd43dd8448eb211c80319c"
    assert trace_id_of({}) is None
    # AMQP header values can arrive as bytes
    assert _carrier(extract({"traceparent": TRACEPARENT.encode()}))["traceparent"] == TRACEPARENT


def test_a_message_from_another_trace_joins_the_saga_trace_with_a_link() -> None:
    saga = {"traceparent": TRACEPARENT}
    same, links = parent_for(extract({"traceparent": TRACEPARENT}), saga)
    assert links == [] and trace_id_of(_carrier(same)) == trace_id_of(saga)
    other, links = parent_for(extract({"traceparent": OTHER}), saga)
    assert trace_id_of(_carrier(other)) == trace_id_of(saga)
    assert [format(link.context.trace_id, "032x") for link in links] == ["1" * 32]
    fresh, links = parent_for(extract({"traceparent": OTHER}), None)
    assert trace_id_of(_carrier(fresh)) == "1" * 32 and links == []


def _carrier(context: object) -> dict[str, str]:
    headers: dict[str, str] = {}
    inject(headers, context)  # type: ignore[arg-type]
    return headers
