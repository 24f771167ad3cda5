"""Observability: metrics instruments and structured logs.

Nothing here starts anything at import. The Prometheus endpoint lives in
``bus_orchestrator.telemetry.prometheus`` and is imported only by the composition root
that serves it, so importing this package does not pull in the SDK or prometheus_client.
"""

from bus_orchestrator.telemetry.logs import (
    ContextFilter,
    JsonFormatter,
    LogFormat,
    TextFormatter,
    bind_saga,
    configure_logging,
    redact_url,
    saga_id_var,
)
from bus_orchestrator.telemetry.metrics import STEP_DURATION_BUCKETS, STEP_OUTCOMES, Metrics

__all__ = [
    "STEP_DURATION_BUCKETS",
    "STEP_OUTCOMES",
    "ContextFilter",
    "JsonFormatter",
    "LogFormat",
    "Metrics",
    "TextFormatter",
    "bind_saga",
    "configure_logging",
    "redact_url",
    "saga_id_var",
]
