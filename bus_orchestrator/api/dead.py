"""The dead-letter routes: ``GET /dead``, ``GET /dead/{id}``, ``POST /dead/{id}/replay``
and ``DELETE /dead/{id}``, over the archive the API process keeps of ``bus.dead``
(``runtime.dead_archive``): listing reads Postgres and never consumes from the bus.
"""

from __future__ import annotations

import json
import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Annotated, Any, Literal

import asyncpg
from fastapi import FastAPI, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import AfterValidator, BaseModel, ConfigDict, Field

from bus_orchestrator.api.cursor import decode_keyset, encode_keyset
from bus_orchestrator.api.errors import GUARDED, ApiError, Responses
from bus_orchestrator.api.guard import OPERATOR, READER, caller
from bus_orchestrator.api.models import ErrorBody, Time
from bus_orchestrator.app import App
from bus_orchestrator.config import Settings
from bus_orchestrator.errors import BrokerUnavailableError
from bus_orchestrator.ports import DeadAfter, DeadFilter, DeadStatus, StoredDeadLetter
from bus_orchestrator.runtime.dead_archive import DeadArchive
from bus_orchestrator.runtime.dead_letters import (
    Correction,
    DeadLetterNotFoundError,
    DeadLetters,
    DeadLetterStateError,
    ReplayRefusedError,
    dead_letter_view,
)
from bus_orchestrator.store.dead_letters import PostgresDeadLetters
from bus_orchestrator.store.memory_dead_letters import InMemoryDeadLetters
from bus_orchestrator.transport.publisher import AmqpPublisher

_UNSTORABLE = re.compile("[\x00\ud800-\udfff]")


def _storable(value: str) -> str:
    if _UNSTORABLE.search(value):
        raise ValueError("must not hold a NUL character or a lone surrogate")
    return value


Reason = Annotated[
    str,
    Field(min_length=1, max_length=2000, pattern=r"^[^\x00]+$", description="why"),
    AfterValidator(_storable),
]


# -- bodies ---------------------------------------------------------------------------------


class DeadLetterView(BaseModel):
    """An archived dead letter: what it was, why it is dead, and its fate."""

    id: str
    message_id: str | None
    message_type: str | None
    source: str | None
    correlation_id: str | None
    reason: str
    """``x-dead-reason`` (the engine's), ``rabbitmq:<reason>`` when RabbitMQ dead-lettered
    it itself, or ``unknown``."""
    detail: str
    dead_lettered_by: str | None
    original_exchange: str | None
    original_routing_key: str | None
    saga_id: str | None
    content_type: str | None
    body_bytes: int
    dead_lettered_at: Time
    archived_at: Time
    status: DeadStatus
    replayed_at: Time | None
    replayed_by: str | None
    replay_reason: str | None
    replayed_as: str | None
    """The message id it was replayed with."""
    purged_at: Time | None
    purged_by: str | None
    purge_reason: str | None


class DeadLetterDetail(DeadLetterView):
    """With its AMQP properties and headers (values JSON cannot hold are tagged, e.g.
    ``{"$bytes": base64}``) and its body: ``body`` when it is JSON, else ``body_base64``;
    ``body_encoding`` ``null`` once purged."""

    properties: dict[str, Any]
    headers: dict[str, Any]
    body_encoding: Literal["json", "base64"] | None
    body: Any
    body_base64: str | None


class DeadPage(BaseModel):
    items: list[DeadLetterView]
    next: str | None
    """Pass as ``cursor`` for the next page; ``null`` on the last one."""


class ReplayRequest(BaseModel):
    """Why, and optionally the correction: the CloudEvents ``data`` (the body in binary
    mode, the ``data`` member in structured mode), or the whole body (a JSON value,
    sent as its JSON text). ``new_id``: publish under a new message id (default: only an
    ``expired`` event, whose id the park holds)."""

    model_config = ConfigDict(extra="forbid")

    reason: Reason
    data: Any = None
    body: Any = None
    new_id: bool | None = None


class ReplayResult(BaseModel):
    dead_letter: DeadLetterView
    message_id: str | None
    """The id the replay was published with."""
    exchange: str
    routing_key: str


class ConflictBody(BaseModel):
    """The dead letter's fate does not allow this."""

    error: Literal["conflict"]
    detail: str
    status: DeadStatus


class DeadConflictError(Exception):
    def __init__(self, body: ConflictBody) -> None:
        super().__init__(body.detail)
        self.body = body


NOT_FOUND: Responses = {404: {"model": ErrorBody, "description": "No dead letter has that id"}}
CONFLICT: Responses = {
    409: {"model": ConflictBody, "description": "It is replayed or purged already"}
}


def view(row: StoredDeadLetter) -> DeadLetterView:
    return DeadLetterView.model_validate(dead_letter_view(row))


def detail_view(row: StoredDeadLetter) -> DeadLetterDetail:
    return DeadLetterDetail.model_validate(dead_letter_view(row, whole=True))


def encode_cursor(row: StoredDeadLetter) -> str:
    return encode_keyset(row.dead_lettered_at, row.id)


def decode_cursor(cursor: str) -> DeadAfter:
    return DeadAfter(*decode_keyset(cursor))


# -- the archive in the API process ---------------------------------------------------------


@asynccontextmanager
async def dead_letter_archive(
    api: FastAPI, settings: Settings, app: App, pool: asyncpg.Pool
) -> AsyncIterator[None]:
    """Run the archive of ``bus.dead`` while the API serves, and the routes' service."""
    store = PostgresDeadLetters(pool)
    archive = DeadArchive(settings, store, app, name="api dead-letter archive")
    api.state.dead_archive = archive
    api.state.dead_letters = DeadLetters(
        store, archive.publisher, app.registry, settings.max_message_bytes
    )
    await archive.start()
    try:
        yield
    finally:
        await archive.stop()


# -- routes -----------------------------------------------------------------------------------


def add_dead_routes(api: FastAPI, settings: Settings, app: App) -> None:
    """The dead-letter routes, on ``api``. Its lifespan runs ``dead_letter_archive`` on the
    Postgres pool it opens; until then (and for an API given an in-memory saga store, in
    tests), the archive is the in-memory twin, without a broker to replay to."""

    async def no_broker() -> AmqpPublisher:
        raise BrokerUnavailableError("this API has no RabbitMQ connection to replay with")

    api.state.dead_letters = DeadLetters(
        InMemoryDeadLetters(), no_broker, app.registry, settings.max_message_bytes
    )

    @api.exception_handler(DeadConflictError)
    async def conflict(request: Request, exc: DeadConflictError) -> JSONResponse:
        return JSONResponse(exc.body.model_dump(mode="json"), 409)

    def service(request: Request) -> DeadLetters:
        found: DeadLetters = request.app.state.dead_letters
        return found

    def not_found(exc: DeadLetterNotFoundError) -> ApiError:
        return ApiError(404, ErrorBody(error="not_found", detail=str(exc)))

    def refused(exc: DeadLetterStateError) -> DeadConflictError:
        return DeadConflictError(ConflictBody(error="conflict", detail=str(exc), status=exc.status))

    @api.get(
        "/dead",
        dependencies=READER,
        responses=GUARDED,
        tags=["dead letters"],
        summary="Archived dead letters, newest first, a page at a time",
    )
    async def list_dead(
        request: Request,
        status: Annotated[
            DeadStatus | Literal["any"], Query(description="default: dead (not acted on)")
        ] = DeadStatus.DEAD,
        reason: str | None = None,
        message_type: Annotated[str | None, Query(alias="type")] = None,
        saga_id: str | None = None,
        limit: Annotated[int, Query(ge=1, le=500)] = 50,
        cursor: Annotated[str | None, Query(description="the `next` of the previous page")] = None,
    ) -> DeadPage:
        """Dead letters matching every filter given, newest first (by the time they were
        dead-lettered, then id). Read from the archive: nothing is taken off the bus."""
        where = DeadFilter(
            status=None if status == "any" else DeadStatus(status),
            reason=reason,
            message_type=message_type,
            saga_id=saga_id,
        )
        after = None if cursor is None else decode_cursor(cursor)
        found = await service(request).page(where, after, limit + 1)
        page = found[:limit]
        more = len(found) > limit
        return DeadPage(
            items=[view(r) for r in page], next=encode_cursor(page[-1]) if more else None
        )

    @api.get(
        "/dead/{dead_id}",
        dependencies=READER,
        responses={**GUARDED, **NOT_FOUND},
        tags=["dead letters"],
        summary="One dead letter, with its headers and body",
    )
    async def get_dead(request: Request, dead_id: str) -> DeadLetterDetail:
        try:
            return detail_view(await service(request).get(dead_id))
        except DeadLetterNotFoundError as exc:
            raise not_found(exc) from None

    @api.post(
        "/dead/{dead_id}/replay",
        dependencies=OPERATOR,
        responses={**GUARDED, **NOT_FOUND, **CONFLICT},
        tags=["dead letters"],
        summary="Publish a dead letter again, corrected if need be, to where it came from",
    )
    async def replay_dead(request: Request, dead_id: str, replay: ReplayRequest) -> ReplayResult:
        """Publishes it (confirmed) to its original exchange and routing key, and records
        who did it and why. A corrected message of a type the app knows is checked as its
        consumer checks it: 422 with the reason. A dead letter not ``dead`` (replayed or
        purged already): 409."""
        given = replay.model_fields_set
        correction = Correction(
            data=replay.data,
            has_data="data" in given,
            body=_json_bytes(replay.body) if "body" in given else None,
        )
        try:
            done = await service(request).replay(
                dead_id,
                by=caller(request).name,
                reason=replay.reason,
                correction=correction,
                new_id=replay.new_id,
            )
        except DeadLetterNotFoundError as exc:
            raise not_found(exc) from None
        except DeadLetterStateError as exc:
            raise refused(exc) from None
        except ReplayRefusedError as exc:
            raise _invalid(exc.field, exc.detail, getattr(replay, exc.field)) from None
        except BrokerUnavailableError as exc:
            raise ApiError(
                503,
                ErrorBody(error="unavailable", detail=f"RabbitMQ did not take the replay: {exc}"),
                {"Retry-After": "1"},
            ) from None
        return ReplayResult(
            dead_letter=view(done.dead_letter),
            message_id=done.message_id,
            exchange=done.exchange,
            routing_key=done.routing_key,
        )

    @api.delete(
        "/dead/{dead_id}",
        dependencies=OPERATOR,
        responses={**GUARDED, **NOT_FOUND, **CONFLICT},
        tags=["dead letters"],
        summary="Purge a dead letter: its body is dropped, the record of it kept",
    )
    async def purge_dead(
        request: Request,
        dead_id: str,
        reason: Annotated[
            str, Query(min_length=1, max_length=2000, pattern=r"^[^\x00]+$", description="why")
        ],
    ) -> DeadLetterView:
        """Marks it purged with who did it and why, and drops its body (the reason is a
        query parameter: a DELETE's body is dropped by some clients and proxies). Purged
        already: 409."""
        try:
            purged = await service(request).purge(dead_id, by=caller(request).name, reason=reason)
        except DeadLetterNotFoundError as exc:
            raise not_found(exc) from None
        except DeadLetterStateError as exc:
            raise refused(exc) from None
        return view(purged)


def _json_bytes(value: Any) -> bytes:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode(
        "utf-8", "surrogatepass"
    )


def _invalid(field: str, detail: str, value: Any) -> RequestValidationError:
    """A 422 in FastAPI's own shape, naming the field of the request body to fix."""
    return RequestValidationError(
        [{"type": "value_error", "loc": ("body", field), "msg": detail, "input": value}]
    )
