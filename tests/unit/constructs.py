"""A small vocabulary of messages and a driver of ``decide``, for the construct tests
(``test_parallel``, ``test_waits``, ``test_children``, ``test_lifecycle``).

The driver keeps a saga instance and a clock, feeds ``decide`` one message at a time and
keeps what each decision sends; it finds the command id to answer by step name, as an
adapter would echo it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, ClassVar

from pydantic import BaseModel

from bus_orchestrator.core import (
    Command,
    Event,
    Inbound,
    Reaction,
    Reply,
    SagaDefinition,
    SagaInstance,
    Step,
    StepRecord,
    StepStatus,
    TimerFired,
    decide,
)
from bus_orchestrator.core.decision import Decision, Outgoing
from bus_orchestrator.core.definition import Compensate, OnFailure, RetryOn, Stage
from bus_orchestrator.core.lifecycle import SagaEnded, StartedBy, end_event
from bus_orchestrator.core.messages import Message
from bus_orchestrator.core.repair import OperatorAction, Repair

T0 = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)
KEY = "k-1"
TIMEOUT = timedelta(seconds=30)


class Begun(Event):
    message_type: ClassVar[str] = "tests.constructs.begun.v1"
    key: str


class Halted(Event):
    """Reacted to with ``Compensate``: cancels the saga."""

    message_type: ClassVar[str] = "tests.constructs.halted.v1"
    key: str


class Paid(Event):
    """What a ``Wait`` waits for."""

    message_type: ClassVar[str] = "tests.constructs.paid.v1"
    key: str
    amount: int = 0


class Shipped(Event):
    """A second event to wait for."""

    message_type: ClassVar[str] = "tests.constructs.shipped.v1"
    key: str


class Do(Command):
    key: str


class DoA(Do):
    message_type: ClassVar[str] = "tests.constructs.do_a.v1"


class DoB(Do):
    message_type: ClassVar[str] = "tests.constructs.do_b.v1"


class DoC(Do):
    message_type: ClassVar[str] = "tests.constructs.do_c.v1"


class UndoA(Do):
    message_type: ClassVar[str] = "tests.constructs.undo_a.v1"


class UndoB(Do):
    message_type: ClassVar[str] = "tests.constructs.undo_b.v1"


class UndoC(Do):
    message_type: ClassVar[str] = "tests.constructs.undo_c.v1"


class Done(Reply):
    message_type: ClassVar[str] = "tests.constructs.done.v1"


class Undone(Reply):
    message_type: ClassVar[str] = "tests.constructs.undone.v1"


class Refused(Reply):
    message_type: ClassVar[str] = "tests.constructs.refused.v1"
    reason: str = "no"


class Busy(Reply):
    message_type: ClassVar[str] = "tests.constructs.busy.v1"
    reason: str = "busy"


class Data(BaseModel):
    key: str
    seen: tuple[str, ...] = ()


def noted(data: Data, what: str) -> Data:
    return data.model_copy(update={"seen": (*data.seen, what)})


DOS: dict[str, type[Do]] = {"a": DoA, "b": DoB, "c": DoC}
UNDOS: dict[str, type[Do]] = {"a": UndoA, "b": UndoB, "c": UndoC}


def step(
    name: str,
    *,
    undo: bool = True,
    timeout: timedelta = TIMEOUT,
    retry: RetryOn | None = None,
    max_attempts: int = 1,
    on_failure: OnFailure = OnFailure.COMPENSATE,
    undo_can_fail: bool = False,
) -> Step[Data, Done]:
    """Step ``name`` ("a", "b" or "c"): sends ``Do<name>``, succeeds on ``Done``, fails on
    ``Refused``, and (with ``undo``) is undone by ``Undo<name>``."""
    do, undone = DOS[name], UNDOS[name]
    return Step(
        name=name,
        command=lambda d: do(key=d.key),
        sends=do,
        succeeds_on=(Done,),
        fails_on=(Refused,),
        on_reply=lambda d, r: noted(d, name),
        compensation=(lambda d: undone(key=d.key)) if undo else None,
        compensation_sends=undone if undo else None,
        compensated_on=(Undone,) if undo else (),
        compensation_fails_on=(Refused,) if undo and undo_can_fail else (),
        timeout=timeout,
        retry=retry,
        max_attempts=max_attempts,
        on_failure=on_failure,
    )


def saga(name: str, stages: Sequence[Stage[Data]], **more: Any) -> SagaDefinition[Data, Begun]:
    return SagaDefinition(
        name=name,
        data_model=Data,
        started_by=Begun,
        correlate=lambda e: e.key,
        initial_data=lambda e: Data(key=e.key),
        steps=stages,
        reactions=[
            Reaction(Halted, correlate=lambda e: e.key, react=lambda d, e: Compensate("halted"))
        ],
        **more,
    )


@dataclass
class Driver:
    """Feeds ``decide`` messages for one saga and keeps its state and what it sent."""

    definition: SagaDefinition[Any, Any]
    now: datetime = T0
    instance: SagaInstance | None = None
    sent: list[Outgoing] = field(default_factory=list)
    decisions: list[Decision] = field(default_factory=list)
    counter: int = 0

    def apply(self, message: Inbound | TimerFired | OperatorAction) -> Decision:
        decision = decide(self.definition, self.instance, message, self.now)
        if decision.instance is not None:
            self.instance = decision.instance
        self.sent.extend(decision.send)
        self.decisions.append(decision)
        return decision

    def next_id(self) -> str:
        self.counter += 1
        return f"m-{self.counter}"

    def start(self, key: str = KEY, correlation: str | None = None) -> Decision:
        return self.apply(Inbound(self.next_id(), Begun(key=key), correlation))

    @property
    def saga(self) -> SagaInstance:
        assert self.instance is not None
        return self.instance

    def record(self, name: str) -> StepRecord:
        """The newest record of step ``name``."""
        return [r for r in self.saga.steps if r.name == name][-1]

    def index(self, name: str) -> int:
        return max(i for i, r in enumerate(self.saga.steps) if r.name == name)

    def statuses(self) -> dict[str, StepStatus]:
        return {r.name: r.status for r in self.saga.steps}

    def reply(self, name: str, reply: Reply, *, compensation: bool = False) -> Decision:
        """``reply`` to step ``name``'s command (its compensation's, with ``compensation``)."""
        record = self.record(name)
        answered = record.compensation_id if compensation else record.command_id
        return self.apply(Inbound(self.next_id(), reply, self.saga.correlation_id, answered))

    def event(self, payload: Event) -> Decision:
        return self.apply(Inbound(self.next_id(), payload, self.saga.correlation_id))

    def child_ended(
        self, name: str, saga_type: str, status: str, reason: str | None = None
    ) -> Decision:
        """The end event of the child saga step ``name`` started."""
        record = self.record(name)
        model = end_event(saga_type, status)
        ended = model(
            saga_id=f"{saga_type}-id",
            saga_type=saga_type,
            correlation_id=KEY,
            status=status,
            reason=reason,
            started_by=StartedBy(
                message_id=record.command_id, correlation_id=self.saga.correlation_id
            ),
        )
        return self.event(ended)

    def operate(
        self,
        repair: Repair,
        reason: str = "fixed",
        *,
        step: str | None = None,
        reply: Message | None = None,
        message_id: str | None = None,
    ) -> Decision:
        """An operator's ``repair``, by ``ops``."""
        action = OperatorAction(
            repair, self.saga.saga_id, message_id or self.next_id(), "ops", reason, step, reply
        )
        return self.apply(action)

    def fire(self) -> Decision:
        """The saga's timer fires at its deadline (the clock moves there)."""
        due = self.saga.deadline
        assert due is not None and self.saga.pending_command_id is not None
        self.now = max(self.now, due)
        return self.apply(TimerFired(self.saga.saga_id, self.saga.pending_command_id, due))

    def types(self, decision: Decision | None = None) -> list[str]:
        """The types sent by ``decision`` (by the last one when ``None``)."""
        decision = decision or self.decisions[-1]
        return [o.payload.message_type for o in decision.send]

    def ends(self) -> list[SagaEnded]:
        return [o.payload for o in self.sent if isinstance(o.payload, SagaEnded)]
