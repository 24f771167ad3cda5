"""One decision in the making: starting stages, settling steps, stopping and compensating.

``decide`` (``core.decide``) reads the message and calls these; a ``Decider`` gathers what
the decision sends and says, and validates the saga's data once per decision.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from pydantic import BaseModel

from bus_orchestrator.core.decision import Decision, Outcome, Outgoing
from bus_orchestrator.core.definition import (
    END,
    Child,
    Member,
    OnFailure,
    Parallel,
    SagaDefinition,
    Stage,
    Step,
    Wait,
)
from bus_orchestrator.core.lifecycle import cancel_event
from bus_orchestrator.core.messages import Command, Reply
from bus_orchestrator.core.state import (
    ID_NAMESPACE,
    Phase,
    SagaInstance,
    SagaStatus,
    StepRecord,
    StepStatus,
    command_id_for,
)
from bus_orchestrator.core.stopping import MAX_ERROR_CHARS, at_rest
from bus_orchestrator.errors import DefinitionError

IN_FLIGHT = StepStatus.RUNNING
UNDOABLE = (StepStatus.SUCCEEDED, StepStatus.TIMED_OUT)
HELD = (StepStatus.FAILED, StepStatus.TIMED_OUT)
"""A step's outcome that, while the saga is not stopping, holds it for an operator."""


def checked(command: Command, declared: type[Command] | None, step: str) -> Command:
    if declared is not None and not isinstance(command, declared):
        raise DefinitionError(
            f"step {step} declares it sends {declared.message_type}, "
            f"but built {command.message_type}"
        )
    return command


class Decider:
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
        flying = in_flight(instance)
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
            command = checked(member.command(data), member.sends, member.name)
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
        """A step failed (or timed out): stop the rest, and remember why to compensate;
        or, for a step that says so and a saga not stopping already, hold it for an
        operator once the rest of its stage has settled (``settle``)."""
        failed = self.with_step(
            instance,
            index,
            status=status,
            finished_at=self.now,
            error=error,
            deadline=None,
            retry_at=None,
        )
        name = instance.steps[index].name
        step = self.definition.step(name)
        if (
            isinstance(step, Step)
            and step.on_failure is OnFailure.SUSPEND
            and instance.cancel_reason is None
        ):
            self.notes.append(f"step {name} holds the saga for an operator")
            return failed.model_copy(update={"failure": reason[:MAX_ERROR_CHARS]})
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

    def cancel(self, instance: SagaInstance, reason: str) -> Decision:
        """Stop a running (or suspended) saga for ``reason`` and compensate what it did,
        once its commands in flight have answered or timed out."""
        if instance.status is SagaStatus.SUSPENDED:
            instance = instance.model_copy(update={"status": SagaStatus.RUNNING})
        stopped = self.stop(instance, reason)
        flying = in_flight(stopped)
        if flying:
            names = ", ".join(stopped.steps[i].name for i in flying)
            self.notes.append(f"compensation starts once {names} answer or time out")
        return self.settle(stopped, None)

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
        if in_flight(instance):
            return self.decision(Outcome.ADVANCED, self.save_awaiting(instance))
        data = self.data(instance)
        if instance.cancel_reason is not None:
            return self.compensate(instance, data, instance.cancel_reason)
        if held(instance):
            self.notes.append("saga suspended, an operator must decide")
            suspended = self.save_awaiting(instance)
            return self.decision(
                Outcome.ADVANCED, suspended.model_copy(update={"status": SagaStatus.SUSPENDED})
            )
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
        """The saga at its final status: its data masked at rest (but for a ``failed``
        saga's, which ``resume`` compensates with), and events it kept for waits it never
        reached dropped (they are kept as they came, secrets and all)."""
        data = (
            instance.data
            if status is SagaStatus.FAILED
            else at_rest(self.definition, instance.data)
        )
        return self.save(
            instance,
            data=data,
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
        self,
        instance: SagaInstance,
        index: int,
        rest: tuple[int, ...],
        command_id: str | None = None,
    ) -> Decision:
        record = instance.steps[index]
        step = self.definition.step(record.name)
        assert not isinstance(step, Wait) and step.compensation is not None  # noqa: S101
        command = checked(
            step.compensation(self.data(instance)), step.compensation_sends, step.name
        )
        command_id = command_id or command_id_for(instance.saga_id, index, Phase.COMPENSATION)
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

    def compensated(self, instance: SagaInstance) -> Decision:
        """The compensation in flight is done: the next one, or the saga is compensated."""
        assert instance.current is not None  # noqa: S101 - callers hold a current step
        undone = self.with_step(
            instance, instance.current, status=StepStatus.COMPENSATED, compensated_at=self.now
        )
        if undone.to_compensate:
            rest = undone.to_compensate
            return self.begin_compensation(undone, rest[0], rest[1:])
        self.notes.append("saga compensated")
        return self.decision(Outcome.ADVANCED, self.finish(undone, SagaStatus.COMPENSATED))

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


def held(instance: SagaInstance) -> list[int]:
    """The steps that hold a saga for an operator: failed or timed out while it was not
    stopping (only a step with ``OnFailure.SUSPEND`` is left so)."""
    if instance.cancel_reason is not None or instance.phase is not Phase.FORWARD:
        return []
    return [i for i, r in enumerate(instance.steps) if r.status in HELD]


def in_flight(instance: SagaInstance) -> list[int]:
    if instance.phase is not Phase.FORWARD:
        return []
    return [i for i, r in enumerate(instance.steps) if r.status is IN_FLIGHT]
