"""``decide(definition, instance, message, now) -> Decision``: the whole of saga semantics.

Pure: the same inputs give the same decision, ids included (they are derived, not random),
so a step retried from the last stored state sends the very same commands.

A saga runs its ``steps`` in order, one stage at a time: a stage is a step (a command, a
wait for an event, or a child saga) or a parallel group of them. The steps in flight are
the records ``RUNNING``; the saga's one timer is the earliest of their deadlines. When a
step fails or the saga is cancelled, the steps still in flight are awaited (a wait ends at
once, a child is asked to cancel), then what was done is compensated, newest first, one
compensation at a time.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from pydantic import BaseModel

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
    END,
    Child,
    Compensate,
    Member,
    Parallel,
    SagaDefinition,
    Stage,
    Step,
    Wait,
)
from bus_orchestrator.core.lifecycle import CancelRequested, SagaEnded, StartedBy, cancel_event
from bus_orchestrator.core.messages import Command, Event, Message, Reply
from bus_orchestrator.core.state import (
    ID_NAMESPACE,
    Phase,
    SagaInstance,
    SagaStatus,
    StepRecord,
    StepStatus,
    command_id_for,
    saga_id_for,
)
from bus_orchestrator.core.stopping import MAX_ERROR_CHARS, at_rest, end_of, error_text, fail
from bus_orchestrator.errors import DefinitionError

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

IN_FLIGHT = StepStatus.RUNNING
UNDOABLE = (StepStatus.SUCCEEDED, StepStatus.TIMED_OUT)


def _checked(command: Command, declared: type[Command] | None, step: str) -> Command:
    if declared is not None and not isinstance(command, declared):
        raise DefinitionError(
            f"step {step} declares it sends {declared.message_type}, "
            f"but built {command.message_type}"
        )
    return command


def _ignored(note: str) -> Decision:
    return Decision(Outcome.IGNORED, note)


def describe(reply: Message) -> str:
    """A one-line reason taken from a failure reply."""
    reason = getattr(reply, "reason", None)
    return f"{reply.message_type}: {reason}" if reason else reply.message_type


class _Decider:
    """One decision in the making: the inputs, and what the decision sends so far."""

    def __init__(self, definition: SagaDefinition[Any, Any], cause: str, now: datetime) -> None:
        self.definition = definition
        self.cause = cause
        self.now = now
        self.send: list[Outgoing] = []
        self.notes: list[str] = []
        self._known: tuple[dict[str, Any], BaseModel] | None = None

    def decision(self, outcome: Outcome, instance: SagaInstance) -> Decision:
        return Decision(outcome, "; ".join(self.notes), instance, tuple(self.send))

    def data(self, instance: SagaInstance) -> BaseModel:
        """The saga's typed data; validated once per decision, not once per helper."""
        if self._known is not None and self._known[0] is instance.data:
            return self._known[1]
        data: BaseModel = self.definition.data_model.model_validate(instance.data)
        self._known = (instance.data, data)
        return data

    def dumped(self, data: BaseModel, *, handed_out: bool = False) -> dict[str, Any]:
        """``data`` in JSON form; the data a decision already holds is not dumped again,
        unless it was ``handed_out``: what a handler returns may be the very model it was
        given, changed in place (models are mutable), and is always dumped."""
        if not handed_out and self._known is not None and self._known[1] is data:
            return self._known[0]
        dumped = data.model_dump(mode="json")
        self._known = (dumped, data)
        return dumped

    def with_data(self, instance: SagaInstance, data: BaseModel) -> SagaInstance:
        dumped = self.dumped(data)
        if dumped is instance.data:
            return instance
        return instance.model_copy(update={"data": dumped})

    def save(self, old: SagaInstance, **changes: Any) -> SagaInstance:
        return old.model_copy(
            update={**changes, "version": old.version + 1, "updated_at": self.now}
        )

    def with_step(self, instance: SagaInstance, index: int, **changes: Any) -> SagaInstance:
        """``instance`` with one step record changed (and ``data``, a handler's result,
        when given)."""
        steps = list(instance.steps)
        data = changes.pop("data", None)
        steps[index] = steps[index].model_copy(update=changes)
        update: dict[str, Any] = {"steps": tuple(steps)}
        if data is not None:
            update["data"] = self.dumped(data, handed_out=True)
        return instance.model_copy(update=update)

    def save_awaiting(self, instance: SagaInstance) -> SagaInstance:
        """Save the saga with its awaited step, command id and timer taken from its steps
        in flight."""
        flying = _in_flight(instance)
        if not flying:
            return self.save(instance, current=None, pending_command_id=None, deadline=None)
        first = flying[0]
        deadlines = [r.deadline for r in (instance.steps[i] for i in flying) if r.deadline]
        return self.save(
            instance,
            current=first,
            pending_command_id=instance.steps[first].command_id,
            phase=Phase.FORWARD,
            deadline=min(deadlines) if deadlines else None,
        )

    # -- forward -------------------------------------------------------------------------

    def begin_stage(self, instance: SagaInstance, data: BaseModel, stage: Stage[Any]) -> Decision:
        """Start every step of ``stage``, then move on as far as the saga can go."""
        members = stage.members() if isinstance(stage, Parallel) else [stage]
        group = stage.name if isinstance(stage, Parallel) else None
        instance = self.with_data(instance, data)
        for member in members:
            instance = self.begin_member(instance, member, group)
        return self.settle(instance, None)

    def begin_member(
        self, instance: SagaInstance, member: Member[Any], group: str | None
    ) -> SagaInstance:
        data = self.data(instance)
        index = len(instance.steps)
        command_id = command_id_for(instance.saga_id, index, Phase.FORWARD)
        if isinstance(member, Step):
            command = _checked(member.command(data), member.sends, member.name)
            self.send.append(Outgoing(command_id, command, instance.correlation_id, self.cause))
            kind, timeout = command.message_type, member.timeout
            self.notes.append(f"step {member.name} sent {command.message_type}")
        elif isinstance(member, Child):
            start = member.start(data)
            if not isinstance(start, member.starts):
                raise DefinitionError(
                    f"step {member.name} declares it starts {member.saga} with "
                    f"{member.starts.message_type}, but built {start.message_type}"
                )
            # The start event carries this saga's correlation id: the child's end event
            # names it (``started_by``), and so finds its way back here.
            self.send.append(Outgoing(command_id, start, instance.correlation_id, self.cause))
            kind, timeout = start.message_type, member.timeout
            self.notes.append(f"step {member.name} started a {member.saga} saga")
        else:
            kind, timeout = member.event.message_type, member.timeout
            self.notes.append(f"step {member.name} waits for {kind}")
        record = StepRecord(
            name=member.name,
            status=IN_FLIGHT,
            command_type=kind,
            command_id=command_id,
            attempts=1,
            started_at=self.now,
            group=group,
            deadline=self.now + timeout,
        )
        instance = instance.model_copy(update={"steps": (*instance.steps, record)})
        if isinstance(member, Wait) and kind in instance.early_events:
            early = dict(instance.early_events)
            event = member.event.model_validate(early.pop(kind))
            instance = instance.model_copy(update={"early_events": early})
            self.notes.append(f"{kind} had arrived already")
            instance = self.succeeded(instance, index, member.on_event(data, event))
        return instance

    def succeeded(self, instance: SagaInstance, index: int, data: BaseModel) -> SagaInstance:
        return self.with_step(
            instance,
            index,
            data=data,
            status=StepStatus.SUCCEEDED,
            finished_at=self.now,
            deadline=None,
        )

    def failed(
        self, instance: SagaInstance, index: int, error: str, reason: str, status: StepStatus
    ) -> SagaInstance:
        """A step failed (or timed out): stop the rest, and remember why to compensate."""
        failed = self.with_step(
            instance,
            index,
            status=status,
            finished_at=self.now,
            error=error,
            deadline=None,
            retry_at=None,
        )
        return self.stop(failed, instance.cancel_reason or reason)

    def stop(self, instance: SagaInstance, reason: str) -> SagaInstance:
        """No more forward work: end waits and retries at once, ask children to cancel.

        Commands in flight are awaited (or time out): their answer says whether they need
        undoing, and it keeps their compensation from overtaking them.
        """
        instance = instance.model_copy(update={"cancel_reason": reason})
        for index, record in enumerate(instance.steps):
            if record.status is not IN_FLIGHT:
                continue
            member = self.definition.step(record.name)
            if isinstance(member, Wait) or record.retry_at is not None:
                instance = self.with_step(
                    instance,
                    index,
                    status=StepStatus.FAILED,
                    finished_at=self.now,
                    deadline=None,
                    retry_at=None,
                    error=f"stopped: {reason}"[:MAX_ERROR_CHARS],
                )
            elif isinstance(member, Child) and record.cancel_requested_at is None:
                instance = self.cancel_child(instance, index, member, reason)
        return instance

    def cancel_child(
        self, instance: SagaInstance, index: int, member: Child[Any], reason: str
    ) -> SagaInstance:
        data = self.data(instance)
        model = cancel_event(member.saga)
        cancel = model(correlation_id=member.correlation(data), reason=reason[:MAX_ERROR_CHARS])
        record = instance.steps[index]
        # Not the step's compensation id: a child that completed before the cancel reached
        # it is still undone, by a compensating command that needs an id of its own.
        cancel_id = str(uuid.uuid5(ID_NAMESPACE, f"cancel:{instance.saga_id}:{index}"))
        self.send.append(Outgoing(cancel_id, cancel, instance.correlation_id, self.cause))
        self.notes.append(f"asked the {member.saga} saga of step {record.name} to cancel")
        return self.with_step(instance, index, cancel_requested_at=self.now)

    def settle(self, instance: SagaInstance, reply: Reply | None) -> Decision:
        """After a step settled: wait for the rest, compensate, or take the next stage."""
        if _in_flight(instance):
            return self.decision(Outcome.ADVANCED, self.save_awaiting(instance))
        data = self.data(instance)
        if instance.cancel_reason is not None:
            return self.compensate(instance, data, instance.cancel_reason)
        following = self.next_stage(instance, data, reply)
        if following is None:
            completed = self.finish(instance, SagaStatus.COMPLETED)
            self.notes.append("saga completed")
            return self.decision(Outcome.ADVANCED, completed)
        return self.begin_stage(instance, data, following)

    def next_stage(
        self, instance: SagaInstance, data: BaseModel, reply: Reply | None
    ) -> Stage[Any] | None:
        last = instance.steps[-1]
        stage = self.definition.stage(last.name)
        chosen = None
        if isinstance(stage, Step) and stage.next is not None and reply is not None:
            chosen = stage.next(data, reply)
            if stage.branches and chosen is not None and chosen not in stage.branches:
                raise DefinitionError(
                    f"step {stage.name}: next returned {chosen!r}, "
                    f"not one of its branches {list(stage.branches)}"
                )
        if chosen == END:
            return None
        if chosen is not None:
            return self.definition.stage(chosen)
        following = self.definition.index_of(stage.name) + 1
        steps = self.definition.stages()
        return steps[following] if following < len(steps) else None

    def finish(self, instance: SagaInstance, status: SagaStatus, **changes: Any) -> SagaInstance:
        """The saga at its final status: its data masked at rest, and events it kept for
        waits it never reached dropped (they are kept as they came, secrets and all)."""
        return self.save(
            instance,
            data=at_rest(self.definition, instance.data),
            status=status,
            current=None,
            pending_command_id=None,
            deadline=None,
            to_compensate=(),
            waiting_for_locks=False,
            early_events={},
            **changes,
        )

    # -- compensation --------------------------------------------------------------------

    def compensate(self, instance: SagaInstance, data: BaseModel, reason: str) -> Decision:
        """Undo every step that succeeded or may have (timed out), newest first."""
        instance = self.with_data(instance, data)
        undo = tuple(
            i
            for i in reversed(range(len(instance.steps)))
            if instance.steps[i].status in UNDOABLE
            and getattr(self.definition.step(instance.steps[i].name), "compensation", None)
        )
        if not undo:
            done = self.finish(instance, SagaStatus.COMPENSATED, failure=reason)
            self.notes.append("nothing to compensate")
            return self.decision(Outcome.ADVANCED, done)
        started = instance.model_copy(update={"status": SagaStatus.COMPENSATING, "failure": reason})
        return self.begin_compensation(started, undo[0], undo[1:])

    def begin_compensation(
        self, instance: SagaInstance, index: int, rest: tuple[int, ...]
    ) -> Decision:
        record = instance.steps[index]
        step = self.definition.step(record.name)
        assert not isinstance(step, Wait) and step.compensation is not None  # noqa: S101
        command = _checked(
            step.compensation(self.data(instance)), step.compensation_sends, step.name
        )
        command_id = command_id_for(instance.saga_id, index, Phase.COMPENSATION)
        timeout = step.undo_timeout
        changed = self.with_step(
            instance,
            index,
            status=StepStatus.COMPENSATING,
            compensation_type=command.message_type,
            compensation_id=command_id,
            compensation_attempts=1,
            deadline=None,
        )
        new = self.save(
            changed,
            current=index,
            phase=Phase.COMPENSATION,
            pending_command_id=command_id,
            deadline=self.now + timeout,
            to_compensate=rest,
        )
        out = Outgoing(command_id, command, instance.correlation_id, self.cause, record.command_id)
        self.send.append(out)
        self.notes.append(f"compensating step {step.name} with {command.message_type}")
        return self.decision(Outcome.ADVANCED, new)

    def compensation_failed(self, instance: SagaInstance, error: str) -> Decision:
        assert instance.current is not None  # noqa: S101 - callers hold a current step
        name = instance.steps[instance.current].name
        failed = self.finish(
            self.with_step(
                instance, instance.current, status=StepStatus.COMPENSATION_FAILED, error=error
            ),
            SagaStatus.FAILED,
            failure=f"compensation of step {name} failed: {error}",
        )
        self.notes.append("saga failed, an operator must look")
        return self.decision(Outcome.ADVANCED, failed)


def _in_flight(instance: SagaInstance) -> list[int]:
    if instance.phase is not Phase.FORWARD:
        return []
    return [i for i, r in enumerate(instance.steps) if r.status is IN_FLIGHT]


DecideMessage = Inbound | TimerFired | CommandRefused | LocksGranted


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
    """
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
    message: DecideMessage,
    now: datetime,
) -> Decision:
    d = _Decider(definition, message.message_id, now)
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


def _start(d: _Decider, message: Inbound) -> Decision:
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


def _on_locks(d: _Decider, instance: SagaInstance) -> Decision:
    if not instance.waiting_for_locks or instance.status.terminal:
        return _ignored("locks granted to a saga that does not wait for them")
    d.notes.append(f"holds locks {', '.join(instance.locks)}")
    holding = instance.model_copy(update={"waiting_for_locks": False})
    return d.begin_stage(holding, d.data(instance), d.definition.stages()[0])


def _flying_record(instance: SagaInstance, command_id: str | None) -> int | None:
    for index in _in_flight(instance):
        if instance.steps[index].command_id == command_id:
            return index
    return None


def _on_reply(d: _Decider, instance: SagaInstance, message: Inbound, reply: Reply) -> Decision:
    if instance.phase is Phase.COMPENSATION:
        if instance.current is None or message.causation_id != instance.pending_command_id:
            return _stale(message, instance)
        return _on_compensation_reply(d, instance, reply)
    index = _flying_record(instance, message.causation_id)
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
        if instance.cancel_reason is not None and len(_in_flight(instance)) == 1:
            d.notes.append("cancelled")
        return d.settle(d.succeeded(instance, index, data), reply)
    if step.retry is not None and kind in step.retry.transient:
        return _on_transient(d, instance, index, step, describe(reply))
    if kind in step.fails_on:
        reason = f"step {step.name} failed: {describe(reply)}"
        return d.settle(d.failed(instance, index, describe(reply), reason, StepStatus.FAILED), None)
    return _ignored(f"unexpected {reply.message_type} while step {step.name} is in forward")


def _stale(message: Inbound, instance: SagaInstance) -> Decision:
    return _ignored(
        f"stale reply: it answers {message.causation_id!r}, "
        f"the saga awaits {instance.pending_command_id!r}"
    )


def _on_compensation_reply(d: _Decider, instance: SagaInstance, reply: Reply) -> Decision:
    assert instance.current is not None  # noqa: S101 - checked by the caller
    record = instance.steps[instance.current]
    step = d.definition.step(record.name)
    assert not isinstance(step, Wait)  # noqa: S101 - a wait has no compensation
    what = f"{reply.message_type} for step {step.name}"
    d.notes.append(what)
    kind = type(reply)
    if kind in step.compensated_on:
        undone = d.with_step(
            instance, instance.current, status=StepStatus.COMPENSATED, compensated_at=d.now
        )
        if undone.to_compensate:
            rest = undone.to_compensate
            return d.begin_compensation(undone, rest[0], rest[1:])
        d.notes.append("saga compensated")
        return d.decision(Outcome.ADVANCED, d.finish(undone, SagaStatus.COMPENSATED))
    if kind in step.compensation_fails_on:
        return d.compensation_failed(instance, describe(reply))
    return _ignored(
        f"unexpected {reply.message_type} while step {step.name} is in {instance.phase}"
    )


def _on_transient(
    d: _Decider, instance: SagaInstance, index: int, step: Step[Any, Any], error: str
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


def _on_event(d: _Decider, instance: SagaInstance, message: Inbound) -> Decision:
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


def _cancel(d: _Decider, instance: SagaInstance, reason: str, what: str) -> Decision:
    if instance.cancel_reason is not None and instance.status is SagaStatus.RUNNING:
        return _ignored(f"{what}: saga is already stopping ({instance.cancel_reason})")
    if instance.status is not SagaStatus.RUNNING:
        return _ignored(f"{what}: saga is already {instance.status}")
    d.notes.append(what)
    stopped = d.stop(instance, reason)
    flying = _in_flight(stopped)
    if flying:
        names = ", ".join(stopped.steps[i].name for i in flying)
        d.notes.append(f"compensation starts once {names} answer or time out")
    return d.settle(stopped, None)


def _on_awaited(
    d: _Decider, instance: SagaInstance, wait: Wait[Any, Any], event: Event, what: str
) -> Decision:
    index = next((i for i in _in_flight(instance) if instance.steps[i].name == wait.name), None)
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


def _on_child_end(d: _Decider, instance: SagaInstance, ended: SagaEnded, what: str) -> Decision:
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


def _on_timer(d: _Decider, instance: SagaInstance, timer: TimerFired) -> Decision:
    if instance.deadline is None or instance.deadline != timer.due:
        return _ignored("stale timer")
    if instance.phase is Phase.COMPENSATION:
        return _on_compensation_timer(d, instance)
    for index in _in_flight(instance):
        record = instance.steps[index]
        if record.deadline is not None and record.deadline <= timer.due:
            instance = _step_timed_out(d, instance, index)
    return d.settle(instance, None)


def _step_timed_out(d: _Decider, instance: SagaInstance, index: int) -> SagaInstance:
    record = instance.steps[index]
    step = d.definition.step(record.name)
    data = d.data(instance)
    if isinstance(step, Step) and record.retry_at is not None:
        command = _checked(step.command(data), step.sends, step.name)
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
        command = _checked(step.command(data), step.sends, step.name)
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


def _on_compensation_timer(d: _Decider, instance: SagaInstance) -> Decision:
    assert instance.current is not None  # noqa: S101 - a compensation is awaited
    index = instance.current
    record = instance.steps[index]
    step = d.definition.step(record.name)
    assert not isinstance(step, Wait) and step.compensation is not None  # noqa: S101
    waited = f"no reply to step {step.name} within {step.undo_timeout.total_seconds():g}s"
    if record.compensation_attempts < step.compensation_max_attempts:
        built = step.compensation(d.data(instance))
        command = _checked(built, step.compensation_sends, step.name)
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


def _on_refused(d: _Decider, instance: SagaInstance, refused: CommandRefused) -> Decision:
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
    message: DecideMessage,
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
    return Decision(Outcome.FAILED, reason, fail(instance, reason, now, definition), error=exc)
