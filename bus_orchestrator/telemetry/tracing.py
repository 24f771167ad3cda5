"""Tracing: W3C trace context in AMQP headers, and the span names and attributes we emit.

Messaging spans follow the current OpenTelemetry messaging conventions: a PRODUCER span
``send <exchange>`` per publish and a CONSUMER span ``process <exchange>`` per handled
message. Every span the engine makes also carries the saga it works for (``saga.id``,
``saga.type``, ``saga.step``, ``saga.status``); messages carry those as ``x-saga-*`` AMQP
headers so adapters, in any language, can label their spans too.

A saga's spans share one trace, the trace of the event that started it: messages carry the
context from hop to hop, and the saga stores the context of its start so that work with no
message behind it (a timeout) or a message from another trace (a cancellation) joins it.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, MutableMapping
from typing import Any

from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.trace import (
    Link,
    NoOpTracer,
    Span,
    SpanContext,
    SpanKind,
    StatusCode,
    Tracer,
)
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from bus_orchestrator.core.state import SagaInstance
from bus_orchestrator.ports import OutboxMessage, Publisher

_PROPAGATOR = TraceContextTextMapPropagator()

SAGA_HEADERS = {
    "x-saga-id": "saga.id",
    "x-saga-type": "saga.type",
    "x-saga-step": "saga.step",
    "x-saga-status": "saga.status",
    "x-saga-compensation": "saga.compensation",
}
"""AMQP header -> span attribute, for the saga a message belongs to."""


def _text(value: Any) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)


def extract(headers: Mapping[str, Any]) -> Context:
    """The trace context a message carries (an empty context when it carries none)."""
    carrier = {k: _text(v) for k, v in headers.items() if k in ("traceparent", "tracestate")}
    return _PROPAGATOR.extract(carrier)


def inject(headers: MutableMapping[str, Any], context: Context | None = None) -> None:
    """Write the current (or given) span context into ``headers`` as W3C trace context."""
    carrier: dict[str, str] = {}
    _PROPAGATOR.inject(carrier, context)
    headers.update(carrier)


def carrier_of(span: Span) -> dict[str, str]:
    """A span's context as W3C headers, for storing with a saga."""
    carrier: dict[str, str] = {}
    _PROPAGATOR.inject(carrier, trace.set_span_in_context(span))
    return carrier


def span_context_of(context: Context) -> SpanContext | None:
    span_context = trace.get_current_span(context).get_span_context()
    return span_context if span_context.is_valid else None


def current_trace_id() -> str | None:
    """The trace id (32 hex digits) of the span current here, if any is recording."""
    context = trace.get_current_span().get_span_context()
    return format(context.trace_id, "032x") if context.is_valid else None


def trace_id_of(carrier: Mapping[str, str]) -> str | None:
    """The 32-hex-digit trace id in a stored W3C carrier, if any."""
    span_context = span_context_of(extract(carrier))
    return format(span_context.trace_id, "032x") if span_context else None


def parent_for(
    message: Context | None, saga: Mapping[str, str] | None
) -> tuple[Context, list[Link]]:
    """Where a span about a saga belongs.

    The message's own context when it is in the saga's trace (or the saga has none yet);
    otherwise the saga's trace, with a link to the message's trace, so the saga stays one
    story and the message's origin is still one click away.
    """
    message_span = span_context_of(message) if message is not None else None
    saga_context = extract(saga) if saga else None
    saga_span = span_context_of(saga_context) if saga_context is not None else None
    if saga_span is None or (message_span and message_span.trace_id == saga_span.trace_id):
        return (message if message is not None else Context()), []
    assert saga_context is not None  # noqa: S101 - saga_span came from it
    return saga_context, ([Link(message_span)] if message_span else [])


def messaging_attributes(
    operation: str,
    exchange: str,
    routing_key: str,
    message_id: str | None,
    conversation_id: str | None,
) -> dict[str, str]:
    """``operation`` is ``send`` or ``process`` (both name and type, per the conventions)."""
    attributes = {
        "messaging.system": "rabbitmq",
        "messaging.operation.name": operation,
        "messaging.operation.type": operation,
        "messaging.destination.name": exchange,
        "messaging.rabbitmq.destination.routing_key": routing_key,
    }
    if message_id:
        attributes["messaging.message.id"] = message_id
    if conversation_id:
        attributes["messaging.message.conversation_id"] = conversation_id
    return attributes


def current_step(instance: SagaInstance | None) -> str | None:
    """The step a saga awaits a reply for, if any."""
    if instance is None or instance.current is None:
        return None
    return instance.steps[instance.current].name


def saga_attributes(instance: SagaInstance | None, step: str | None = None) -> dict[str, str]:
    """``saga.*`` attributes; ``step`` defaults to the one awaited, else the last one run."""
    if instance is None:
        return {}
    attributes = {
        "saga.id": instance.saga_id,
        "saga.type": instance.saga_type,
        "saga.status": str(instance.status),
    }
    step = step or current_step(instance) or (instance.steps[-1].name if instance.steps else None)
    if step:
        attributes["saga.step"] = step
    return attributes


def saga_headers(attributes: Mapping[str, str], compensation: bool) -> dict[str, str]:
    by_attribute = {v: k for k, v in SAGA_HEADERS.items()}
    headers = {by_attribute[k]: v for k, v in attributes.items() if k in by_attribute}
    if compensation:
        headers["x-saga-compensation"] = "true"
    return headers


def saga_attributes_from_headers(headers: Mapping[str, Any]) -> dict[str, str | bool]:
    attributes: dict[str, str | bool] = {}
    for header, attribute in SAGA_HEADERS.items():
        if header in headers:
            value = _text(headers[header])
            attributes[attribute] = value == "true" if attribute == "saga.compensation" else value
    return attributes


def record_error(span: Span, error_type: str, description: str = "") -> None:
    """Mark a span failed the way the conventions ask: ``error.type`` and an error status."""
    span.set_attribute("error.type", error_type)
    span.set_status(StatusCode.ERROR, description[:500])


async def send_traced(
    tracer: Tracer,
    publisher: Publisher,
    message: OutboxMessage,
    parent: Context | None = None,
) -> None:
    """Publish under a PRODUCER span ``send <exchange>`` whose context the message carries.

    ``parent`` defaults to the current context; the relay passes the context stored with
    the outbox row, so the span is a child of the work that committed it. With tracing
    off, it just publishes.
    """
    if isinstance(tracer, NoOpTracer):
        await publisher.publish(message)
        return
    headers = dict(message.headers)
    attributes: dict[str, str | bool] = {
        **messaging_attributes(
            "send",
            message.exchange,
            message.routing_key,
            message.message_id,
            message.correlation_id,
        ),
        **saga_attributes_from_headers(headers),
    }
    with tracer.start_as_current_span(
        f"send {message.exchange}", parent, SpanKind.PRODUCER, attributes
    ) as span:
        inject(headers)  # the consumer's span becomes a child of this one
        try:
            await publisher.publish(dataclasses.replace(message, headers=headers))
        except Exception as exc:
            record_error(span, type(exc).__qualname__, str(exc))
            raise
