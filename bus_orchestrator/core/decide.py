"""``decide(definition, instance, message, now) -> Decision``: the whole of saga semantics.

Pure: the same inputs give the same decision, ids included (they are derived, not random),
so a step retried from the last stored state sends the very same commands.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel

from bus_orchestrator.core.decision import (
    COMMAND_REFUSED_TYPE,
    TIMER_MESSAGE_TYPE,
    CommandRefused,
    Decision,
    Inbound,
    Outcome,
    Outgoing,
    TimerFired,
)
from bus_orchestrator.core.definition import END, Compensate, SagaDefinition, Step
from bus_orchestrator.core.messages import (
    Command,
    Message,
    Reply,
)
from bus_orchestrator.core.state import (
    Phase,
    SagaInstance,
    SagaStatus,
    StepRecord,
    StepStatus,
    command_id_for,
    saga_id_for,
)
from bus_orchestrator.core.stopping import MAX_ERROR_CHARS, at_rest, error_text, fail
from bus_orchestrator.errors import DefinitionError

__all__ = [  # the decision's values and the stopping helpers are re-exported here
    "COMMAND_REFUSED_TYPE",
    "MAX_ERROR_CHARS",
    "TIMER_MESSAGE_TYPE",
    "CommandRefused",
    "Decision",
    "Inbound",
    "Outcome",
    "Outgoing",
    "TimerFired",
    "at_rest",
    "decide",
    "describe",
    "error_text",
    "fail",
]


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
    """One decision in the making; holds the inputs so the helpers stay short."""

    def __init__(self, definition: SagaDefinition[Any, Any], cause: str, now: datetime) -> None:
        self.definition = definition
        self.cause = cause
        self.now = now

    def save(self, old: SagaInstance, **changes: Any) -> SagaInstance:
        return old.model_copy(
            update={**changes, "version": old.version + 1, "updated_at": self.now}
        )

    def with_step(
        self, instance: SagaInstance, index: int, **changes: Any
    ) -> tuple[StepRecord, ...]:
        steps = list(instance.steps)
        steps[index] = steps[index].model_copy(update=changes)
        return tuple(steps)

    def begin_step(
        self, instance: SagaInstance, data: BaseModel, step: Step[Any], outcome: Outcome, note: str
    ) -> Decision:
        command = _checked(step.command(data), step.sends, step.name)
        index = len(instance.steps)
        command_id = command_id_for(instance.saga_id, index, Phase.FORWARD)
        record = StepRecord(
            name=step.name,
            status=StepStatus.RUNNING,
            command_type=command.message_type,
            command_id=command_id,
            attempts=1,
            started_at=self.now,
        )
        new = self.save(
            instance,
            data=data.model_dump(mode="json"),
            steps=(*instance.steps, record),
            current=index,
            phase=Phase.FORWARD,
            pending_command_id=command_id,
            deadline=self.now + step.timeout,
        )
        out = Outgoing(command_id, command, instance.correlation_id, self.cause)
        return Decision(
            outcome, f"{note}; step {step.name} sent {command.message_type}", new, (out,)
        )

    def finish(self, instance: SagaInstance, status: SagaStatus, **changes: Any) -> SagaInstance:
        data = changes.pop("data", instance.data)
        return self.save(
            instance,
            data=at_rest(self.definition, data),
            status=status,
            current=None,
            pending_command_id=None,
            deadline=None,
            to_compensate=(),
            **changes,
        )

    def compensate(
        self, instance: SagaInstance, data: BaseModel, reason: str, note: str
    ) -> Decision:
        """Undo every step that succeeded or may have (timed out), newest first."""
        undo = tuple(
            i
            for i in reversed(range(len(instance.steps)))
            if instance.steps[i].status in (StepStatus.SUCCEEDED, StepStatus.TIMED_OUT)
            and self.definition.step(instance.steps[i].name).compensation is not None
        )
        if not undo:
            done = self.finish(
                instance, SagaStatus.COMPENSATED, failure=reason, data=data.model_dump(mode="json")
            )
            return Decision(Outcome.ADVANCED, f"{note}; nothing to compensate", done)
        started = instance.model_copy(update={"status": SagaStatus.COMPENSATING, "failure": reason})
        return self.begin_compensation(started, data, undo[0], undo[1:], note)

    def begin_compensation(
        self,
        instance: SagaInstance,
        data: BaseModel,
        index: int,
        rest: tuple[int, ...],
        note: str,
    ) -> Decision:
        record = instance.steps[index]
        step = self.definition.step(record.name)
        assert step.compensation is not None  # noqa: S101 - filtered by compensate()
        command = _checked(step.compensation(data), step.compensation_sends, step.name)
        command_id = command_id_for(instance.saga_id, index, Phase.COMPENSATION)
        new = self.save(
            instance,
            data=data.model_dump(mode="json"),
            steps=self.with_step(
                instance,
                index,
                status=StepStatus.COMPENSATING,
                compensation_type=command.message_type,
                compensation_id=command_id,
                compensation_attempts=1,
            ),
            current=index,
            phase=Phase.COMPENSATION,
            pending_command_id=command_id,
            deadline=self.now + step.timeout,
            to_compensate=rest,
        )
        out = Outgoing(command_id, command, instance.correlation_id, self.cause, record.command_id)
        return Decision(
            Outcome.ADVANCED,
            f"{note}; compensating step {step.name} with {command.message_type}",
            new,
            (out,),
        )

    def next_step(self, step: Step[Any], data: BaseModel, reply: Reply) -> Step[Any] | None:
        chosen = step.next(data, reply) if step.next is not None else None
        if chosen == END:
            return None
        if chosen is not None:
            return self.definition.step(chosen)
        following = self.definition.index_of(step.name) + 1
        return self.definition.steps[following] if following < len(self.definition.steps) else None


DecideMessage = Inbound | TimerFired | CommandRefused


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
    is recorded in its history like any other.
    """
    try:
        return _decide(definition, instance, message, now)
    except Exception as exc:
        return _code_failed(definition, instance, message, now, exc)


def _decide(
    definition: SagaDefinition[Any, Any],
    instance: SagaInstance | None,
    message: DecideMessage,
    now: datetime,
) -> Decision:
    d = _Decider(definition, message.message_id, now)
    if isinstance(message, TimerFired | CommandRefused):
        if instance is None:
            return _ignored(f"{message.message_type} for a saga that does not exist")
        if isinstance(message, CommandRefused):
            return _on_refused(d, instance, message)
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
        created_at=now,
        updated_at=now,
        **state,
    )


def _start(d: _Decider, message: Inbound) -> Decision:
    definition = d.definition
    instance = _new_saga(definition, message, d.now)
    data = definition.initial_data(message.payload)
    return d.begin_step(instance, data, definition.steps[0], Outcome.STARTED, "saga started")


def _on_reply(d: _Decider, instance: SagaInstance, message: Inbound, reply: Reply) -> Decision:
    if instance.current is None or message.causation_id != instance.pending_command_id:
        return _ignored(
            f"stale reply: it answers {message.causation_id!r}, "
            f"the saga awaits {instance.pending_command_id!r}"
        )
    record = instance.steps[instance.current]
    step = d.definition.step(record.name)
    data = d.definition.data_model.model_validate(instance.data)
    kind = type(reply)
    what = f"{reply.message_type} for step {step.name}"

    if instance.phase is Phase.FORWARD:
        if kind in step.succeeds_on:
            data = step.on_reply(data, reply)
            done = instance.model_copy(
                update={
                    "steps": d.with_step(
                        instance, instance.current, status=StepStatus.SUCCEEDED, finished_at=d.now
                    )
                }
            )
            if instance.cancel_reason is not None:
                return d.compensate(done, data, instance.cancel_reason, f"{what}; cancelled")
            following = d.next_step(step, data, reply)
            if following is None:
                completed = d.finish(done, SagaStatus.COMPLETED, data=data.model_dump(mode="json"))
                return Decision(Outcome.ADVANCED, f"{what}; saga completed", completed)
            return d.begin_step(done, data, following, Outcome.ADVANCED, what)
        if step.retry is not None and kind in step.retry.transient:
            return _on_transient(d, instance, step, describe(reply), what)
        if kind in step.fails_on:
            failed = instance.model_copy(
                update={
                    "steps": d.with_step(
                        instance,
                        instance.current,
                        status=StepStatus.FAILED,
                        finished_at=d.now,
                        error=describe(reply),
                    )
                }
            )
            reason = f"step {step.name} failed: {describe(reply)}"
            return d.compensate(failed, data, reason, what)
    else:
        if kind in step.compensated_on:
            undone = instance.model_copy(
                update={
                    "steps": d.with_step(
                        instance,
                        instance.current,
                        status=StepStatus.COMPENSATED,
                        compensated_at=d.now,
                    )
                }
            )
            if undone.to_compensate:
                rest = undone.to_compensate
                return d.begin_compensation(undone, data, rest[0], rest[1:], what)
            finished = d.finish(undone, SagaStatus.COMPENSATED)
            return Decision(Outcome.ADVANCED, f"{what}; saga compensated", finished)
        if kind in step.compensation_fails_on:
            return _compensation_failed(d, instance, describe(reply), what)
    return _ignored(
        f"unexpected {reply.message_type} while step {step.name} is in {instance.phase}"
    )


def _on_transient(
    d: _Decider, instance: SagaInstance, step: Step[Any], error: str, what: str
) -> Decision:
    """A transient failure of the current attempt: wait to retry, or fail once spent."""
    assert instance.current is not None and step.retry is not None  # noqa: S101 - callers
    index = instance.current
    record = instance.steps[index]
    data = d.definition.data_model.model_validate(instance.data)
    if record.tries >= step.retry.attempts or instance.cancel_reason is not None:
        failed = instance.model_copy(
            update={
                "steps": d.with_step(
                    instance, index, status=StepStatus.FAILED, finished_at=d.now, error=error
                )
            }
        )
        if instance.cancel_reason is not None:
            return d.compensate(failed, data, instance.cancel_reason, f"{what}; cancelled")
        reason = f"step {step.name} failed after {record.tries} attempts: {error}"
        return d.compensate(failed, data, reason, f"{what}; attempts spent")
    attempt = record.tries + 1
    retry_at = d.now + step.retry.delay(instance.saga_id, index, attempt)
    command_id = command_id_for(instance.saga_id, index, Phase.FORWARD, attempt)
    waiting = d.save(
        instance,
        steps=d.with_step(
            instance, index, tries=attempt, command_id=command_id, retry_at=retry_at, error=error
        ),
        # The saga awaits the next attempt's id from now on: a late answer to an earlier
        # attempt is stale, and the timer that sends the retry carries this id.
        pending_command_id=command_id,
        deadline=retry_at,
    )
    return Decision(
        Outcome.ADVANCED,
        f"{what}; attempt {attempt} of {step.retry.attempts} at {retry_at.isoformat()}",
        waiting,
    )


def _compensation_failed(d: _Decider, instance: SagaInstance, error: str, note: str) -> Decision:
    assert instance.current is not None  # noqa: S101 - callers hold a current step
    name = instance.steps[instance.current].name
    failed = d.finish(
        instance.model_copy(
            update={
                "steps": d.with_step(
                    instance, instance.current, status=StepStatus.COMPENSATION_FAILED, error=error
                )
            }
        ),
        SagaStatus.FAILED,
        failure=f"compensation of step {name} failed: {error}",
    )
    return Decision(Outcome.ADVANCED, f"{note}; saga failed, an operator must look", failed)


def _on_event(d: _Decider, instance: SagaInstance, message: Inbound) -> Decision:
    reaction = d.definition.reaction_for(message.message_type)
    if reaction is None:
        return _ignored(f"{d.definition.name} does not react to {message.message_type}")
    data = d.definition.data_model.model_validate(instance.data)
    result = reaction.react(data, message.payload)
    what = f"event {message.message_type}"
    if result is None:
        return _ignored(f"{what}: no change")
    if isinstance(result, Compensate):
        if instance.status is not SagaStatus.RUNNING or instance.cancel_reason is not None:
            return _ignored(f"{what}: saga is already {instance.status}")
        if instance.current is not None and instance.steps[instance.current].retry_at:
            # Waiting to retry a transient failure: nothing is in flight, undo at once.
            index = instance.current
            stopped = instance.model_copy(
                update={
                    "steps": d.with_step(
                        instance, index, status=StepStatus.FAILED, finished_at=d.now, retry_at=None
                    )
                }
            )
            return d.compensate(stopped, data, result.reason, f"{what}; retry dropped")
        if instance.current is not None and instance.phase is Phase.FORWARD:
            # The awaited step may still happen. Waiting for its reply (or its timeout) tells
            # us whether it needs undoing, and keeps its compensation from overtaking it.
            waiting = d.save(instance, cancel_reason=result.reason)
            step = instance.steps[instance.current].name
            return Decision(
                Outcome.ADVANCED,
                f"{what}: compensation starts once step {step} answers or times out",
                waiting,
            )
        return d.compensate(instance, data, result.reason, what)
    if not isinstance(result, d.definition.data_model):
        raise TypeError(f"reaction to {message.message_type} returned {type(result).__name__}")
    updated = d.save(instance, data=result.model_dump(mode="json"))
    return Decision(Outcome.ADVANCED, f"{what}: data updated", updated)


def _on_timer(d: _Decider, instance: SagaInstance, timer: TimerFired) -> Decision:
    if (
        instance.current is None
        or instance.pending_command_id != timer.command_id
        or instance.deadline != timer.due
    ):
        return _ignored("stale timer")
    index = instance.current
    record = instance.steps[index]
    step = d.definition.step(record.name)
    data = d.definition.data_model.model_validate(instance.data)
    waited = f"no reply to step {step.name} within {step.timeout.total_seconds():g}s"

    if instance.phase is Phase.FORWARD and record.retry_at is not None:
        command = _checked(step.command(data), step.sends, step.name)
        retried = d.save(
            instance,
            steps=d.with_step(instance, index, attempts=1, retry_at=None),
            deadline=d.now + step.timeout,
        )
        out = Outgoing(record.command_id, command, instance.correlation_id, d.cause)
        return Decision(
            Outcome.ADVANCED,
            f"retry: attempt {record.tries} of step {step.name} sent",
            retried,
            (out,),
        )
    if instance.phase is Phase.FORWARD:
        # Once cancelled, nothing forward goes out again: the timeout ends the wait and
        # the step is compensated as possibly done.
        if record.attempts < step.max_attempts and instance.cancel_reason is None:
            command = step.command(data)
            resent = d.save(
                instance,
                steps=d.with_step(instance, index, attempts=record.attempts + 1),
                deadline=d.now + step.timeout,
            )
            out = Outgoing(record.command_id, command, instance.correlation_id, d.cause)
            return Decision(Outcome.ADVANCED, f"timeout: {waited}; resent", resent, (out,))
        timed_out = instance.model_copy(
            update={
                "steps": d.with_step(
                    instance, index, status=StepStatus.TIMED_OUT, finished_at=d.now, error=waited
                )
            }
        )
        reason = instance.cancel_reason or f"step {step.name} timed out"
        return d.compensate(timed_out, data, reason, f"timeout: {waited}")

    if record.compensation_attempts < step.compensation_max_attempts:
        assert step.compensation is not None  # noqa: S101 - a compensating step has one
        command = step.compensation(data)
        assert record.compensation_id is not None  # noqa: S101
        resent = d.save(
            instance,
            steps=d.with_step(
                instance, index, compensation_attempts=record.compensation_attempts + 1
            ),
            deadline=d.now + step.timeout,
        )
        out = Outgoing(
            record.compensation_id, command, instance.correlation_id, d.cause, record.command_id
        )
        return Decision(Outcome.ADVANCED, f"timeout: {waited}; compensation resent", resent, (out,))
    return _compensation_failed(d, instance, waited, "timeout")


def _on_refused(d: _Decider, instance: SagaInstance, refused: CommandRefused) -> Decision:
    if instance.current is None or instance.pending_command_id != refused.command_id:
        return _ignored(f"refusal of {refused.command_id!r}, which the saga does not await")
    index = instance.current
    step = d.definition.step(instance.steps[index].name)
    what = f"command of step {step.name} refused: {refused.reason}"
    if instance.phase is Phase.FORWARD:
        data = d.definition.data_model.model_validate(instance.data)
        failed = instance.model_copy(
            update={
                "steps": d.with_step(
                    instance,
                    index,
                    status=StepStatus.FAILED,
                    finished_at=d.now,
                    error=refused.reason,
                )
            }
        )
        return d.compensate(failed, data, f"step {step.name} failed: {refused.reason}", what)
    return _compensation_failed(d, instance, refused.reason, what)


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
