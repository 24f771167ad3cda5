"""``POST /events/{type}``: publish one of the app's business events over HTTP.

The event is validated against its contract, committed to the outbox through the API's
outlet (``api.outlet``) and answered 202 with its id: committed, not yet published. The
outlet's relay publishes it at once when RabbitMQ is up, and the sweep of any of the app's
relays does once it is back.

With an ``Idempotency-Key`` header (IETF draft "The Idempotency-Key HTTP Header Field"), a
retried request publishes once and gets the same event id: the key's first request is
remembered (a hash of the type, data and correlation id; table ``request_key``) for the
inbox's retention (``BUS_INBOX_RETENTION_SECONDS``), and the event's commit goes through
the inbox, so a repeat is a duplicate. The same key with another request is refused (422).
"""

from __future__ import annotations

import hashlib
import json
import logging
import uuid
from datetime import timedelta
from typing import Any

from fastapi import FastAPI, Request
from opentelemetry.trace import SpanKind
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from bus_orchestrator.api.errors import GUARDED, ApiError, Responses
from bus_orchestrator.api.guard import OPERATOR, caller
from bus_orchestrator.api.models import ErrorBody
from bus_orchestrator.api.outlet import Outlet, outlet_of
from bus_orchestrator.app import App
from bus_orchestrator.config import Settings
from bus_orchestrator.core.messages import Event, MessageKind, validation_errors
from bus_orchestrator.errors import InvalidMessageError
from bus_orchestrator.ports import Change, CommitResult, KeyedRequest
from bus_orchestrator.transport.codec import RawMessage, decode

log = logging.getLogger(__name__)

IDEMPOTENCY_HEADER = "Idempotency-Key"
EVENT_IDS = uuid.UUID("6f1d3c52-4a59-4c52-9d0b-1d4f8f0c9a7e")
"""The namespace of the event ids the API derives (UUIDv5) from an idempotency key or a
webhook delivery."""
MAX_KEY = 255


class EventRequest(BaseModel):
    """The body of ``POST /events/{type}``."""

    model_config = ConfigDict(extra="forbid")

    data: dict[str, Any]
    """The event's data, as its contract (``/contracts``' JSON Schema) describes it."""
    correlation_id: str | None = Field(default=None, min_length=1, max_length=255)
    """The CloudEvents ``correlationid`` the event carries, if any."""


class EventAccepted(BaseModel):
    """Committed for publishing (202): the relay publishes it to ``bus.events``."""

    event_id: str
    """The CloudEvents ``id`` of the event."""
    event_type: str
    duplicate: bool
    """``true``: this request (or webhook delivery) was accepted before; nothing more is
    published, and ``event_id`` is the id it got then."""


def refuse(status: int, error: Any, detail: str) -> ApiError:
    return ApiError(status, ErrorBody(error=error, detail=detail))


async def read_body(request: Request, limit: int) -> bytes:
    """The raw request body; 413 past ``limit`` bytes, read no further."""
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            detail = f"the body is over {limit} bytes (BUS_MAX_MESSAGE_BYTES)"
            raise refuse(413, "too_large", detail)
        chunks.append(chunk)
    return b"".join(chunks)


def storable(outlet: Outlet, event: Event, settings: Settings, app: App) -> None:
    """Refuse (422) an event the coordinator would dead-letter: what it checks on the bus
    (size, characters Postgres cannot store) is checked here, on its very encoding."""
    message = outlet.encode(event, message_id=str(uuid.uuid4()))
    raw = RawMessage(
        body=message.body,
        headers=dict(message.headers),
        content_type=message.content_type,
        message_id=message.message_id,
        type=message.message_type,
    )
    try:
        decode(raw, app.registry, settings.max_message_bytes)
    except InvalidMessageError as exc:
        raise refuse(422, "invalid", str(exc)) from None


async def commit_event(
    outlet: Outlet,
    event: Event,
    event_id: str,
    correlation_id: str | None,
    *,
    span: str,
    attributes: dict[str, str],
) -> bool:
    """Commit ``event`` to the outbox under a span of its own (which the relay's send and
    the saga it starts join); ``True`` when its id was committed before (a duplicate)."""
    attributes = {
        **attributes,
        "messaging.message.id": event_id,
        "messaging.destination.name": outlet.exchange_for(MessageKind.EVENT),
        "bus.message.type": event.message_type,
    }
    with outlet.tracer.start_as_current_span(span, kind=SpanKind.INTERNAL, attributes=attributes):
        message = outlet.encode(event, message_id=event_id, correlation_id=correlation_id)
        change = Change(
            consumer=outlet.consumer,
            message_id=event_id,
            saga_id=None,
            instance=None,
            expected_version=None,
            history=(),
            outbox=(message,),
            source=outlet.source,
        )
        committed = await outlet.commit(change)
    return committed.result is CommitResult.DUPLICATE


def request_hash(event_type: str, request: EventRequest) -> str:
    canonical = json.dumps(
        [event_type, request.data, request.correlation_id],
        sort_keys=True,
        separators=(",", ":"),
        ensure_ascii=False,
    )
    return hashlib.sha256(canonical.encode()).hexdigest()


def _key_of(request: Request) -> str | None:
    key = request.headers.get(IDEMPOTENCY_HEADER)
    if key is None:
        return None
    if not 1 <= len(key) <= MAX_KEY or not key.isprintable() or not key.isascii():
        detail = f"{IDEMPOTENCY_HEADER} must be 1 to {MAX_KEY} printable ASCII characters"
        raise refuse(422, "invalid", detail)
    return key


def _parse(body: bytes) -> EventRequest:
    try:
        return EventRequest.model_validate_json(body)
    except ValidationError as exc:
        raise refuse(422, "invalid", f"body: {validation_errors(exc)}") from None


EVENT_RESPONSES: Responses = {
    **GUARDED,
    404: {"model": ErrorBody, "description": "The app has no event of that type"},
    413: {"model": ErrorBody, "description": "The body is over BUS_MAX_MESSAGE_BYTES"},
    422: {
        "model": ErrorBody,
        "description": "Not an event (a command or a reply), a body or data its contract "
        "refuses (the reason names each field, never its value), or an Idempotency-Key "
        "used before with another request",
    },
}

DESCRIPTION = """Publish one of the app's business events (to `bus.events`, keyed by its type).

The body is `{"data": {...}, "correlation_id": "..."}` (`correlation_id` optional): `data`
is validated against the event's contract; a refusal (422) names each field and why,
never the value. An unknown type is 404; a command or reply type is refused (422): send a
command with `bus-orchestrator send` (or on `bus.commands`), the API publishes events only.

**202 means committed, not yet published**: the event is in the outbox, in one
transaction, and the API's relay publishes it at once; while RabbitMQ is down it waits
there, and is published once the broker is back (by this API's relay or a coordinator's).

`Idempotency-Key` (optional header, 1-255 printable ASCII characters): a request retried
with the same key and the same body publishes once and gets the same `event_id`
(`duplicate: true`); the same key with another type, `data` or `correlation_id` is refused
(422). A key is remembered for `BUS_INBOX_RETENTION_SECONDS` (7 days by default).
Operator role."""


def add_event_routes(api: FastAPI, settings: Settings, app: App) -> None:
    """``POST /events/{event_type}`` on ``api``, for the events of ``app``'s contracts."""
    window = timedelta(seconds=settings.inbox_retention_seconds)
    events = sorted(c.message_type for c in app.registry if c.kind is MessageKind.EVENT)

    @api.post(
        "/events/{event_type}",
        status_code=202,
        dependencies=OPERATOR,
        responses=EVENT_RESPONSES,
        tags=["events"],
        summary="Publish a business event",
        description=DESCRIPTION,
        openapi_extra={
            "parameters": [
                {
                    "name": IDEMPOTENCY_HEADER,
                    "in": "header",
                    "required": False,
                    "schema": {"type": "string", "minLength": 1, "maxLength": MAX_KEY},
                    "description": "Makes a retried request publish once (same event id)",
                }
            ],
            "requestBody": {
                "required": True,
                "content": {"application/json": {"schema": EventRequest.model_json_schema()}},
            },
        },
    )
    async def publish_event(request: Request, event_type: str) -> EventAccepted:
        outlet = outlet_of(request)
        contract = app.registry.get(event_type)
        if contract is None:
            raise refuse(
                404,
                "not_found",
                f"app {app.name!r} has no event type {event_type!r}; its events: "
                + (", ".join(events) or "none"),
            )
        if contract.kind is not MessageKind.EVENT:
            raise refuse(
                422,
                "not_an_event",
                f"{event_type} is a {contract.kind}: the API publishes events only; "
                f"send a command with `bus-orchestrator send {event_type}` (to bus.commands)"
                if contract.kind is MessageKind.COMMAND
                else f"{event_type} is a reply: replies are sent by adapters, in answer to a "
                "command",
            )
        key = _key_of(request)
        body = _parse(await read_body(request, settings.max_message_bytes))
        try:
            event = contract.model.model_validate(body.data)
        except ValidationError as exc:
            raise refuse(422, "invalid", f"{event_type}: {validation_errors(exc)}") from None
        assert isinstance(event, Event)  # noqa: S101 - an event type's model
        storable(outlet, event, settings, app)
        if key is None:
            event_id = str(uuid.uuid4())
        else:
            asked = KeyedRequest(
                request_hash(event_type, body), str(uuid.uuid5(EVENT_IDS, f"{app.name}\n{key}"))
            )
            known = await outlet.request_keys.remember(
                app.name, key, asked, window=window, fresh_event_id=str(uuid.uuid4())
            )
            if known.request_hash != asked.request_hash:
                raise refuse(
                    422,
                    "key_reused",
                    f"this {IDEMPOTENCY_HEADER} was used for another request (type, data or "
                    "correlation id): use a new key for a new request",
                )
            event_id = known.event_id
        duplicate = await commit_event(
            outlet,
            event,
            event_id,
            body.correlation_id,
            span=f"publish {event_type}",
            attributes={"bus.app": app.name},
        )
        log.info(
            "event %s %s %s over HTTP by %s",
            event_type,
            event_id,
            "was accepted before" if duplicate else "committed",
            caller(request).name,
        )
        return EventAccepted(event_id=event_id, event_type=event_type, duplicate=duplicate)
