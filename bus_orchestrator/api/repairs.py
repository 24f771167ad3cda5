"""The repair routes: ``POST /sagas/{id}/retry|skip|abort|resume`` (operator role).

Each applies an operator's repair (``core.repair``) through a coordinator of the app: the
saga's new state, its history entry (who, from the token; why, the required reason) and
what it sends are committed together, or nothing is. A status that does not allow the
repair is refused with 409 and changes nothing; a malformed one (a reply the step's
contract refuses) with 422. An ``Idempotency-Key`` names the action: the same key again
applies nothing and answers with the saga as it is, ``repeated: true``.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any

from fastapi import FastAPI, Header, Request
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, ConfigDict, Field

from bus_orchestrator.api.errors import GUARDED, NOT_FOUND, ApiError, Responses
from bus_orchestrator.api.guard import OPERATOR, caller
from bus_orchestrator.api.models import AmbiguousBody, ErrorBody, SagaDetail
from bus_orchestrator.api.outlet import Outlet
from bus_orchestrator.app import App
from bus_orchestrator.config import Settings
from bus_orchestrator.core.repair import (
    Repair,
    Repaired,
    RepairInvalidError,
    RepairRefusedError,
    RepairRequest,
    action_id,
)
from bus_orchestrator.core.state import SagaInstance
from bus_orchestrator.errors import (
    ConcurrencyConflictError,
    SagaNotFoundError,
    StoreUnavailableError,
)
from bus_orchestrator.runtime.coordinator import Coordinator
from bus_orchestrator.telemetry.setup import Telemetry

Repairer = Callable[[RepairRequest], Awaitable[Repaired]]
"""Applies a repair (``api.state.repairer``): a coordinator of the app's."""


def coordinator_repairer(
    app: App,
    settings: Settings,
    outlet: Callable[[], Outlet | None],
    telemetry: Telemetry | None = None,
) -> Repairer:
    """Repairs through a coordinator of ``app`` over the ``outlet``'s store, opened on
    first use, whose commits go to the outlet's relay. A ``Coordinator`` holds no saga in
    memory between messages: one serves every request."""
    made: list[Coordinator] = []

    async def repairer(ask: RepairRequest) -> Repaired:
        if not made:
            found = outlet()
            if found is None:
                raise StoreUnavailableError("this API serves no writes: it has no outlet")
            made.append(
                Coordinator(
                    app.sagas,
                    app.registry,
                    await found.store(),
                    found,  # its submit hands what a repair commits to its relay
                    found.topology,
                    lambda: datetime.now(UTC),
                    source=found.source,
                    max_message_bytes=settings.max_message_bytes,
                    park_ttl=timedelta(seconds=settings.park_ttl_seconds),
                    telemetry=telemetry,
                    app=app.name,
                )
            )
        return await made[0].repair(ask)

    return repairer


Reason = Annotated[
    str,
    Field(
        min_length=1,
        max_length=500,
        pattern=r"\S",
        description="Why: recorded in the saga's history with who did it",
    ),
]


class ReasonBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    reason: Reason


class RetryBody(ReasonBody):
    step: str | None = Field(None, description="Only this step, of those the saga waits on")


class SkipBody(ReasonBody):
    step: str | None = Field(None, description="Needed when several steps wait")
    data: dict[str, Any] | None = Field(
        None,
        description="The reply the step should have had (a wait's: the event), validated "
        "against its contract; none for a child saga's step or a compensation",
    )
    reply_type: str | None = Field(
        None, description="The reply's type, when the step is settled by several"
    )


class RepairResult(BaseModel):
    saga: SagaDetail
    """The saga after the repair (as it is, when ``repeated``)."""
    repeated: bool
    """This ``Idempotency-Key`` was applied before: nothing was done now."""
    note: str
    """What the repair did, as the saga's history records it."""


class RefusedBody(ErrorBody):
    """The saga's status does not allow this repair; ``status`` is what it is now."""

    status: str


IdempotencyKey = Annotated[
    str | None,
    Header(
        alias="Idempotency-Key",
        max_length=200,
        description="The same key again applies the repair once (answers repeated: true)",
    ),
]

_SUMMARIES = {
    Repair.RETRY: "Send again what the saga waits for",
    Repair.SKIP: "Mark a stuck step done by hand, with the reply it should have had",
    Repair.ABORT: "Stop the saga and compensate what it did",
    Repair.RESUME: "Compensate a failed saga once the cause is fixed",
}

_DESCRIPTIONS = {
    Repair.RETRY: "A `suspended` saga's step that timed out is resent with its command id; "
    "one its adapter refused, as a new attempt with an id of its own. A `running` saga's "
    "commands in flight, or a `compensating` saga's compensation, are resent now with "
    "their ids, their timers started afresh.",
    Repair.SKIP: "For a `suspended` saga, or a `running` one's step in flight: the step "
    "succeeds with `data` as its reply (validated against the step's contract: 422) and "
    "the saga goes on. For a `compensating` saga, its compensation in flight counts as "
    "done (no data).",
    Repair.ABORT: "For a `running` or `suspended` saga: it stops, awaits its commands in "
    "flight, and compensates what it did, newest first.",
    Repair.RESUME: "For a `failed` saga: the compensation that gave up is sent again (with "
    "a new id) and the rest of the compensation follows; the saga ends `compensated`.",
}


def add_repair_routes(
    api: FastAPI,
    resolve: Callable[[Request, str], Awaitable[SagaInstance]],
    detail: Callable[[Request, SagaInstance], Awaitable[SagaDetail]],
) -> None:
    """The four repair routes, on sagas named as ``GET /sagas/{id}`` names them."""
    responses: Responses = {
        **GUARDED,
        **NOT_FOUND,
        409: {
            "model": RefusedBody | AmbiguousBody,
            "description": "The saga's status does not allow it, or the id is ambiguous",
        },
    }

    async def apply(
        request: Request, saga_id: str, repair: Repair, body: ReasonBody, key: str | None
    ) -> RepairResult:
        instance = await resolve(request, saga_id)
        message_id = action_id(instance.saga_id, repair, key)
        step = getattr(body, "step", None)
        ask = RepairRequest(
            repair,
            instance.saga_id,
            message_id,
            caller(request).name,
            body.reason.strip(),
            step,
            getattr(body, "data", None),
            getattr(body, "reply_type", None),
        )
        repairer: Repairer = request.app.state.repairer
        try:
            repaired = await repairer(ask)
        except SagaNotFoundError as exc:  # gone (purged) since it was found
            raise ApiError(404, ErrorBody(error="not_found", detail=str(exc))) from exc
        except RepairRefusedError as exc:
            body_ = RefusedBody(error="refused", detail=str(exc), status=str(instance.status))
            raise ApiError(409, body_) from exc
        except ConcurrencyConflictError as exc:
            body_ = RefusedBody(
                error="refused",
                detail="the saga kept changing while the repair was applied: try again",
                status=str(instance.status),
            )
            raise ApiError(409, body_) from exc
        except RepairInvalidError as exc:
            raise RequestValidationError(
                [{"type": "value_error", "loc": ("body",), "msg": str(exc), "input": None}]
            ) from exc
        return RepairResult(
            saga=await detail(request, repaired.instance),
            repeated=repaired.repeated,
            note=repaired.note,
        )

    def post(repair: Repair) -> Callable[[Callable[..., Any]], Any]:
        return api.post(
            f"/sagas/{{saga_id}}/{repair}",
            dependencies=OPERATOR,
            responses=responses,
            tags=["repair"],
            summary=_SUMMARIES[repair],
            description=_DESCRIPTIONS[repair],
        )

    @post(Repair.RETRY)
    async def retry(
        request: Request, saga_id: str, body: RetryBody, key: IdempotencyKey = None
    ) -> RepairResult:
        return await apply(request, saga_id, Repair.RETRY, body, key)

    @post(Repair.SKIP)
    async def skip(
        request: Request, saga_id: str, body: SkipBody, key: IdempotencyKey = None
    ) -> RepairResult:
        return await apply(request, saga_id, Repair.SKIP, body, key)

    @post(Repair.ABORT)
    async def abort(
        request: Request, saga_id: str, body: ReasonBody, key: IdempotencyKey = None
    ) -> RepairResult:
        return await apply(request, saga_id, Repair.ABORT, body, key)

    @post(Repair.RESUME)
    async def resume(
        request: Request, saga_id: str, body: ReasonBody, key: IdempotencyKey = None
    ) -> RepairResult:
        return await apply(request, saga_id, Repair.RESUME, body, key)
