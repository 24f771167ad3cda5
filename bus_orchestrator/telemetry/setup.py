"""Building telemetry in the composition root, from the standard ``OTEL_*`` variables.

Nothing here runs at import time: the CLI builds a ``Telemetry`` once per process and
passes it down. With no OTLP endpoint configured, tracing is a no-op: nothing is exported,
nothing breaks, and the hot path pays almost nothing.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass

from opentelemetry.sdk.resources import SERVICE_NAME, Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.trace import NoOpTracer, Tracer

from bus_orchestrator.telemetry.metrics import Metrics

log = logging.getLogger(__name__)

INSTRUMENTATION = "bus_orchestrator"


@dataclass(frozen=True)
class Telemetry:
    """What the engine's parts use to trace and count. Passed down, never global."""

    tracer: Tracer
    metrics: Metrics

    @classmethod
    def disabled(cls) -> Telemetry:
        return cls(NoOpTracer(), Metrics.disabled())


def otlp_traces_configured() -> bool:
    if os.environ.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return False
    return bool(
        os.environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
        or os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT")
    )


def tracer_provider_from_env(default_service_name: str) -> TracerProvider | None:
    """An SDK provider exporting over OTLP/HTTP, or ``None`` when no endpoint is set.

    The exporter, batch processor, sampler and resource read their own ``OTEL_*``
    variables (endpoint, headers, timeout, ``OTEL_TRACES_SAMPLER``, ``OTEL_BSP_*``,
    ``OTEL_RESOURCE_ATTRIBUTES``); ``OTEL_SERVICE_NAME`` defaults to ``default_service_name``.
    """
    if not otlp_traces_configured():
        return None
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

    protocol = os.environ.get("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL") or os.environ.get(
        "OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf"
    )
    if protocol != "http/protobuf":
        log.warning("OTLP protocol %r is not supported here; exporting http/protobuf", protocol)
    attributes = {} if os.environ.get("OTEL_SERVICE_NAME") else {SERVICE_NAME: default_service_name}
    provider = TracerProvider(resource=Resource.create(attributes))
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    return provider


def tracer_of(provider: TracerProvider | None) -> Tracer:
    return provider.get_tracer(INSTRUMENTATION) if provider is not None else NoOpTracer()
