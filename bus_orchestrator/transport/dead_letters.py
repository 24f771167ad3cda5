"""What a message of ``bus.dead`` says about itself, and the message that replays it.

A dead letter reaches ``bus.dead`` in one of two ways: the engine publishes it with the
reason in its headers (``x-dead-reason``, ``x-dead-detail``, ``x-dead-at``,
``x-original-exchange``, ``x-original-routing-key``: ``publisher.dead_letter_reasons``), or
RabbitMQ dead-letters it itself (a queue's delivery limit, as a backstop) and says so in
``x-death`` and ``x-first-death-*``. ``dead_letter_record`` reads whichever is there, and
whatever the message is: a body that is not JSON, or not a CloudEvent, is kept as it came.

Headers are kept as JSON; a value JSON (or Postgres) cannot hold is tagged:
``{"$bytes": base64}``, ``{"$text": base64 of UTF-8}`` (a string holding NUL or a lone
surrogate), ``{"$decimal": "1.5"}``, ``{"$timestamp": iso}``, ``{"$float": "nan"}``, so the
replay sends the header as it was.
"""

from __future__ import annotations

import base64
import hashlib
import json
import math
import re
import uuid
from collections.abc import Mapping
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import aio_pika
from aio_pika.abc import AbstractIncomingMessage

from bus_orchestrator.ports import DeadLetterRecord

DEAD_NAMESPACE = uuid.UUID("3c9b7a5e-2f4d-5e61-9a8b-0d1c2e3f4a5b")
"""Of the ids derived here: an archived dead letter's, and a replay's new message id."""

BROKER_REASON_PREFIX = "rabbitmq:"
"""A reason RabbitMQ gave (``x-first-death-reason``), as ``rabbitmq:delivery_limit``."""
UNKNOWN_REASON = "unknown"
"""A message in ``bus.dead`` that says nothing of why (published there by hand)."""

PROPERTIES = (
    "content_type",
    "content_encoding",
    "delivery_mode",
    "priority",
    "correlation_id",
    "reply_to",
    "message_id",
    "timestamp",
    "type",
    "user_id",
    "app_id",
)
"""The AMQP basic properties kept besides the headers."""

DEAD_HEADERS = re.compile(r"^(x-dead-|x-original-|x-first-death-|x-last-death-)")
"""Headers the dead-lettering added: a replay leaves them out."""
BROKER_HEADERS = ("x-death", "x-delivery-count")
REPLAY_OF = "x-replay-of"
"""On a replayed message: the id of the archived dead letter it replays."""
_UNSAFE_TEXT = re.compile("[\x00\ud800-\udfff]")


def to_json(value: Any) -> Any:
    """An AMQP field value as JSON Postgres can store (see the module docstring)."""
    if value is None or isinstance(value, bool | int):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else {"$float": repr(value)}
    if isinstance(value, str):
        if _UNSAFE_TEXT.search(value) is None:
            return value
        raw = value.encode("utf-8", "surrogatepass")
        return {"$text": base64.b64encode(raw).decode()}
    if isinstance(value, bytes | bytearray | memoryview):
        return {"$bytes": base64.b64encode(bytes(value)).decode()}
    if isinstance(value, Decimal):
        return {"$decimal": str(value)}
    if isinstance(value, datetime):
        return {"$timestamp": value.isoformat()}
    if isinstance(value, Mapping):
        return {_safe_key(str(k)): to_json(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [to_json(v) for v in value]
    return {"$text": base64.b64encode(repr(value).encode()).decode()}


def from_json(value: Any) -> Any:
    """The AMQP field value ``to_json`` stored."""
    if isinstance(value, list):
        return [from_json(v) for v in value]
    if not isinstance(value, dict):
        return value
    if len(value) == 1:
        [(tag, inner)] = value.items()
        if tag == "$bytes":
            return bytearray(base64.b64decode(inner))  # an AMQP byte array
        if tag == "$text":
            return base64.b64decode(inner).decode("utf-8", "surrogatepass")
        if tag == "$decimal":
            return Decimal(inner)
        if tag == "$timestamp":
            return datetime.fromisoformat(inner)
        if tag == "$float":
            return float(inner)
    return {k: from_json(v) for k, v in value.items()}


def _safe_key(key: str) -> str:
    return key if _UNSAFE_TEXT.search(key) is None else key.encode("unicode_escape").decode()


def _text(value: Any) -> str | None:
    """A header or property as text Postgres can store, or ``None``."""
    if isinstance(value, bytes | bytearray):
        value = bytes(value).decode("utf-8", "replace")
    if value is None or isinstance(value, Mapping | list):
        return None
    text = str(value)
    return _UNSAFE_TEXT.sub("\ufffd", text) if text else None


def _structured_attributes(body: bytes, content_type: str | None) -> dict[str, Any]:
    """The attributes of a structured-mode CloudEvent body, or nothing."""
    if not (content_type or "").lower().startswith("application/cloudevents"):
        return {}
    try:
        document = json.loads(body)
    except (ValueError, RecursionError):
        return {}
    return document if isinstance(document, dict) else {}


def _first_death(headers: Mapping[str, Any]) -> Mapping[str, Any]:
    """The ``x-death`` entry of the first time RabbitMQ dead-lettered the message."""
    deaths = headers.get("x-death")
    if not isinstance(deaths, list) or not deaths:
        return {}
    queue, reason = headers.get("x-first-death-queue"), headers.get("x-first-death-reason")
    for death in deaths:
        if isinstance(death, Mapping) and (death.get("queue"), death.get("reason")) == (
            queue,
            reason,
        ):
            return death
    last = deaths[-1]  # the newest is first
    return last if isinstance(last, Mapping) else {}


def _when(value: Any) -> datetime | None:
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=UTC)
    if isinstance(value, str | bytes):
        try:
            found = datetime.fromisoformat(value.decode() if isinstance(value, bytes) else value)
        except (ValueError, UnicodeDecodeError):
            return None
        return found if found.tzinfo else found.replace(tzinfo=UTC)
    return None


def fingerprint(properties: Mapping[str, Any], headers: Mapping[str, Any], body: bytes) -> bytes:
    """A hash of what the broker delivered, the same on every redelivery of it."""
    stable = {k: v for k, v in headers.items() if k != "x-delivery-count"}
    described = json.dumps(
        {"properties": properties, "headers": stable}, sort_keys=True, separators=(",", ":")
    )
    digest = hashlib.sha256(described.encode())
    digest.update(b"\x00")
    digest.update(body)
    return digest.digest()


def dead_letter_record(message: AbstractIncomingMessage, now: datetime) -> DeadLetterRecord:
    """What ``message`` of ``bus.dead`` is, why it is there and where it came from."""
    raw_headers: Mapping[str, Any] = message.headers or {}
    headers = to_json(dict(raw_headers))
    properties = {
        name: to_json(getattr(message, name))
        for name in PROPERTIES
        if getattr(message, name, None) is not None
    }
    body = bytes(message.body)
    structured = _structured_attributes(body, message.content_type)

    def attribute(name: str) -> str | None:
        return _text(raw_headers.get(f"ce-{name}")) or _text(structured.get(name))

    death = _first_death(raw_headers)
    reason = _text(raw_headers.get("x-dead-reason"))
    detail = _text(raw_headers.get("x-dead-detail")) or ""
    if reason is None and (broker := _text(raw_headers.get("x-first-death-reason"))):
        reason = BROKER_REASON_PREFIX + broker
        queue = _text(raw_headers.get("x-first-death-queue")) or "?"
        detail = detail or f"RabbitMQ dead-lettered it from queue {queue!r} ({broker})"
    routing_keys = death.get("routing-keys")
    first_key = routing_keys[0] if isinstance(routing_keys, list) and routing_keys else None
    exchange = raw_headers.get("x-original-exchange", raw_headers.get("x-first-death-exchange"))
    routing_key = raw_headers.get("x-original-routing-key", first_key)
    found = fingerprint(properties, headers, body)
    saga_id = _text(raw_headers.get("x-saga-id"))
    try:
        saga_id = None if saga_id is None else str(uuid.UUID(saga_id))
    except ValueError:
        saga_id = None
    return DeadLetterRecord(
        id=str(uuid.uuid5(DEAD_NAMESPACE, found.hex())),
        fingerprint=found,
        message_id=attribute("id") or _text(message.message_id),
        message_type=attribute("type") or _text(message.type),
        source=attribute("source"),
        correlation_id=attribute("correlationid") or _text(message.correlation_id),
        reason=reason or UNKNOWN_REASON,
        detail=detail,
        dead_lettered_by=_text(raw_headers.get("x-dead-by")),
        # An empty exchange is the default exchange: a real origin, unlike none at all.
        original_exchange=None if exchange is None else (_text(exchange) or ""),
        original_routing_key=None if routing_key is None else (_text(routing_key) or ""),
        content_type=_text(message.content_type),
        properties=properties,
        headers=headers,
        body=body,
        dead_lettered_at=(
            _when(raw_headers.get("x-dead-at")) or _when(death.get("time")) or now
        ).astimezone(UTC),
        saga_id=saga_id,
    )


# -- replay -------------------------------------------------------------------------------


def replay_headers(headers: Mapping[str, Any]) -> dict[str, Any]:
    """The original headers of an archived dead letter: without what dead-lettering added."""
    return {
        k: from_json(v)
        for k, v in headers.items()
        if not DEAD_HEADERS.match(k) and k not in BROKER_HEADERS
    }


def with_data(body: bytes, content_type: str | None, data: Any) -> bytes:
    """``body`` with its CloudEvents ``data`` replaced: the whole body in binary mode, the
    ``data`` member of the JSON document in structured mode. ``ValueError`` when a
    structured body is not a JSON object."""
    encoded = json.dumps(data, separators=(",", ":"), ensure_ascii=False)
    if not (content_type or "").lower().startswith("application/cloudevents"):
        return encoded.encode()
    try:
        document = json.loads(body)
    except (ValueError, RecursionError):
        document = None
    if not isinstance(document, dict):
        raise ValueError(
            "its structured body is not a JSON object, so its data cannot be replaced: "
            "give the whole corrected body instead"
        )
    document.pop("data_base64", None)
    document["data"] = data
    return json.dumps(document, separators=(",", ":"), ensure_ascii=False).encode()


def with_id(
    body: bytes, content_type: str | None, headers: dict[str, Any], message_id: str
) -> bytes:
    """Give the message another CloudEvents id: its ``ce-id`` header (binary mode) or the
    ``id`` of its JSON document (structured mode, where the body is then rewritten)."""
    if "ce-id" in headers:
        headers["ce-id"] = message_id
    if (content_type or "").lower().startswith("application/cloudevents"):
        try:
            document = json.loads(body)
        except (ValueError, RecursionError):
            return body
        if isinstance(document, dict):
            document["id"] = message_id
            return json.dumps(document, separators=(",", ":"), ensure_ascii=False).encode()
    return body


def replay_id(dead_letter_id: str) -> str:
    """The new message id of a replay that takes one: derived from the dead letter, so a
    retried replay sends the very same message."""
    return str(uuid.uuid5(DEAD_NAMESPACE, f"replay:{dead_letter_id}"))


def amqp_message(
    body: bytes,
    headers: dict[str, Any],
    properties: Mapping[str, Any],
    new_id: str | None,
    dead_letter_id: str,
) -> aio_pika.Message:
    """The AMQP message of a replay: the original properties (``new_id`` as its
    ``message_id``, if given), and a
    header naming the archived dead letter it replays. Neither ``user_id`` (the broker
    refuses one that is not the publishing connection's user) nor a per-message TTL (the
    original's ``expiration``, were it kept, could drop the replay unseen) is kept."""
    kept = {k: from_json(v) for k, v in properties.items()}
    return aio_pika.Message(
        body,
        headers={**headers, REPLAY_OF: dead_letter_id},
        content_type=kept.get("content_type"),
        content_encoding=kept.get("content_encoding"),
        delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
        priority=kept.get("priority"),
        correlation_id=kept.get("correlation_id"),
        reply_to=kept.get("reply_to"),
        message_id=new_id or kept.get("message_id"),
        timestamp=kept.get("timestamp"),
        type=kept.get("type"),
        app_id=kept.get("app_id"),
    )
