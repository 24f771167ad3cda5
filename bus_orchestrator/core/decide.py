"""``decide(definition, instance, message, now) -> Decision``: the whole of saga semantics.

Pure: the same inputs give the same decision, ids included (they are derived, not random),
so a step retried from the last stored state sends the very same commands.

A saga runs its ``steps`` in order, one stage at a time: a stage is a step (a command, a
wait for an event, or a child saga) or a parallel group of them. The steps in flight are
the records ``RUNNING``; the saga's one timer is the earliest of their deadlines. When a
step fails or the saga is cancelled, the steps still in flight are awaited (a wait ends at
once, a child is asked to cancel), then what was done is compensated, newest first, one
compensation at a time. This module reads each kind of message; ``core.decider`` starts
stages, settles steps, stops and compensates.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from bus_orchestrator.core.decider import Decider, checked, held, in_flight
from bus_orchestrator.core.decision import (
    COMMAND_REFUSED_TYPE,
    LOCKS_GRANTED_TYPE,
    TIMER_MESSAGE_TYPE,
    CommandRefused,
    Decision,
    Inbound,
    LocksGranted,
    Outcome,
    Outgoing,
    TimerFired,
)
from bus_orchestrator.core.definition import (
    Child,
    Compensate,
    SagaDefinition,
    Step,
    Wait,
)
from bus_orchestrator.core.lifecycle import CancelRequested, SagaEnded, StartedBy
from bus_orchestrator.core.messages import Event, Message, Reply
from bus_orchestrator.core.repair import OperatorAction, RepairRefusedError, repair
from bus_orchestrator.core.state import (
    Phase,
    SagaInstance,
    SagaStatus,
    StepStatus,
    command_id_for,
    saga_id_for,
)
from bus_orchestrator.core.stopping import MAX_ERROR_CHARS, at_rest, end_of, error_text, fail

__all__ = [  # the decision's values and the stopping helpers are re-exported here
    "COMMAND_REFUSED_TYPE",
    "LOCKS_GRANTED_TYPE",
    "MAX_ERROR_CHARS",
    "TIMER_MESSAGE_TYPE",
    "CommandRefused",
    "Decision",
    "Inbound",
    "LocksGranted",
    "Outcome",
    "Outgoing",
    "TimerFired",
    "at_rest",
    "decide",
    "describe",
    "end_of",
    "error_text",
    "fail",
]


def _ignored(note: str) -> Decision:
    return Decision(Outcome.IGNORED, note)


def describe(reply: Message) -> str:
    """A one-line reason taken from a failure reply."""
    reason = getattr(reply, "reason", None)
    return f"{reply.message_type}: {reason}" if reason else reply.message_type


DecideMessage = Inbound | TimerFired | CommandRefused | LocksGranted | OperatorAction


def decide(
    definition: SagaDefinition[Any, Any],
    instance: SagaInstance | None,
    message: DecideMessage,
    now: datetime,
) -> Decision:
    """Decide what one message means for one saga instance (``None`` if there is none yet).

    When the definition's own code raises (a step's ``command``, ``on_reply``, ``next``, a
    reaction, ``initial_data``, or its data model refusing the stored data), the saga is
    stopped in ``failed`` with the error, so an operator can see and repair it; the message
    is recorded in its history like any other. A saga that reaches a final status also
    sends its end event (``core.lifecycle``).

    An ``OperatorAction`` is an operator's repair (``core.repair``): one the saga's state
    does not allow raises ``RepairRefusedError``, a malformed one ``RepairInvalidError``.
    """
    if isinstance(message, OperatorAction):
        if instance is None:
            raise RepairRefusedError(f"no saga {message.saga_id}")
        decision = repair(
            definition, instance, message, Decider(definition, message.message_id, now)
        )
    else:
        try:
            decision = _decide(definition, instance, message, now)
        except Exception as exc:
            decision = _code_failed(definition, instance, message, now, exc)
    ended = end_of(instance, decision.instance, message.message_id)
    if ended is None:
        return decision
    return Decision(
        decision.outcome,
        decision.note,
        decision.instance,
        (*decision.send, ended),
        decision.error,
    )


def _decide(
    definition: SagaDefinition[Any, Any],
    instance: SagaInstance | None,
    message: Inbound | TimerFired | CommandRefused | LocksGranted,
    now: datetime,
) -> Decision:
    d = Decider(definition, message.message_id, now)
    if not isinstance(message, Inbound):
        if instance is None:
            return _ignored(f"{message.message_type} for a saga that does not exist")
        if isinstance(message, CommandRefused):
            return _on_refused(d, instance, message)
        if isinstance(message, LocksGranted):
            return _on_locks(d, instance)
        return _on_timer(d, instance, message)

    payload = message.payload
    if isinstance(payload, definition.start_types):
        if instance is not None:
            return _ignored(f"saga already exists and is {instance.status}")
        return _start(d, message)
    if instance is None:
        return _ignored(f"no {definition.name} saga for correlation id {message.correlation_id!r}")
    if instance.status.terminal:
        return _ignored(f"saga is already {instance.status}")
    if isinstance(payload, Reply):
        return _on_reply(d, instance, message, payload)
    return _on_event(d, instance, message)


def _new_saga(
    definition: SagaDefinition[Any, Any], message: Inbound, now: datetime, **state: Any
) -> SagaInstance:
    """The saga a start event creates, before its first step (or failed: ``state``)."""
    correlation_id = definition.correlate(message.payload)
    return SagaInstance(
        saga_id=saga_id_for(definition.name, correlation_id),
        saga_type=definition.name,
        correlation_id=correlation_id,
        status=state.pop("status", SagaStatus.RUNNING),
        version=0,
        definition_version=definition.version,
        data={},
        started_by=StartedBy(message_id=message.message_id, correlation_id=message.correlation_id),
        created_at=now,
        updated_at=now,
        **state,
    )


def _start(d: Decider, message: Inbound) -> Decision:
    definition = d.definition
    instance = _new_saga(definition, message, d.now)
    data = definition.initial_data(message.payload)
    d.notes.append("saga started")
    if definition.locks:
        keys = definition.lock_keys(data)
        waiting = instance.model_copy(
            update={"data": data.model_dump(mode="json"), "locks": keys, "waiting_for_locks": True}
        )
        d.notes.append(f"waits for locks {', '.join(keys)}")
        return d.decision(Outcome.STARTED, d.save(waiting))
    decision = d.begin_stage(instance, data, definition.stages()[0])
    return Decision(Outcome.STARTED, decision.note, decision.instance, decision.send)


def _on_locks(d: Decider, instance: SagaInstance) -> Decision:
    if not instance.waiting_for_locks or instance.status.terminal:
        return _ignored("locks granted to a saga that does not wait for them")
    d.notes.append(f"holds locks {', '.join(instance.locks)}")
    holding = instance.model_copy(update={"waiting_for_locks": False})
    return d.begin_stage(holding, d.data(instance), d.definition.stages()[0])


def _flying_record(instance: SagaInstance, command_id: str | None) -> int | None:
    for index in in_flight(instance):
        if instance.steps[index].command_id == command_id:
            return index
    return None


def _on_reply(d: Decider, instance: SagaInstance, message: Inbound, reply: Reply) -> Decision:
    if instance.phase is Phase.COMPENSATION:
        if instance.current is None or message.causation_id != instance.pending_command_id:
            return _stale(message, instance)
        return _on_compensation_reply(d, instance, reply)
    index = _flying_record(instance, message.causation_id)
    if index is None and instance.status is SagaStatus.SUSPENDED:
        index, instance = _late_answer(d, instance, message.causation_id)
    if index is None:
        return _stale(message, instance)
    record = instance.steps[index]
    step = d.definition.step(record.name)
    kind = type(reply)
    what = f"{reply.message_type} for step {step.name}"
    d.notes.append(what)
    if not isinstance(step, Step):
        return _ignored(f"unexpected {reply.message_type}: step {step.name} sends no command")
    if kind in step.succeeds_on:
        data = step.on_reply(d.data(instance), reply)
        if instance.cancel_reason is not None and len(in_flight(instance)) == 1:
            d.notes.append("cancelled")
        return d.settle(d.succeeded(instance, index, data), reply)
    if step.retry is not None and kind in step.retry.transient:
        return _on_transient(d, instance, index, step, describe(reply))
    if kind in step.fails_on:
        reason = f"step {step.name} failed: {describe(reply)}"
        return d.settle(d.failed(instance, index, describe(reply), reason, StepStatus.FAILED), None)
    return _ignored(f"unexpected {reply.message_type} while step {step.name} is in forward")


def _late_answer(
    d: Decider, instance: SagaInstance, command_id: str | None
) -> tuple[int | None, SagaInstance]:
    """A suspended saga's step that timed out may answer after all: the saga runs on from
    that answer, as if it had come in time."""
    for index in held(instance):
        record = instance.steps[index]
        if record.status is StepStatus.TIMED_OUT and record.command_id == command_id:
            d.notes.append(f"late answer to step {record.name}, which held the saga")
            again = d.with_step(instance, index, status=StepStatus.RUNNING, finished_at=None)
            return index, again.model_copy(update={"status": SagaStatus.RUNNING, "failure": None})
    return None, instance


def _stale(message: Inbound, instance: SagaInstance) -> Decision:
    return _ignored(
        f"stale reply: it answers {message.causation_id!r}, "
        f"the saga awaits {instance.pending_command_id!r}"
    )


def _on_compensation_reply(d: Decider, instance: SagaInstance, reply: Reply) -> Decision:
    assert instance.current is not None  # noqa: S101 - checked by the caller
    record = instance.steps[instance.current]
    step = d.definition.step(record.name)
    assert not isinstance(step, Wait)  # noqa: S101 - a wait has no compensation
    what = f"{reply.message_type} for step {step.name}"
    d.notes.append(what)
    kind = type(reply)
    if kind in step.compensated_on:
        return d.compensated(instance)
    if kind in step.compensation_fails_on:
        return d.compensation_failed(instance, describe(reply))
    return _ignored(
        f"unexpected {reply.message_type} while step {step.name} is in {instance.phase}"
    )


def _on_transient(
    d: Decider, instance: SagaInstance, index: int, step: Step[Any, Any], error: str
) -> Decision:
    """A transient failure of the current attempt: wait to retry, or fail once spent."""
    assert step.retry is not None  # noqa: S101 - callers
    record = instance.steps[index]
    if instance.cancel_reason is not None:
        d.notes.append("cancelled")
        return d.settle(
            d.failed(instance, index, error, instance.cancel_reason, StepStatus.FAILED), None
        )
    if record.tries >= step.retry.attempts:
        d.notes.append("attempts spent")
        reason = f"step {step.name} failed after {record.tries} attempts: {error}"
        return d.settle(d.failed(instance, index, error, reason, StepStatus.FAILED), None)
    attempt = record.tries + 1
    retry_at = d.now + step.retry.delay(instance.saga_id, index, attempt)
    # The step awaits the next attempt's id from now on: a late answer to an earlier
    # attempt is stale, and the timer that sends the retry carries this id.
    command_id = command_id_for(instance.saga_id, index, Phase.FORWARD, attempt)
    waiting = d.with_step(
        instance,
        index,
        tries=attempt,
        command_id=command_id,
        retry_at=retry_at,
        deadline=retry_at,
        error=error,
    )
    d.notes.append(f"attempt {attempt} of {step.retry.attempts} at {retry_at.isoformat()}")
    return d.decision(Outcome.ADVANCED, d.save_awaiting(waiting))


def _on_event(d: Decider, instance: SagaInstance, message: Inbound) -> Decision:
    payload = message.payload
    what = f"event {message.message_type}"
    if isinstance(payload, SagaEnded):
        return _on_child_end(d, instance, payload, what)
    if isinstance(payload, CancelRequested):
        return _cancel(d, instance, payload.reason, what)
    wait = d.definition.wait_for(message.message_type)
    if wait is not None and isinstance(payload, Event):
        return _on_awaited(d, instance, wait, payload, what)
    reaction = d.definition.reaction_for(message.message_type)
    if reaction is None:
        return _ignored(f"{d.definition.name} does not react to {message.message_type}")
    result = reaction.react(d.data(instance), payload)
    if result is None:
        return _ignored(f"{what}: no change")
    if isinstance(result, Compensate):
        return _cancel(d, instance, result.reason, what)
    if not isinstance(result, d.definition.data_model):
        raise TypeError(f"reaction to {message.message_type} returned {type(result).__name__}")
    updated = d.save(instance, data=result.model_dump(mode="json"))
    return Decision(Outcome.ADVANCED, f"{what}: data updated", updated)


def _cancel(d: Decider, instance: SagaInstance, reason: str, what: str) -> Decision:
    if instance.cancel_reason is not None and instance.status is SagaStatus.RUNNING:
        return _ignored(f"{what}: saga is already stopping ({instance.cancel_reason})")
    if instance.status not in (SagaStatus.RUNNING, SagaStatus.SUSPENDED):
        return _ignored(f"{what}: saga is already {instance.status}")
    d.notes.append(what)
    return d.cancel(instance, reason)


def _on_awaited(
    d: Decider, instance: SagaInstance, wait: Wait[Any, Any], event: Event, what: str
) -> Decision:
    index = next((i for i in in_flight(instance) if instance.steps[i].name == wait.name), None)
    if index is not None:
        d.notes.append(f"{what}: step {wait.name} done")
        return d.settle(d.succeeded(instance, index, wait.on_event(d.data(instance), event)), None)
    if any(r.name == wait.name for r in instance.steps) or instance.cancel_reason is not None:
        return _ignored(f"{what}: step {wait.name} no longer waits for it")
    if event.message_type in instance.early_events:
        return _ignored(f"{what}: one is kept already")
    early = {**instance.early_events, event.message_type: event.model_dump(mode="json")}
    kept = d.save(instance, early_events=early)
    return Decision(Outcome.ADVANCED, f"{what}: kept until step {wait.name} begins", kept)


def _on_child_end(d: Decider, instance: SagaInstance, ended: SagaEnded, what: str) -> Decision:
    started = ended.started_by.message_id if ended.started_by is not None else None
    index = _flying_record(instance, started)
    if index is None:
        return _ignored(f"{what}: no step of this saga awaits that child")
    record = instance.steps[index]
    step = d.definition.step(record.name)
    if not isinstance(step, Child) or step.saga != ended.saga_type:
        return _ignored(f"{what}: step {record.name} awaits no {ended.saga_type} saga")
    d.notes.append(f"{what}: child of step {step.name} {ended.status}")
    if ended.status == "completed":
        return d.settle(d.succeeded(instance, index, d.data(instance)), None)
    error = f"child saga {ended.saga_type} {ended.status}: {ended.reason or 'no reason given'}"
    reason = f"step {step.name} failed: {error}"
    return d.settle(d.failed(instance, index, error, reason, StepStatus.FAILED), None)


def _on_timer(d: Decider, instance: SagaInstance, timer: TimerFired) -> Decision:
    if instance.deadline is None or instance.deadline != timer.due:
        return _ignored("stale timer")
    if instance.phase is Phase.COMPENSATION:
        return _on_compensation_timer(d, instance)
    for index in in_flight(instance):
        record = instance.steps[index]
        if record.deadline is not None and record.deadline <= timer.due:
            instance = _step_timed_out(d, instance, index)
    return d.settle(instance, None)


def _step_timed_out(d: Decider, instance: SagaInstance, index: int) -> SagaInstance:
    record = instance.steps[index]
    step = d.definition.step(record.name)
    data = d.data(instance)
    if isinstance(step, Step) and record.retry_at is not None:
        command = checked(step.command(data), step.sends, step.name)
        d.send.append(Outgoing(record.command_id, command, instance.correlation_id, d.cause))
        d.notes.append(f"retry: attempt {record.tries} of step {step.name} sent")
        return d.with_step(
            instance, index, attempts=1, retry_at=None, deadline=d.now + step.timeout
        )
    waited = f"no reply to step {step.name} within {step.timeout.total_seconds():g}s"
    if isinstance(step, Wait):
        waited = f"no {step.event.message_type} within {step.timeout.total_seconds():g}s"
    elif isinstance(step, Child):
        waited = f"the {step.saga} saga did not end within {step.timeout.total_seconds():g}s"
    # Once cancelled, nothing forward goes out again: the timeout ends the wait and
    # the step is compensated as possibly done.
    if (
        isinstance(step, Step)
        and record.attempts < step.max_attempts
        and not instance.cancel_reason
    ):
        command = checked(step.command(data), step.sends, step.name)
        d.send.append(Outgoing(record.command_id, command, instance.correlation_id, d.cause))
        d.notes.append(f"timeout: {waited}; resent")
        return d.with_step(
            instance, index, attempts=record.attempts + 1, deadline=d.now + step.timeout
        )
    d.notes.append(f"timeout: {waited}")
    if isinstance(step, Child) and record.cancel_requested_at is None:
        # The child may still run: it is asked to cancel, and its end settles the step, as
        # when the saga is compensated while a child runs. A child that compensated needs
        # no undoing, one that completed does: undoing it on the timeout alone could undo
        # it twice. Only when it does not end within another timeout has it timed out.
        reason = instance.cancel_reason or f"step {step.name} timed out"
        instance = d.cancel_child(instance, index, step, f"step {step.name} timed out")
        instance = d.with_step(instance, index, deadline=d.now + step.timeout, error=waited)
        return d.stop(instance, reason)
    status = StepStatus.FAILED if isinstance(step, Wait) else StepStatus.TIMED_OUT
    return d.failed(instance, index, waited, f"step {step.name} timed out", status)


def _on_compensation_timer(d: Decider, instance: SagaInstance) -> Decision:
    assert instance.current is not None  # noqa: S101 - a compensation is awaited
    index = instance.current
    record = instance.steps[index]
    step = d.definition.step(record.name)
    assert not isinstance(step, Wait) and step.compensation is not None  # noqa: S101
    waited = f"no reply to step {step.name} within {step.undo_timeout.total_seconds():g}s"
    if record.compensation_attempts < step.compensation_max_attempts:
        built = step.compensation(d.data(instance))
        command = checked(built, step.compensation_sends, step.name)
        assert record.compensation_id is not None  # noqa: S101
        resent = d.save(
            d.with_step(instance, index, compensation_attempts=record.compensation_attempts + 1),
            deadline=d.now + step.undo_timeout,
        )
        out = Outgoing(
            record.compensation_id, command, instance.correlation_id, d.cause, record.command_id
        )
        d.send.append(out)
        d.notes.append(f"timeout: {waited}; compensation resent")
        return d.decision(Outcome.ADVANCED, resent)
    d.notes.append("timeout")
    return d.compensation_failed(instance, waited)


def _on_refused(d: Decider, instance: SagaInstance, refused: CommandRefused) -> Decision:
    if instance.phase is Phase.COMPENSATION:
        if instance.pending_command_id != refused.command_id:
            return _ignored(f"refusal of {refused.command_id!r}, which the saga does not await")
        d.notes.append(f"compensating command refused: {refused.reason}")
        return d.compensation_failed(instance, refused.reason)
    index = _flying_record(instance, refused.command_id)
    if index is None:
        return _ignored(f"refusal of {refused.command_id!r}, which the saga does not await")
    name = instance.steps[index].name
    d.notes.append(f"command of step {name} refused: {refused.reason}")
    reason = f"step {name} failed: {refused.reason}"
    return d.settle(d.failed(instance, index, refused.reason, reason, StepStatus.FAILED), None)


def _code_failed(
    definition: SagaDefinition[Any, Any],
    instance: SagaInstance | None,
    message: Inbound | TimerFired | CommandRefused | LocksGranted,
    now: datetime,
    exc: Exception,
) -> Decision:
    reason = f"saga code raised on {message.message_type}: {error_text(exc)}"
    if instance is None:
        # A start event whose initial data could not be built: the saga exists, failed,
        # so that an operator finds it by its correlation id.
        assert isinstance(message, Inbound)  # noqa: S101 - only a start creates a saga
        instance = _new_saga(definition, message, now, status=SagaStatus.FAILED, failure=reason)
        return Decision(Outcome.FAILED, reason, instance, error=exc)
    return Decision(Outcome.FAILED, reason, fail(instance, reason, now), error=exc)
