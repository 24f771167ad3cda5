"""CloudEvents 1.0 over AMQP, in both content modes, through the official SDK.

Incoming messages are checked in this order, each failure a clear ``InvalidMessageError``:
size, JSON, CloudEvent shape, required attributes (checked *before* the SDK parses, because
the SDK fills in a missing ``id``, ``time`` and ``specversion`` by itself), known type, and
the contract's schema. Outgoing messages are encoded in binary mode: ``ce-`` headers and the
data as the JSON body, with the AMQP properties mirroring ``id``, ``correlationid`` and
``type``.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from cloudevents.core.bindings import rabbitmq
from cloudevents.core.exceptions import BaseCloudEventException
from cloudevents.core.formats.json import JSONFormat
from cloudevents.core.v1.event import CloudEvent
from pydantic import ValidationError

from bus_orchestrator.core.decide import Inbound
from bus_orchestrator.core.messages import ContractRegistry, Message
from bus_orchestrator.errors import DeadLetterReason, InvalidMessageError
from bus_orchestrator.ports import OutboxMessage

REQUIRED_ATTRIBUTES = ("id", "source", "specversion", "type")
STRUCTURED_CONTENT_TYPE = "application/cloudevents+json"
DATA_CONTENT_TYPE = "application/json"
CORRELATION = "correlationid"
CAUSATION = "causationid"
COMPENSATES = "compensates"
_FORMAT = JSONFormat()


@dataclass(frozen=True, slots=True)
class RawMessage:
    """An AMQP message as delivered, independent of the client library."""

    body: bytes
    headers: Mapping[str, Any] = field(default_factory=dict)
    content_type: str | None = None
    message_id: str | None = None
    correlation_id: str | None = None
    type: str | None = None
    exchange: str = ""
    routing_key: str = ""


def _text(value: Any) -> str:
    if isinstance(value, bytes):
        return value.decode("utf-8", errors="replace")
    return str(value)


def _missing(attributes: Mapping[str, Any]) -> list[str]:
    return [
        name
        for name in REQUIRED_ATTRIBUTES
        if not isinstance(attributes.get(name), str) or not attributes[name]
    ]


def _structured(raw: RawMessage) -> CloudEvent:
    try:
        document = json.loads(raw.body)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InvalidMessageError(DeadLetterReason.MALFORMED, f"body is not JSON: {exc}") from exc
    if not isinstance(document, dict):
        raise InvalidMessageError(
            DeadLetterReason.NOT_CLOUDEVENT, "structured body is not a JSON object"
        )
    if missing := _missing(document):
        raise InvalidMessageError(
            DeadLetterReason.MISSING_ATTRIBUTES, f"missing required attributes: {missing}"
        )
    event = rabbitmq.from_structured(
        rabbitmq.RabbitMQMessage(headers={}, content_type=raw.content_type, body=raw.body),
        _FORMAT,
        CloudEvent,
    )
    assert isinstance(event, CloudEvent)  # noqa: S101 - the factory given is CloudEvent
    return event


def _binary(raw: RawMessage) -> CloudEvent:
    headers = {
        name.lower(): _text(value)
        for name, value in raw.headers.items()
        if name.lower().startswith(rabbitmq.CE_PREFIX)
    }
    if not headers:
        raise InvalidMessageError(
            DeadLetterReason.NOT_CLOUDEVENT,
            "no ce- headers and content type is not application/cloudevents+json",
        )
    attributes = {name[len(rabbitmq.CE_PREFIX) :]: value for name, value in headers.items()}
    if missing := _missing(attributes):
        raise InvalidMessageError(
            DeadLetterReason.MISSING_ATTRIBUTES, f"missing required attributes: {missing}"
        )
    try:
        json.loads(raw.body)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        # The SDK would quietly hand back the body as a string; we refuse it instead.
        raise InvalidMessageError(DeadLetterReason.MALFORMED, f"data is not JSON: {exc}") from exc
    event = rabbitmq.from_binary(
        rabbitmq.RabbitMQMessage(
            headers=headers, content_type=raw.content_type or DATA_CONTENT_TYPE, body=raw.body
        ),
        _FORMAT,
        CloudEvent,
    )
    assert isinstance(event, CloudEvent)  # noqa: S101 - the factory given is CloudEvent
    return event


def to_cloudevent(raw: RawMessage, max_bytes: int) -> CloudEvent:
    """Parse the envelope, in whichever content mode the message uses."""
    if len(raw.body) > max_bytes:
        raise InvalidMessageError(
            DeadLetterReason.OVERSIZED, f"body is {len(raw.body)} bytes, the limit is {max_bytes}"
        )
    structured = (raw.content_type or "").lower().startswith("application/cloudevents")
    try:
        return _structured(raw) if structured else _binary(raw)
    except BaseCloudEventException as exc:
        raise InvalidMessageError(DeadLetterReason.NOT_CLOUDEVENT, str(exc)) from exc
    except ValueError as exc:  # e.g. an unparsable 'time'
        raise InvalidMessageError(DeadLetterReason.NOT_CLOUDEVENT, str(exc)) from exc


def _schema_errors(exc: ValidationError) -> str:
    # No input values: they may carry personal or secret data.
    return "; ".join(
        f"{'.'.join(str(p) for p in err['loc']) or '<data>'}: {err['msg']}"
        for err in exc.errors(include_url=False, include_input=False)
    )


def decode(raw: RawMessage, registry: ContractRegistry, max_bytes: int) -> Inbound:
    """A delivered AMQP message as a validated ``Inbound``, or ``InvalidMessageError``."""
    event = to_cloudevent(raw, max_bytes)
    message_type = event.get_type()
    contract = registry.get(message_type)
    if contract is None:
        raise InvalidMessageError(DeadLetterReason.UNKNOWN_TYPE, f"unknown type {message_type!r}")
    data = event.get_data()
    if not isinstance(data, dict):
        raise InvalidMessageError(
            DeadLetterReason.SCHEMA, f"data of {message_type} must be a JSON object"
        )
    try:
        payload = contract.model.model_validate(data)
    except ValidationError as exc:
        raise InvalidMessageError(
            DeadLetterReason.SCHEMA, f"{message_type}: {_schema_errors(exc)}"
        ) from exc
    correlation = event.get_extension(CORRELATION)
    causation = event.get_extension(CAUSATION)
    compensates = event.get_extension(COMPENSATES)
    return Inbound(
        message_id=event.get_id(),
        payload=payload,
        correlation_id=None if correlation is None else str(correlation),
        causation_id=None if causation is None else str(causation),
        source=event.get_source(),
        compensates=None if compensates is None else str(compensates),
    )


def encode(
    *,
    message_id: str,
    payload: Message,
    exchange: str,
    source: str,
    time: datetime,
    correlation_id: str | None = None,
    causation_id: str | None = None,
    compensates: str | None = None,
) -> OutboxMessage:
    """A message as a binary-mode CloudEvent, ready to store in the outbox and publish."""
    attributes: dict[str, Any] = {
        "id": message_id,
        "type": payload.message_type,
        "source": source,
        "specversion": "1.0",
        "time": time,
        "datacontenttype": DATA_CONTENT_TYPE,
    }
    if correlation_id is not None:
        attributes[CORRELATION] = correlation_id
    if causation_id is not None:
        attributes[CAUSATION] = causation_id
    if compensates is not None:
        attributes[COMPENSATES] = compensates
    # The SDK maps the attributes to headers; the body is pydantic's own JSON: compact, and
    # UTF-8 without escaping, so non-ASCII text costs its bytes and no more.
    wire = rabbitmq.to_binary(CloudEvent(attributes, None), _FORMAT)
    return OutboxMessage(
        message_id=message_id,
        message_type=payload.message_type,
        exchange=exchange,
        routing_key=payload.message_type,
        body=payload.model_dump_json().encode(),
        content_type=wire.content_type or DATA_CONTENT_TYPE,
        headers=wire.headers,
        correlation_id=correlation_id,
    )
