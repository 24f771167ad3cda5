"""An operator's repair of a saga: ``retry``, ``skip``, ``abort`` and ``resume``.

Each is a message like any other (``OperatorAction``): ``decide`` applies it to the saga's
stored state, and the runtime commits it with the saga's version and its history entry (who,
why), so it is atomic, recorded, and, by its message id, applied once. What a saga's status
does not allow is refused (``RepairRefusedError``); what is malformed, such as a reply the step's
contract refuses, is invalid (``RepairInvalidError``). Neither changes anything.

- ``retry``: send again what the saga waits for. A step that holds a ``suspended`` saga
  goes out again: the one that timed out with its command id (the adapter may have done it
  and must answer the same), the one its adapter refused as a new attempt with an id of its
  own (an adapter answers an id it has seen with its stored reply). A ``running`` saga's
  commands in flight, or a ``compensating`` saga's compensation, are resent now with their
  ids, their timers started afresh.
- ``skip``: mark a step done by hand with the reply (or event) it should have had, validated
  against the step's contract; the saga goes on as if it had arrived. A ``compensating``
  saga's compensation in flight is marked done likewise (no data).
- ``abort``: stop a ``running`` or ``suspended`` saga and compensate what it did.
- ``resume``: a ``failed`` saga (a compensation gave up, or its code raised) compensates what
  is still done, the compensation that gave up first, with its attempts afresh.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from pydantic import ValidationError

from bus_orchestrator.core.decider import UNDOABLE, Decider, checked, held, in_flight
from bus_orchestrator.core.decision import Decision, Outcome, Outgoing
from bus_orchestrator.core.definition import Child, Member, SagaDefinition, Step, Wait
from bus_orchestrator.core.messages import Message, Reply, validation_errors
from bus_orchestrator.core.state import (
    ID_NAMESPACE,
    Phase,
    SagaInstance,
    SagaStatus,
    StepStatus,
    command_id_for,
)
from bus_orchestrator.core.stopping import MAX_ERROR_CHARS
from bus_orchestrator.errors import BusOrchestratorError

OPERATOR_MESSAGE_PREFIX = "bus.operator."


class Repair(StrEnum):
    RETRY = "retry"
    SKIP = "skip"
    ABORT = "abort"
    RESUME = "resume"


class RepairRefusedError(BusOrchestratorError):
    """The saga's state does not allow this repair (HTTP 409): nothing changed."""


class RepairInvalidError(BusOrchestratorError):
    """The repair is malformed, e.g. a reply the step's contract refuses (HTTP 422)."""


@dataclass(frozen=True, slots=True)
class OperatorAction:
    """A person's repair of one saga: which, by whom, why, and for ``skip`` the step's
    reply (validated by ``skip_reply``)."""

    repair: Repair
    saga_id: str
    message_id: str
    """Names the action in the inbox: a repeat with the same id is applied once."""
    by: str
    reason: str
    step: str | None = None
    """The step meant, when the saga has several a repair could concern."""
    reply: Message | None = None

    @property
    def message_type(self) -> str:
        return f"{OPERATOR_MESSAGE_PREFIX}{self.repair}"


@dataclass(frozen=True, slots=True)
class RepairRequest:
    """What an operator asks (over HTTP or the CLI), before the saga is looked at: for
    ``skip``, the reply's ``data`` as given, validated against the step once it is known."""

    repair: Repair
    saga_id: str
    message_id: str
    by: str
    reason: str
    step: str | None = None
    data: Mapping[str, Any] | None = None
    reply_type: str | None = None


@dataclass(frozen=True, slots=True)
class Repaired:
    """The saga after a repair; ``repeated`` when that action (by its id) was applied
    before, and nothing was done now."""

    instance: SagaInstance
    repeated: bool
    note: str


def action_id(saga_id: str, repair: Repair, key: str | None) -> str:
    """The id of an operator's action: derived from an idempotency key (the same key
    again is the same action, applied once), else new."""
    if key is None:
        return str(uuid.uuid4())
    return str(uuid.uuid5(ID_NAMESPACE, f"repair:{saga_id}:{repair}:{key}"))


def allowed(instance: SagaInstance) -> list[Repair]:
    """The repairs the saga's state allows now (what a dashboard offers)."""
    status = instance.status
    if status is SagaStatus.SUSPENDED:
        return [Repair.RETRY, Repair.SKIP, Repair.ABORT]
    if status is SagaStatus.FAILED:
        return [Repair.RESUME]
    if status is SagaStatus.COMPENSATING:
        return [Repair.RETRY, Repair.SKIP] if instance.current is not None else []
    if status is not SagaStatus.RUNNING or instance.cancel_reason is not None:
        return []
    if in_flight(instance):
        return [Repair.RETRY, Repair.SKIP, Repair.ABORT]
    return [Repair.ABORT]  # waiting for its locks, or between stages


def repair(
    definition: SagaDefinition[Any, Any], instance: SagaInstance, action: OperatorAction, d: Decider
) -> Decision:
    """The decision for ``action`` on ``instance``; ``RepairRefusedError`` or ``RepairInvalidError``
    when it cannot be applied. Code of the definition that raises on the operator's input
    (``on_reply`` of a skipped step) makes the action invalid, not the saga failed."""
    if action.repair not in allowed(instance):
        raise RepairRefusedError(_refusal(instance, action.repair))
    d.notes.append(f"{action.repair} by {action.by}: {action.reason}")
    try:
        if action.repair is Repair.RETRY:
            return _retry(d, instance, action.step)
        if action.repair is Repair.SKIP:
            return _skip(d, instance, action)
        if action.repair is Repair.ABORT:
            return _abort(d, instance, action)
        return _resume(d, instance)
    except (RepairRefusedError, RepairInvalidError):
        raise
    except ValidationError as exc:
        raise RepairInvalidError(f"{action.repair}: {validation_errors(exc)}") from exc
    except Exception as exc:
        raise RepairInvalidError(
            f"{action.repair}: the saga's code raised {type(exc).__name__}: {exc}"[:MAX_ERROR_CHARS]
        ) from exc


def _refusal(instance: SagaInstance, wanted: Repair) -> str:
    status = instance.status
    hint = {
        SagaStatus.FAILED: "resume compensates what it did",
        SagaStatus.SUSPENDED: "retry, skip or abort",
        SagaStatus.COMPENSATING: "retry or skip its compensation",
    }.get(status)
    if status is SagaStatus.RUNNING and instance.cancel_reason is not None:
        return (
            f"the saga is stopping ({instance.cancel_reason}): it compensates once its "
            "steps in flight answer or time out"
        )
    if status is SagaStatus.RUNNING and instance.waiting_for_locks:
        return "the saga waits for its entity locks and has taken no step: only abort"
    if status is SagaStatus.RUNNING:
        return f"the saga is running with no command in flight to {wanted}; abort stops it"
    if hint is None:
        return f"the saga is {status}: nothing to repair"
    return f"the saga is {status}, which does not allow {wanted}: {hint}"


# -- targets -------------------------------------------------------------------------------


def _targets(instance: SagaInstance, step: str | None) -> list[int]:
    """The steps a forward repair concerns: those holding the saga, else those in flight;
    only ``step`` when named."""
    found = held(instance) if instance.status is SagaStatus.SUSPENDED else in_flight(instance)
    if step is None:
        return found
    named = [i for i in found if instance.steps[i].name == step]
    if not named:
        have = ", ".join(instance.steps[i].name for i in found) or "none"
        raise RepairRefusedError(f"step {step!r} is not what the saga waits on (it is: {have})")
    return named


def skip_target(
    definition: SagaDefinition[Any, Any], instance: SagaInstance, step: str | None
) -> Member[Any] | None:
    """The step ``skip`` would mark done (``None`` for a compensation); ``RepairRefusedError``
    when the saga allows no skip, or has several steps to choose from and none is named."""
    if Repair.SKIP not in allowed(instance):
        raise RepairRefusedError(_refusal(instance, Repair.SKIP))
    if instance.status is SagaStatus.COMPENSATING:
        return None
    found = _targets(instance, step)
    if len(found) > 1:
        names = ", ".join(instance.steps[i].name for i in found)
        raise RepairInvalidError(f"several steps wait ({names}): name the one to skip")
    return definition.step(instance.steps[found[0]].name)


def skip_models(member: Member[Any] | None) -> tuple[type[Message], ...]:
    """What a skipped step's reply may be: a step's success replies, a wait's event; none
    for a child saga or a compensation."""
    if isinstance(member, Step):
        return tuple(member.succeeds_on)
    if isinstance(member, Wait):
        return (member.event,)
    return ()


def skip_reply(
    definition: SagaDefinition[Any, Any],
    instance: SagaInstance,
    step: str | None,
    data: Mapping[str, Any] | None,
    reply_type: str | None,
) -> Message | None:
    """The operator's ``data`` as the reply the skipped step should have had, validated
    against its contract; ``RepairInvalidError`` with the reason when it does not fit."""
    models = skip_models(skip_target(definition, instance, step))
    if not models:
        if data:
            raise RepairInvalidError("this step takes no reply data: leave data out")
        return None
    types = {m.message_type: m for m in models}
    if reply_type is None and len(models) > 1:
        raise RepairInvalidError(f"name the reply's type: one of {sorted(types)}")
    model = models[0] if reply_type is None else types.get(reply_type)
    if model is None:
        raise RepairInvalidError(
            f"reply type {reply_type!r} does not settle this step: {sorted(types)}"
        )
    try:
        return model.model_validate(dict(data or {}))
    except ValidationError as exc:
        raise RepairInvalidError(f"{model.message_type}: {validation_errors(exc)}") from exc


# -- the repairs ---------------------------------------------------------------------------


def _running(instance: SagaInstance) -> SagaInstance:
    if instance.status is SagaStatus.SUSPENDED:
        return instance.model_copy(update={"status": SagaStatus.RUNNING, "failure": None})
    return instance


def _retry(d: Decider, instance: SagaInstance, step: str | None) -> Decision:
    if instance.status is SagaStatus.COMPENSATING:
        return _resend_compensation(d, instance)
    targets = _targets(instance, step)
    commands = [i for i in targets if isinstance(d.definition.step(instance.steps[i].name), Step)]
    if not commands:
        names = ", ".join(instance.steps[i].name for i in targets)
        raise RepairRefusedError(f"nothing to resend: {names} sends no command (skip it instead)")
    instance = _running(instance)
    data = d.data(instance)
    for index in commands:
        record = instance.steps[index]
        member = d.definition.step(record.name)
        assert isinstance(member, Step)  # noqa: S101 - filtered above
        changes: dict[str, Any] = {}
        command_id = record.command_id
        if record.status is StepStatus.FAILED:
            # refused by its adapter: a new attempt, which it has not answered yet
            changes["tries"] = record.tries + 1
            command_id = command_id_for(instance.saga_id, index, Phase.FORWARD, record.tries + 1)
        command = checked(member.command(data), member.sends, member.name)
        d.send.append(Outgoing(command_id, command, instance.correlation_id, d.cause))
        d.notes.append(f"step {member.name} resent")
        instance = d.with_step(
            instance,
            index,
            **changes,
            status=StepStatus.RUNNING,
            command_id=command_id,
            attempts=1,
            finished_at=None,
            error=None,
            retry_at=None,
            deadline=d.now + member.timeout,
        )
    return d.decision(Outcome.ADVANCED, d.save_awaiting(instance))


def _resend_compensation(d: Decider, instance: SagaInstance) -> Decision:
    assert instance.current is not None  # noqa: S101 - allowed() checked it
    index = instance.current
    record = instance.steps[index]
    member = d.definition.step(record.name)
    assert not isinstance(member, Wait) and member.compensation is not None  # noqa: S101
    assert record.compensation_id is not None  # noqa: S101
    command = checked(member.compensation(d.data(instance)), member.compensation_sends, record.name)
    d.send.append(
        Outgoing(
            record.compensation_id, command, instance.correlation_id, d.cause, record.command_id
        )
    )
    d.notes.append(f"compensation of step {record.name} resent")
    again = d.with_step(instance, index, compensation_attempts=1)
    return d.decision(Outcome.ADVANCED, d.save(again, deadline=d.now + member.undo_timeout))


def _skip(d: Decider, instance: SagaInstance, action: OperatorAction) -> Decision:
    if instance.status is SagaStatus.COMPENSATING:
        assert instance.current is not None  # noqa: S101 - allowed() checked it
        name = instance.steps[instance.current].name
        d.notes.append(f"compensation of step {name} marked done by hand")
        return d.compensated(instance)
    member = skip_target(d.definition, instance, action.step)
    assert member is not None  # noqa: S101 - forward
    index = _targets(instance, member.name)[0]
    models = skip_models(member)
    reply = action.reply
    if models and not isinstance(reply, models):
        raise RepairInvalidError(
            f"step {member.name} is settled by {sorted(m.message_type for m in models)}"
        )
    instance = _running(instance)
    data = d.data(instance)
    d.notes.append(f"step {member.name} marked done by hand")
    if isinstance(member, Child):
        d.notes.append(f"its {member.saga} saga is left as it is")
    if isinstance(member, Step):
        data = member.on_reply(data, reply)
    elif isinstance(member, Wait):
        data = member.on_event(data, reply)
    done = d.with_step(
        instance,
        index,
        data=data,
        status=StepStatus.SUCCEEDED,
        finished_at=d.now,
        deadline=None,
        retry_at=None,
        error=None,
    )
    return d.settle(done, reply if isinstance(reply, Reply) else None)


def _abort(d: Decider, instance: SagaInstance, action: OperatorAction) -> Decision:
    return d.cancel(instance, f"aborted by {action.by}: {action.reason}"[:MAX_ERROR_CHARS])


RESUMABLE = (*UNDOABLE, StepStatus.RUNNING, StepStatus.COMPENSATING, StepStatus.COMPENSATION_FAILED)
"""A failed saga's steps that may still need undoing: done, possibly done (timed out, or in
flight when its code raised), or whose compensation did not finish."""


def _resume(d: Decider, instance: SagaInstance) -> Decision:
    undo = tuple(
        i
        for i in reversed(range(len(instance.steps)))
        if instance.steps[i].status in RESUMABLE
        and getattr(d.definition.step(instance.steps[i].name), "compensation", None)
    )
    reason = instance.failure or "resumed"
    restarted = instance.model_copy(
        update={
            "status": SagaStatus.COMPENSATING,
            "phase": Phase.COMPENSATION,
            "resumed": instance.resumed + 1,
        }
    )
    if not undo:
        d.notes.append("nothing to compensate")
        return d.decision(Outcome.ADVANCED, d.finish(restarted, SagaStatus.COMPENSATED))
    d.data(instance)  # the data model must still read the data: else invalid, not failed
    d.notes.append(f"compensation resumes ({reason})"[:MAX_ERROR_CHARS])
    first = instance.steps[undo[0]]
    command_id = None
    if first.compensation_id is not None:
        # Tried before: its adapter would answer that id with its stored failure.
        command_id = str(uuid.uuid5(ID_NAMESPACE, f"resume:{first.compensation_id}:{d.cause}"))
    return d.begin_compensation(restarted, undo[0], undo[1:], command_id)
