"""The engine's metrics in the Prometheus text format.

A ``PrometheusMetrics`` is the whole pipeline: an SDK ``MeterProvider`` and a
``PrometheusMetricReader`` registered on a ``CollectorRegistry`` of its own (never
prometheus_client's global ``REGISTRY``, so several services or tests in one process do not
collide). A ``MetricsServer`` serves one over HTTP on a port of its own
(prometheus_client's threaded WSGI server answering ``GET /metrics``); the HTTP API serves
the same registry as its ``GET /metrics`` (``render``).
"""

from __future__ import annotations

import threading
from types import TracebackType
from wsgiref.simple_server import WSGIServer

from opentelemetry.exporter.prometheus import PrometheusMetricReader
from opentelemetry.metrics import Meter
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.resources import SERVICE_NAME, SERVICE_VERSION, Resource
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    generate_latest,
    start_http_server,
)

from bus_orchestrator import __version__
from bus_orchestrator.telemetry.metrics import METER_NAME

# Scrapers usually run in another container or host, hence every interface by default.
DEFAULT_HOST = "0.0.0.0"  # noqa: S104

_JOIN_TIMEOUT_SECONDS = 5.0

CONTENT_TYPE = CONTENT_TYPE_LATEST
"""The media type of ``render``'s text (Prometheus exposition format 0.0.4)."""


def render(registry: CollectorRegistry) -> bytes:
    """The text a scrape of ``registry`` gets."""
    return generate_latest(registry)


class PrometheusMetrics:
    """The meter the engine records on and the registry a scrape renders.

    Build it with ``PrometheusMetrics.create(...)`` in the composition root, pass ``meter``
    to ``Metrics``, and ``shutdown()`` it on the way out.
    """

    def __init__(self, provider: MeterProvider, registry: CollectorRegistry) -> None:
        self._provider = provider
        self._registry = registry
        self._meter = provider.get_meter(METER_NAME, __version__)

    @classmethod
    def create(cls, service_name: str, *, scope_labels: bool = False) -> PrometheusMetrics:
        """``service_name`` goes into the resource, which Prometheus sees as
        ``target_info{service_name=...}``. ``scope_labels`` adds the ``otel_scope_*`` labels
        to every series; they are off because every instrument here comes from the one
        engine meter."""
        registry = CollectorRegistry()
        reader = PrometheusMetricReader(scope_info_enabled=scope_labels, registry=registry)
        provider = MeterProvider(
            metric_readers=[reader],
            resource=Resource.create({SERVICE_NAME: service_name, SERVICE_VERSION: __version__}),
            # The owner shuts it down; an atexit hook per instance would pile up in tests.
            shutdown_on_exit=False,
        )
        return cls(provider, registry)

    @property
    def meter(self) -> Meter:
        """The engine's meter; pass it to ``Metrics``."""
        return self._meter

    @property
    def meter_provider(self) -> MeterProvider:
        return self._provider

    @property
    def registry(self) -> CollectorRegistry:
        return self._registry

    def shutdown(self) -> None:
        self._provider.shutdown()


class MetricsServer:
    """A running ``/metrics`` endpoint and the meter whose instruments it exposes.

    Start it with ``MetricsServer.start(...)`` in the composition root, build
    ``Metrics(server.meter)``, and call ``shutdown()`` (or use it as a context manager) on
    the way out. ``shutdown()`` blocks for up to half a second while the HTTP thread notices;
    from async code call it through ``asyncio.to_thread``.
    """

    def __init__(
        self, metrics: PrometheusMetrics, httpd: WSGIServer, thread: threading.Thread
    ) -> None:
        self._metrics = metrics
        self._httpd = httpd
        self._thread = thread
        self._lock = threading.Lock()
        self._closed = False

    @classmethod
    def start(
        cls,
        service_name: str,
        port: int,
        host: str = DEFAULT_HOST,
        *,
        scope_labels: bool = False,
    ) -> MetricsServer:
        """Build the pipeline (``PrometheusMetrics.create``) and serve ``/metrics`` on
        ``host:port``. ``port=0`` picks a free port; read it back from ``.port``.
        Raises ``OSError`` when the address cannot be bound.
        """
        metrics = PrometheusMetrics.create(service_name, scope_labels=scope_labels)
        try:
            return cls.serve(metrics, port, host)
        except BaseException:
            metrics.shutdown()
            raise

    @classmethod
    def serve(
        cls, metrics: PrometheusMetrics, port: int, host: str = DEFAULT_HOST
    ) -> MetricsServer:
        """Serve the ``metrics`` given on ``host:port``; ``shutdown()`` shuts them down
        too. Raises ``OSError`` when the address cannot be bound."""
        httpd, thread = start_http_server(port, addr=host, registry=metrics.registry)
        return cls(metrics, httpd, thread)

    @property
    def metrics(self) -> PrometheusMetrics:
        """The pipeline this server renders."""
        return self._metrics

    @property
    def meter(self) -> Meter:
        """The engine's meter; pass it to ``Metrics``."""
        return self._metrics.meter

    @property
    def meter_provider(self) -> MeterProvider:
        """The provider behind ``meter``, for other instrumentations that take one."""
        return self._metrics.meter_provider

    @property
    def registry(self) -> CollectorRegistry:
        """This server's own registry (what ``/metrics`` renders)."""
        return self._metrics.registry

    @property
    def host(self) -> str:
        return str(self._httpd.server_address[0])

    @property
    def port(self) -> int:
        """The bound port, the real one when started with ``port=0``."""
        return self._httpd.server_port

    def shutdown(self) -> None:
        """Stop serving and shut the meter provider down. Safe to call more than once."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
        try:
            self._httpd.shutdown()
            self._httpd.server_close()
            self._thread.join(_JOIN_TIMEOUT_SECONDS)
        finally:
            self._metrics.shutdown()

    def __enter__(self) -> MetricsServer:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.shutdown()
