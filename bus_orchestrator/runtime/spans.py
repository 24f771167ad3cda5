"""The coordinator's spans: one per message and saga, in the saga's trace, and its Postgres work.

With tracing off (a no-op tracer) every method here returns at once: none of this is on the
hot path then.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.trace import INVALID_SPAN, NoOpTracer, Span, SpanKind, Tracer

from bus_orchestrator.core.decide import Inbound, LocksGranted, TimerFired
from bus_orchestrator.core.repair import OperatorAction
from bus_orchestrator.core.state import SagaInstance
from bus_orchestrator.ports import Loaded
from bus_orchestrator.telemetry.tracing import (
    extract,
    messaging_attributes,
    parent_for,
    record_error,
    saga_attributes,
)


@dataclass(frozen=True, slots=True)
class Delivery:
    """Where a message came from and when, for its span."""

    exchange: str
    routing_key: str
    context: Context
    received_ns: int


@dataclass(frozen=True, slots=True)
class Timed:
    """A load done before the span it belongs to was opened, with its timing."""

    loaded: Loaded
    started_ns: int
    ended_ns: int


def _db_attributes(operation: str, saga: SagaInstance | None) -> dict[str, str]:
    return {
        "db.system.name": "postgresql",
        "db.operation.name": operation,
        "db.collection.name": "saga",
        **saga_attributes(saga),
    }


class SagaSpans:
    def __init__(self, tracer: Tracer) -> None:
        self._tracer = tracer
        self.enabled = not isinstance(tracer, NoOpTracer)

    def context_of(self, headers: Mapping[str, Any]) -> Context:
        """The trace context a message carries (nothing to read with tracing off)."""
        return extract(headers) if self.enabled else Context()

    @contextmanager
    def message(
        self,
        message: Inbound | TimerFired | LocksGranted | OperatorAction,
        delivery: Delivery | None,
        first: Timed,
    ) -> Iterator[Span]:
        """The span of one message's work on one saga, in the saga's trace.

        A timer has no message behind it: its span is ``saga timeout``, a child of the
        context the saga stored at its start; a lock grant's is ``saga locks granted``, and
        an operator's repair ``saga <repair>`` (``saga resume``), with who did it.
        """
        if not self.enabled:
            yield INVALID_SPAN
            return
        stored = first.loaded.instance.trace_context if first.loaded.instance else None
        if isinstance(message, LocksGranted):
            parent, links = parent_for(None, stored)
            name, kind, started = "saga locks granted", SpanKind.INTERNAL, first.started_ns
            attributes: dict[str, Any] = {}
        elif isinstance(message, OperatorAction):
            parent, links = parent_for(None, stored)
            name, kind, started = f"saga {message.repair}", SpanKind.INTERNAL, first.started_ns
            attributes = {"saga.repair": str(message.repair), "saga.repair.by": message.by}
        elif delivery is None:
            parent, links = parent_for(None, stored)
            name, kind, started = "saga timeout", SpanKind.INTERNAL, first.started_ns
            attributes = {"saga.timeout": True}
        else:
            parent, links = parent_for(delivery.context, stored)
            name, kind = f"process {delivery.exchange}", SpanKind.CONSUMER
            started = delivery.received_ns
            attributes = messaging_attributes(
                "process",
                delivery.exchange,
                delivery.routing_key,
                message.message_id,
                message.correlation_id if isinstance(message, Inbound) else None,
            )
        span = self._tracer.start_span(name, parent, kind, attributes, links, start_time=started)
        try:
            with trace.use_span(span, end_on_exit=False, record_exception=False):
                yield span
        except Exception as exc:
            span.record_exception(exc)
            record_error(span, type(exc).__qualname__, str(exc))
            raise
        finally:
            span.end()

    @contextmanager
    def ignored(self, delivery: Delivery, inbound: Inbound) -> Iterator[None]:
        """The span of a message no saga takes (a reply nobody awaits)."""
        if not self.enabled:
            yield
            return
        attributes: dict[str, Any] = {
            **messaging_attributes(
                "process",
                delivery.exchange,
                delivery.routing_key,
                inbound.message_id,
                inbound.correlation_id,
            ),
            "saga.outcome": "ignored",
        }
        with self._tracer.start_as_current_span(
            f"process {delivery.exchange}",
            delivery.context,
            SpanKind.CONSUMER,
            attributes,
            start_time=delivery.received_ns,
        ):
            yield

    def refusal(self, delivery: Delivery, message_id: str | None, reason: str, detail: str) -> None:
        """The span of a message refused as bad input, marked with the reason."""
        if not self.enabled:
            return
        span = self._tracer.start_span(
            f"process {delivery.exchange}",
            delivery.context,
            SpanKind.CONSUMER,
            messaging_attributes(
                "process", delivery.exchange, delivery.routing_key, message_id, None
            ),
            start_time=delivery.received_ns,
        )
        record_error(span, reason, detail)
        span.end()

    def past_load(self, parent: Span, timed: Timed, saga: SagaInstance | None) -> None:
        """The load that ran before its message span could be parented, recorded after."""
        if not self.enabled:
            return
        past = self._tracer.start_span(
            "load saga",
            trace.set_span_in_context(parent),
            SpanKind.CLIENT,
            _db_attributes("SELECT", saga),
            start_time=timed.started_ns,
        )
        past.end(end_time=timed.ended_ns)

    @contextmanager
    def db(self, name: str, operation: str, saga: SagaInstance | None = None) -> Iterator[None]:
        """A CLIENT span around one statement of Postgres work."""
        if not self.enabled:
            yield
            return
        with self._tracer.start_as_current_span(
            name, kind=SpanKind.CLIENT, attributes=_db_attributes(operation, saga)
        ):
            yield
