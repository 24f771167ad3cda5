"""The read model of a saga, as the CLI (and later the HTTP API) shows it."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Collection, Sequence
from datetime import UTC, datetime
from typing import Any

from pydantic import BaseModel

from bus_orchestrator.app import App
from bus_orchestrator.core.definition import Child, SagaDefinition, Wait
from bus_orchestrator.core.messages import REDACT_SECRETS
from bus_orchestrator.core.repair import allowed
from bus_orchestrator.core.schedule import Schedule
from bus_orchestrator.core.state import Phase, SagaInstance, SagaStatus, StepRecord, StepStatus
from bus_orchestrator.errors import DefinitionError
from bus_orchestrator.ports import HistoryEntry, SagaLocks, ScheduleState
from bus_orchestrator.telemetry.tracing import trace_id_of


def saga_view(
    instance: SagaInstance,
    jaeger_ui_url: str | None = None,
    data_model: type[BaseModel] | None = None,
    locks: SagaLocks | None = None,
    definition: SagaDefinition[Any, Any] | None = None,
) -> dict[str, Any]:
    """One saga as a JSON-ready object; with a Jaeger UI URL, a link to its trace; with
    its ``locks`` (``SagaStore.saga_locks``), the entity locks it holds and waits for.

    The saga's data is shown through its ``data_model``, with ``Secret`` fields masked;
    without the model it is left out, since nothing says which of its fields are secret.
    With its ``definition`` (the version it runs on), ``awaiting`` names each step's kind.
    ``repairs`` are the repairs its state allows now.
    """
    trace_id = trace_id_of(instance.trace_context)
    data = (
        data_model.model_validate(instance.data).model_dump(mode="json", context=REDACT_SECRETS)
        if data_model is not None
        else None
    )
    return {
        "saga_id": instance.saga_id,
        "saga_type": instance.saga_type,
        "correlation_id": instance.correlation_id,
        "status": str(instance.status),
        "version": instance.version,
        "definition_version": instance.definition_version,
        "created_at": instance.created_at.isoformat(),
        "updated_at": instance.updated_at.isoformat(),
        "failure": instance.failure,
        "awaiting": awaiting_view(instance, definition),
        "repairs": [str(r) for r in allowed(instance)],
        "in_flight": [s.name for s in instance.steps if s.status is StepStatus.RUNNING],
        "deadline": instance.deadline.isoformat() if instance.deadline else None,
        "early_events": sorted(instance.early_events),
        "started_by": instance.started_by.model_dump() if instance.started_by else None,
        "trace_id": trace_id,
        "jaeger_url": f"{jaeger_ui_url.rstrip('/')}/trace/{trace_id}"
        if jaeger_ui_url and trace_id
        else None,
        "steps": [
            {
                "name": step.name,
                "group": step.group,
                "status": str(step.status),
                "command_type": step.command_type,
                "command_id": step.command_id,
                "attempts": step.attempts,
                "tries": step.tries,
                "retry_at": step.retry_at.isoformat() if step.retry_at else None,
                "deadline": step.deadline.isoformat() if step.deadline else None,
                "cancel_requested_at": step.cancel_requested_at.isoformat()
                if step.cancel_requested_at
                else None,
                "started_at": step.started_at.isoformat(),
                "finished_at": step.finished_at.isoformat() if step.finished_at else None,
                "error": step.error,
                "compensation_type": step.compensation_type,
                "compensation_attempts": step.compensation_attempts,
                "compensated_at": step.compensated_at.isoformat() if step.compensated_at else None,
            }
            for step in instance.steps
        ],
        "data": data,
        **({"locks": locks_view(instance, locks)} if locks is not None else {}),
    }


def app_saga_view(
    app: App,
    instance: SagaInstance,
    jaeger_ui_url: str | None = None,
    locks: SagaLocks | None = None,
) -> dict[str, Any]:
    """``saga_view`` of a saga of ``app``, through the definition it runs on."""
    definition = app.definition_for(instance.saga_type, instance.definition_version)
    model = definition.data_model if definition is not None else None
    return saga_view(instance, jaeger_ui_url, model, locks, definition)


def _when(moment: datetime | None) -> str | None:
    return moment.isoformat() if moment else None


def _awaited(record: StepRecord, kind: str, until: datetime | None) -> dict[str, Any]:
    compensation = kind == "compensation"
    return {
        "step": record.name,
        "kind": kind,
        "message_type": record.compensation_type if compensation else record.command_type,
        "message_id": record.compensation_id if compensation else record.command_id,
        "until": _when(until),
    }


def awaiting_view(
    instance: SagaInstance, definition: SagaDefinition[Any, Any] | None = None
) -> dict[str, Any] | None:
    """What the saga waits for, and until when; ``None`` once it has ended.

    ``kind`` is ``steps`` (the answers of its steps in flight: each item a ``reply`` to a
    command, an ``event`` for a wait, a ``child`` saga's end, a ``retry`` timed for after
    a transient failure, or ``step`` when the saga's definition is not at hand),
    ``compensation`` (the answer to the compensating command in flight), ``locks`` (its
    entity locks, before its first step) or ``operator`` (a suspended saga: the steps that
    hold it, until someone repairs it). A saga between stages waits for ``nothing``.
    """
    if instance.status.terminal:
        return None
    if instance.waiting_for_locks:
        return {"kind": "locks", "until": None, "items": []}
    if instance.status is SagaStatus.SUSPENDED:
        held = [r for r in instance.steps if r.status in (StepStatus.FAILED, StepStatus.TIMED_OUT)]
        return {
            "kind": "operator",
            "until": None,
            "items": [_awaited(r, "operator", None) for r in held],
        }
    if instance.phase is Phase.COMPENSATION and instance.current is not None:
        record = instance.steps[instance.current]
        return {
            "kind": "compensation",
            "until": _when(instance.deadline),
            "items": [_awaited(record, "compensation", instance.deadline)],
        }
    flying = [r for r in instance.steps if r.status is StepStatus.RUNNING]
    if not flying:
        return {"kind": "nothing", "until": None, "items": []}
    return {
        "kind": "steps",
        "until": _when(instance.deadline),
        "items": [
            _awaited(
                r, "retry" if r.retry_at else _kind_of(r, definition), r.retry_at or r.deadline
            )
            for r in flying
        ],
    }


def _kind_of(record: StepRecord, definition: SagaDefinition[Any, Any] | None) -> str:
    """``reply`` (a command's), ``event`` (a wait's) or ``child`` (a child saga's end), by
    the step's construct in the saga's definition; ``step`` when that is not known."""
    try:
        member = definition.step(record.name) if definition is not None else None
    except DefinitionError:
        member = None
    if isinstance(member, Wait):
        return "event"
    if isinstance(member, Child):
        return "child"
    return "step" if member is None else "reply"


def locks_view(instance: SagaInstance, locks: SagaLocks) -> dict[str, Any]:
    """The entity locks a saga holds and those it waits for, with its place in line."""
    return {
        "keys": list(instance.locks),
        "waiting": instance.waiting_for_locks and not instance.status.terminal,
        "held": [{"key": h.key, "since": h.since.isoformat()} for h in locks.held],
        "awaited": [
            {
                "key": a.key,
                "place": a.place,
                "holder": a.holder,
                "since": a.since.isoformat(),
            }
            for a in locks.awaited
        ],
    }


def history_view(entry: HistoryEntry) -> dict[str, Any]:
    return {
        "at": entry.at.isoformat(),
        "direction": str(entry.direction),
        "message_id": entry.message_id,
        "message_type": entry.message_type,
        "correlation_id": entry.correlation_id,
        "causation_id": entry.causation_id,
        "outcome": entry.outcome,
        "note": entry.note,
        "trace_id": entry.trace_id,
        "payload": dict(entry.payload),
    }


async def find_saga(
    find: Callable[[str], Awaitable[list[SagaInstance]]],
    ref: str,
    saga_types: Collection[str] | None = None,
) -> list[SagaInstance]:
    """The sagas ``ref`` names, for the CLI and the API alike: the one whose saga id it is;
    else those whose correlation id it is (several: the caller refuses and lists them);
    else, for ``TYPE/CORRELATION_ID``, that saga. Only sagas of ``saga_types`` when given.
    ``find`` is the store's ``find``."""

    def kept(sagas: list[SagaInstance]) -> list[SagaInstance]:
        return [s for s in sagas if saga_types is None or s.saga_type in saga_types]

    found = kept(await find(ref))
    exact = [s for s in found if s.saga_id == ref]
    if exact or found or "/" not in ref:
        return exact or found
    saga_type, correlation_id = ref.split("/", 1)
    return [s for s in kept(await find(correlation_id)) if s.saga_type == saga_type]


def schedule_views(
    schedules: Sequence[Schedule[Any]], states: Sequence[ScheduleState], now: datetime
) -> list[dict[str, Any]]:
    """The app's schedules as JSON-ready objects (``GET /schedules``, ``schedules list``):
    each one's expression, time zone and event type, its next slot after ``now`` and the
    last slot fired (from the store's ``states``), times in UTC."""
    known = {state.schedule: state for state in states}
    views = []
    for schedule in schedules:
        try:
            upcoming: str | None = schedule.next_after(now).isoformat()
        except StopIteration:
            upcoming = None
        state = known.get(schedule.name)
        last = None
        if state is not None and state.last_slot is not None:
            last = {
                "slot": state.last_slot.astimezone(UTC).isoformat(),
                "fired_at": None
                if state.last_fired_at is None
                else state.last_fired_at.astimezone(UTC).isoformat(),
                "event_id": state.last_event_id,
            }
        views.append(
            {
                "name": schedule.name,
                "cron": schedule.cron,
                "timezone": schedule.timezone,
                "catch_up": schedule.catch_up,
                "publishes": schedule.publishes.message_type,
                "next_firing": upcoming,
                "last_firing": last,
            }
        )
    return views
