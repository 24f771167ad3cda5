"""``POST /webhooks/{name}``: another system's callback, mapped to one of the app's events.

No bearer token: the HMAC signature is the authentication (``bus_orchestrator.webhooks``
says how a sender signs). A request that is not signed with the webhook's secret, or
whose timestamp is off by more than 5 minutes, is refused (401) before its body is even
parsed, and publishes nothing. A signed request is mapped (``Webhook.map``), validated
against the event's contract and committed like ``POST /events/{type}``: 202 with the
event id, committed, not yet published.

Replays publish once: the event id is derived from the webhook's name and the sender's
delivery id (``Webhook.delivery``, read from the signed payload: the same on each retry
of one delivery, even re-signed) or else the signature (one signed request), and the
commit goes through the inbox.
"""

from __future__ import annotations

import json
import logging
import time
import uuid
from collections.abc import Callable, Mapping
from typing import Any

from fastapi import FastAPI, Request
from pydantic import ValidationError

from bus_orchestrator.api.auth import ApiConfigError
from bus_orchestrator.api.errors import UNAVAILABLE, Responses
from bus_orchestrator.api.events import (
    EVENT_IDS,
    EventAccepted,
    commit_event,
    read_body,
    refuse,
    storable,
)
from bus_orchestrator.api.models import ErrorBody
from bus_orchestrator.api.outlet import outlet_of
from bus_orchestrator.app import App
from bus_orchestrator.config import Settings
from bus_orchestrator.core.messages import Event, validation_errors
from bus_orchestrator.webhooks import (
    SIGNATURE_HEADER,
    TIMESTAMP_HEADER,
    TOLERANCE,
    PayloadRefusedError,
    Webhook,
    WebhookSecretError,
    load_secret,
    verify,
)

log = logging.getLogger(__name__)

MAX_DELIVERY = 500

WEBHOOK_RESPONSES: Responses = {
    401: {
        "model": ErrorBody,
        "description": "Not signed with the webhook's secret: a signature header missing or "
        "wrong, or a timestamp more than 5 minutes off. Nothing is published",
    },
    404: {"model": ErrorBody, "description": "The app has no webhook of that name"},
    413: {"model": ErrorBody, "description": "The body is over BUS_MAX_MESSAGE_BYTES"},
    422: {
        "model": ErrorBody,
        "description": "A payload that is not JSON, that the webhook's mapping refuses, or "
        "whose event its contract refuses (the reason names fields, never values)",
    },
    **UNAVAILABLE,
}

DESCRIPTION = f"""Accept a callback of another system and publish the event the app maps it
to. **No bearer token**: the request is authenticated by its HMAC signature.

Signing, for a sender in any language, with the webhook's shared secret `S` (the UTF-8
bytes of the value of `BUS_WEBHOOK_SECRET_<NAME>` on the server, `<NAME>` being the
webhook's name upper-cased with `-` as `_`):

1. `t` = the current time in Unix seconds, as decimal ASCII digits (e.g. `1767225600`).
2. `m` = the bytes of `t`, then one `.` byte, then the raw request body exactly as sent.
3. `sig` = HMAC-SHA256 keyed with `S` over `m`, as lower-case hexadecimal (64 chars).
4. Send the headers `{TIMESTAMP_HEADER}: t` and `{SIGNATURE_HEADER}: sha256=sig`, and the
   body, `Content-Type: application/json`.

A missing or wrong signature, or a `t` more than {TOLERANCE} seconds before or after the
server's clock, is refused with 401 and publishes nothing. One signed request is
published once however often it is replayed; a webhook that reads the sender's delivery
id from the payload publishes each delivery once however often it is re-signed and sent.
A repeat gets 202 with the same `event_id` and `duplicate: true`.

**202 means committed, not yet published**: the event is in the outbox and the API's
relay publishes it to `bus.events`; while RabbitMQ is down it waits there and is
published once the broker is back. An unknown webhook is 404; a webhook whose secret is
not configured on this server is 503."""


def load_secrets(app: App, environ: Mapping[str, str] | None = None) -> dict[str, bytes | None]:
    """Each webhook's secret (``None``: not set); an unreadable file is an
    ``ApiConfigError``."""
    secrets: dict[str, bytes | None] = {}
    for webhook in app.webhooks:
        try:
            secrets[webhook.name] = load_secret(webhook, environ)
        except WebhookSecretError as exc:
            raise ApiConfigError(str(exc)) from None
    return secrets


def _event_of(webhook: Webhook, payload: Any) -> Event:
    """The event ``webhook`` maps ``payload`` to; 422 when the mapping or the contract
    refuses it. What the mapping raised is shown by its kind only (it may hold any data),
    but for ``PayloadRefusedError``, whose reason is meant for the sender."""
    try:
        mapped = webhook.map(payload)
    except PayloadRefusedError as exc:
        raise refuse(422, "invalid", f"webhook {webhook.name!r}: {exc}") from None
    except ValidationError as exc:
        detail = f"webhook {webhook.name!r}: {validation_errors(exc)}"
        raise refuse(422, "invalid", detail) from None
    except Exception as exc:
        raise refuse(
            422,
            "invalid",
            f"webhook {webhook.name!r}: the payload could not be mapped ({type(exc).__name__})",
        ) from None
    if isinstance(mapped, Event):
        if not isinstance(mapped, webhook.event):
            raise TypeError(
                f"webhook {webhook.name!r} mapped to {type(mapped).__name__}, "
                f"not {webhook.event.__name__}"
            )
        return mapped
    try:
        return webhook.event.model_validate(mapped)
    except ValidationError as exc:
        detail = f"{webhook.event.message_type}: {validation_errors(exc)}"
        raise refuse(422, "invalid", detail) from None


def _delivery_of(webhook: Webhook, payload: Any) -> str | None:
    """The sender's delivery id in ``payload``, if the webhook reads one; 422 when it
    cannot be read."""
    if webhook.delivery is None:
        return None
    try:
        delivery = webhook.delivery(payload)
    except Exception as exc:
        detail = f"webhook {webhook.name!r}: no delivery id in the payload ({type(exc).__name__})"
        raise refuse(422, "invalid", detail) from None
    if not isinstance(delivery, str) or not 1 <= len(delivery) <= MAX_DELIVERY:
        detail = f"webhook {webhook.name!r}: the delivery id must be 1 to {MAX_DELIVERY} characters"
        raise refuse(422, "invalid", detail)
    return delivery


def add_webhook_routes(
    api: FastAPI,
    settings: Settings,
    app: App,
    *,
    environ: Mapping[str, str] | None = None,
    clock: Callable[[], float] = time.time,
) -> None:
    """``POST /webhooks/{name}`` on ``api`` for ``app``'s webhooks; their secrets are read
    now, from ``environ`` (the process's environment by default)."""
    hooks = {webhook.name: webhook for webhook in app.webhooks}
    secrets = load_secrets(app, environ)
    told: set[str] = set()

    @api.post(
        "/webhooks/{name}",
        status_code=202,
        responses=WEBHOOK_RESPONSES,
        tags=["webhooks"],
        summary="Accept a signed callback of another system (HMAC-SHA256, no bearer token)",
        description=DESCRIPTION,
        openapi_extra={
            "parameters": [
                {
                    "name": TIMESTAMP_HEADER,
                    "in": "header",
                    "required": True,
                    "schema": {"type": "string", "pattern": "^[0-9]{1,12}$"},
                    "description": "The time of signing, in Unix seconds",
                },
                {
                    "name": SIGNATURE_HEADER,
                    "in": "header",
                    "required": True,
                    "schema": {"type": "string", "pattern": "^sha256=[0-9a-f]{64}$"},
                    "description": "sha256= and the hex HMAC-SHA256 of timestamp '.' body",
                },
            ],
            "requestBody": {
                "required": True,
                "content": {"application/json": {"schema": {}}},
            },
        },
    )
    async def receive(request: Request, name: str) -> EventAccepted:
        webhook = hooks.get(name)
        if webhook is None:
            raise refuse(404, "not_found", f"app {app.name!r} has no webhook {name!r}")
        secret = secrets[name]
        if secret is None:
            if name not in told:  # once: the sender retries
                told.add(name)
                log.warning(
                    "webhook %r called, but it has no secret: set %s (or %s_FILE); it "
                    "answers 503 until then",
                    name,
                    webhook.secret_setting,
                    webhook.secret_setting,
                )
            raise refuse(503, "unavailable", f"webhook {name!r} is not configured on this server")
        body = await read_body(request, settings.max_message_bytes)
        presented = request.headers.get(SIGNATURE_HEADER)
        reason = verify(secret, request.headers.get(TIMESTAMP_HEADER), presented, body, clock())
        if reason is not None:
            log.warning("webhook %r: request refused: %s", name, reason)
            raise refuse(401, "unauthorized", reason)
        assert presented is not None  # noqa: S101 - verified
        try:
            payload = json.loads(body)
        except (ValueError, RecursionError):
            raise refuse(422, "invalid", f"webhook {name!r}: the body is not JSON") from None
        outlet = outlet_of(request)
        event = _event_of(webhook, payload)
        delivery = _delivery_of(webhook, payload)
        storable(outlet, event, settings, app)
        seed = f"delivery\n{delivery}" if delivery else f"signature\n{presented.strip().lower()}"
        event_id = str(uuid.uuid5(EVENT_IDS, f"webhook\n{app.name}\n{name}\n{seed}"))
        duplicate = await commit_event(
            outlet,
            event,
            event_id,
            None,
            span=f"webhook {name}",
            attributes={"bus.app": app.name, "bus.webhook": name},
        )
        log.info(
            "webhook %r: event %s %s %s",
            name,
            event.message_type,
            event_id,
            "was accepted before" if duplicate else "committed",
        )
        return EventAccepted(event_id=event_id, event_type=event.message_type, duplicate=duplicate)
