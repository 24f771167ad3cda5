"""``GET /metrics``: the process's metrics in the Prometheus text format, without a token
(as ``/healthz`` and ``/readyz``: scrapers carry none).

It renders the registry of the process's ``PrometheusMetrics`` (``telemetry.prometheus``):
under ``run --api``, the coordinator's counters, the very series ``BUS_METRICS_PORT``
serves; under ``api`` alone, those of the API process (its ``target_info``). Without a
registry it renders an empty one.
"""

from __future__ import annotations

from fastapi import FastAPI, Request, Response
from prometheus_client import CollectorRegistry

from bus_orchestrator.telemetry.prometheus import CONTENT_TYPE, render

_EXAMPLE = "# HELP bus_sagas_started_total Sagas started\n# TYPE bus_sagas_started_total counter\n"


def add_metrics_route(api: FastAPI, registry: CollectorRegistry | None) -> None:
    """Add ``GET /metrics`` to ``api``, rendering ``registry`` at each call."""
    api.state.metrics_registry = registry if registry is not None else CollectorRegistry()

    @api.get(
        "/metrics",
        tags=["health"],
        summary="The process's metrics (Prometheus text format); no token",
        response_class=Response,
        responses={
            200: {
                "description": "Prometheus exposition format 0.0.4",
                "content": {"text/plain": {"schema": {"type": "string"}, "example": _EXAMPLE}},
            }
        },
    )
    async def metrics(request: Request) -> Response:
        found: CollectorRegistry = request.app.state.metrics_registry
        return Response(render(found), media_type=CONTENT_TYPE)
