"""CloudEvents 1.0 over AMQP, in both content modes, through the official SDK.

Incoming messages are checked in this order, each failure a clear ``InvalidMessageError``:
size, JSON (nested too deep is malformed too), CloudEvent shape, attributes (checked
*before* the SDK builds the event, because it fills in a missing ``id``, ``time`` and
``specversion`` by itself), known type, ``causationid`` on a reply, and the contract's
schema (which includes: no NUL character anywhere in the data). The body is parsed once.
Outgoing messages are encoded in binary mode: ``ce-`` headers and the data as the JSON
body, with the AMQP properties mirroring ``id``, ``correlationid`` and ``type``.
"""

from __future__ import annotations

import json
import re
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
from bus_orchestrator.core.messages import (
    ContractRegistry,
    Message,
    MessageKind,
    validation_errors,
)
from bus_orchestrator.errors import DeadLetterReason, InvalidMessageError
from bus_orchestrator.ports import OutboxMessage

REQUIRED_ATTRIBUTES = ("id", "source", "specversion", "type")
STRUCTURED_CONTENT_TYPE = "application/cloudevents+json"
DATA_CONTENT_TYPE = "application/json"
CORRELATION = "correlationid"
CAUSATION = "causationid"
COMPENSATES = "compensates"
STRING_ATTRIBUTES = (*REQUIRED_ATTRIBUTES, CORRELATION, CAUSATION, COMPENSATES)
"""Attributes the engine reads; each must be a string when present, in either mode."""
_FORMAT = JSONFormat()

# CloudEvents forbids the C0 and C1 control characters in string attributes; Postgres
# cannot store NUL nor a lone surrogate (a JSON "\ud800" escape) in text or jsonb.
_BAD_IN_ATTRIBUTE = re.compile("[\x00-\x1f\x7f-\x9f\ud800-\udfff]")
_BAD_IN_DATA = re.compile("[\x00\ud800-\udfff]")
# Such characters can only reach a parsed JSON string through an escape (raw control
# characters are invalid JSON, raw surrogates invalid UTF-8): a cheap scan of the body
# tells whether the data needs walking at all.
_BAD_ESCAPE = re.compile(rb"\\u(?:0000|[dD][89a-fA-F][0-9a-fA-F]{2})")


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


def _not_json(constant: str) -> Any:
    raise ValueError(f"{constant} is not a JSON value")


def _json(body: bytes, what: str) -> Any:
    try:
        return json.loads(body, parse_constant=_not_json)
    except ValueError as exc:  # not UTF-8, not JSON, NaN, or an integer too long to convert
        raise InvalidMessageError(DeadLetterReason.MALFORMED, f"{what} is not JSON: {exc}") from exc
    except RecursionError as exc:
        raise InvalidMessageError(
            DeadLetterReason.MALFORMED, f"{what} is JSON nested too deeply to parse"
        ) from exc


def _type_name(value: Any) -> str:
    return "null" if value is None else type(value).__name__


def _check_attributes(attributes: Mapping[str, Any], *, where: str, all_strings: bool) -> None:
    """Refuse missing required attributes, and values the engine cannot use or store.

    ``all_strings``: every attribute must be a string (binary mode: a ``ce-`` header is an
    AMQP string, never an int, bool, table or byte array); otherwise only those the engine
    reads (structured mode, where CloudEvents also allows integer and boolean extensions).
    """
    missing = [name for name in REQUIRED_ATTRIBUTES if attributes.get(name) in (None, "")]
    if missing:
        raise InvalidMessageError(
            DeadLetterReason.MISSING_ATTRIBUTES, f"missing required attributes: {missing}"
        )
    for name, value in attributes.items():
        if isinstance(value, str):
            if _BAD_IN_ATTRIBUTE.search(value) is not None:
                raise InvalidMessageError(
                    DeadLetterReason.NOT_CLOUDEVENT,
                    f"{where.format(name)} holds a control character or a lone surrogate "
                    "(CloudEvents forbids U+0000-U+001F and U+007F-U+009F in attributes)",
                )
        elif all_strings or name in STRING_ATTRIBUTES:
            raise InvalidMessageError(
                DeadLetterReason.NOT_CLOUDEVENT,
                f"{where.format(name)} must be a string, not {_type_name(value)}",
            )


def _event(attributes: dict[str, Any], data: Any) -> CloudEvent:
    time = attributes.get("time")
    if isinstance(time, str):
        try:
            attributes["time"] = datetime.fromisoformat(time)
        except ValueError as exc:
            raise InvalidMessageError(
                DeadLetterReason.NOT_CLOUDEVENT, f"time is not an RFC 3339 timestamp: {exc}"
            ) from exc
    return CloudEvent(attributes, data)


def _structured(raw: RawMessage) -> CloudEvent:
    document = _json(raw.body, "body")
    if not isinstance(document, dict):
        raise InvalidMessageError(
            DeadLetterReason.NOT_CLOUDEVENT, "structured body is not a JSON object"
        )
    data = document.pop("data", None)
    if data is None and "data_base64" in document:
        data = document.pop("data_base64")  # binary data: refused later, as not an object
    attributes = {name: value for name, value in document.items() if value is not None}
    _check_attributes(attributes, where="attribute {!r}", all_strings=False)
    return _event(attributes, data)


def _binary(raw: RawMessage) -> CloudEvent:
    attributes = {
        name.lower()[len(rabbitmq.CE_PREFIX) :]: value
        for name, value in raw.headers.items()
        if name.lower().startswith(rabbitmq.CE_PREFIX)
    }
    if not attributes:
        raise InvalidMessageError(
            DeadLetterReason.NOT_CLOUDEVENT,
            "no ce- headers and content type is not application/cloudevents+json",
        )
    _check_attributes(attributes, where="header 'ce-{}'", all_strings=True)
    # Refuse a body that is not JSON, where the SDK would hand it back as a string.
    data = _json(raw.body, "data")
    content_type = raw.content_type or DATA_CONTENT_TYPE
    attributes["datacontenttype"] = content_type
    if not JSONFormat.JSON_CONTENT_TYPE_PATTERN.match(content_type):
        data = raw.body  # declared as something else than JSON: not an object, refused later
    return _event(attributes, data)


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


def _unstorable(data: Any) -> str | None:
    """The path of the first string (or key) holding NUL or a lone surrogate, if any.

    Iterative, so data nested as deep as the JSON parser allows cannot overflow the stack.
    """
    stack: list[tuple[str, Any]] = [("", data)]
    while stack:
        path, value = stack.pop()
        if isinstance(value, str):
            if _BAD_IN_DATA.search(value) is not None:
                return path or "<data>"
        elif isinstance(value, dict):
            for key, item in value.items():
                where = f"{path}.{key}" if path else str(key)
                if _BAD_IN_DATA.search(key) is not None:
                    return f"a key in {path or '<data>'}"
                stack.append((where, item))
        elif isinstance(value, list):
            stack.extend((f"{path}.{i}" if path else str(i), item) for i, item in enumerate(value))
    return None


def decode(raw: RawMessage, registry: ContractRegistry, max_bytes: int) -> Inbound:
    """A delivered AMQP message as a validated ``Inbound``, or ``InvalidMessageError``."""
    event = to_cloudevent(raw, max_bytes)
    message_type = event.get_type()
    contract = registry.get(message_type)
    if contract is None:
        raise InvalidMessageError(DeadLetterReason.UNKNOWN_TYPE, f"unknown type {message_type!r}")
    causation = event.get_extension(CAUSATION)
    if contract.kind is MessageKind.REPLY and not causation:
        # The engine finds the saga a reply belongs to by the command it answers.
        raise InvalidMessageError(
            DeadLetterReason.MISSING_ATTRIBUTES,
            f"reply {message_type} has no causationid (the id of the command it answers)",
        )
    data = event.get_data()
    if not isinstance(data, dict):
        raise InvalidMessageError(
            DeadLetterReason.SCHEMA, f"data of {message_type} must be a JSON object"
        )
    if _BAD_ESCAPE.search(raw.body) is not None and (where := _unstorable(data)) is not None:
        raise InvalidMessageError(
            DeadLetterReason.SCHEMA,
            f"{message_type}: {where}: holds a NUL character or a lone surrogate",
        )
    try:
        payload = contract.model.model_validate(data)
    except ValidationError as exc:
        raise InvalidMessageError(
            DeadLetterReason.SCHEMA, f"{message_type}: {validation_errors(exc)}"
        ) from exc
    correlation = event.get_extension(CORRELATION)
    compensates = event.get_extension(COMPENSATES)
    return Inbound(
        message_id=event.get_id(),
        payload=payload,
        correlation_id=correlation,
        causation_id=causation,
        source=event.get_source(),
        compensates=compensates,
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
