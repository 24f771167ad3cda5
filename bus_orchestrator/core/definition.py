"""How a saga is declared: what starts it, its steps, and the events that affect it.

A definition is data plus pure functions of the saga's typed data. Nothing here does I/O::

    order_to_cash = SagaDefinition(
        name="order_to_cash",
        data_model=OrderData,
        started_by=OrderPlaced,
        correlate=lambda e: e.order_id,
        initial_data=lambda e: OrderData(order=e),
        steps=[Step(name="reserve_stock", command=reserve, succeeds_on=(StockReserved,), ...)],
        reactions=[Reaction(OrderCancelled, correlate=lambda e: e.order_id,
                            react=lambda d, e: Compensate("cancelled by customer"))],
    )
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any, Generic, TypeVar

from pydantic import BaseModel

from bus_orchestrator.core.messages import Command, Event, Message, MessageKind, Reply
from bus_orchestrator.errors import DefinitionError

D = TypeVar("D", bound=BaseModel)
S = TypeVar("S", bound=Event)
E = TypeVar("E", bound=Event)

END = "__end__"
"""Returned by a step's ``next`` to finish the saga after that step."""


def _keep(data: D, reply: Reply) -> D:
    return data


@dataclass(frozen=True)
class RetryOn:
    """A step's retry policy: which failure replies are transient, and how to wait.

    A ``transient`` reply does not fail the step: after a backoff the command is sent
    again, as a new attempt with its own command id, until ``attempts`` attempts in all
    have failed; then the step fails and the saga compensates, as on a ``fails_on`` reply.
    The wait before attempt ``n`` (2, 3, ...) is ``backoff * 2 ** (n - 2)``, capped at
    ``max_backoff``, then shortened by up to ``jitter`` of itself. The jitter is derived
    from the saga id, the step and the attempt, so a decision stays a pure function.
    """

    transient: tuple[type[Reply], ...]
    attempts: int = 3
    """Attempts in all, the first included."""
    backoff: timedelta = timedelta(seconds=1)
    max_backoff: timedelta = timedelta(minutes=5)
    jitter: float = 0.1
    """The largest share of a wait taken off it at random (0 for none, below 1)."""

    def delay(self, saga_id: str, step_index: int, attempt: int) -> timedelta:
        """How long to wait before sending attempt ``attempt`` (2 or more)."""
        doublings = min(max(attempt - 2, 0), 64)  # past that, the cap holds anyway
        grown = self.backoff.total_seconds() * float(2**doublings)
        base = min(grown, self.max_backoff.total_seconds())
        seed = hashlib.sha256(f"retry:{saga_id}:{step_index}:{attempt}".encode()).digest()
        share = int.from_bytes(seed[:8], "big") / 2**64  # in [0, 1)
        return timedelta(seconds=base * (1 - self.jitter * share))

    def problems(self) -> list[str]:
        """What is wrong with this policy on its own (empty when nothing)."""
        found = []
        if not self.transient:
            found.append("no transient reply type")
        if self.attempts < 1:
            found.append("attempts must be at least 1")
        if self.backoff <= timedelta(0) or self.max_backoff < self.backoff:
            found.append("backoff must be positive and at most max_backoff")
        if not 0 <= self.jitter < 1:
            found.append("jitter must be at least 0 and below 1")
        return found


@dataclass(frozen=True)
class Step(Generic[D]):
    """One step: a command to an adapter and the replies that settle it.

    ``command`` builds the command from the saga data, which holds what earlier replies
    taught us (``on_reply`` folds a success reply into the data). ``next`` picks the step
    that follows from the data and the success reply (a branch); by default the next one in
    the list. A step with a ``compensation`` is undone, in reverse order, when a later step
    fails, the saga is cancelled, or this step's outcome is unknown because it timed out.
    """

    name: str
    command: Callable[[D], Command]
    succeeds_on: tuple[type[Reply], ...]
    fails_on: tuple[type[Reply], ...] = ()
    on_reply: Callable[[D, Reply], D] = _keep
    compensation: Callable[[D], Command] | None = None
    compensated_on: tuple[type[Reply], ...] = ()
    compensation_fails_on: tuple[type[Reply], ...] = ()
    timeout: timedelta = timedelta(seconds=60)
    max_attempts: int = 1
    compensation_max_attempts: int = 3
    next: Callable[[D, Reply], str | None] | None = None
    sends: type[Command] | None = None
    """The command model ``command`` builds: declared, so contracts can be documented and
    the built command checked."""
    compensation_sends: type[Command] | None = None
    retry: RetryOn | None = None
    """Failure replies to retry with backoff, each retry a new attempt (see ``RetryOn``)."""
    branches: tuple[str, ...] = ()
    """The steps ``next`` may pick (step names, or ``END``): declared, so that a diagram can
    draw the branch; checked against the saga's step names."""

    def reply_types(self) -> set[type[Reply]]:
        return {
            *self.succeeds_on,
            *self.fails_on,
            *(self.retry.transient if self.retry is not None else ()),
            *self.compensated_on,
            *self.compensation_fails_on,
        }


@dataclass(frozen=True)
class Compensate:
    """What a reaction returns to undo the saga's completed steps."""

    reason: str


@dataclass(frozen=True)
class Reaction(Generic[D, E]):
    """A business event that affects a running saga, found by its correlation id.

    ``react`` returns ``Compensate(reason)`` to undo the saga, new data to record, or
    ``None`` to leave the saga as it is.
    """

    event: type[E]
    correlate: Callable[[E], str]
    react: Callable[[D, E], Compensate | D | None]


def _check_retry(step: Step[Any]) -> None:
    assert step.retry is not None  # noqa: S101 - checked by the caller
    problems = step.retry.problems()
    settled = {*step.succeeds_on, *step.fails_on}
    problems += [
        f"{t.__name__} is transient and also settles the step"
        for t in step.retry.transient
        if t in settled
    ]
    if problems:
        raise DefinitionError(f"step {step.name!r} retry: {'; '.join(problems)}")


@dataclass(frozen=True)
class SagaDefinition(Generic[D, S]):
    """A saga type: its start event, its data model, its steps and its reactions."""

    name: str
    data_model: type[D]
    started_by: type[S] | tuple[type[S], ...]
    """The start event, or several (say ``.v1`` and ``.v2`` while publishers migrate)."""
    correlate: Callable[[S], str]
    initial_data: Callable[[S], D]
    steps: Sequence[Step[D]]
    reactions: Sequence[Reaction[D, Any]] = field(default_factory=tuple)
    version: int = 1
    """Each instance records the version it started on and continues on it; an app may
    register several versions of one name, the newest starting new sagas."""

    def __post_init__(self) -> None:
        if self.version < 1:
            raise DefinitionError(f"saga {self.name!r}: version must be at least 1")
        if not self.steps:
            raise DefinitionError(f"saga {self.name!r} has no steps")
        names = [s.name for s in self.steps]
        if len(set(names)) != len(names):
            raise DefinitionError(f"saga {self.name!r} has duplicate step names: {names}")
        if END in names:
            raise DefinitionError(f"saga {self.name!r}: {END!r} is reserved")
        for step in self.steps:
            if not step.succeeds_on:
                raise DefinitionError(f"step {step.name!r} has no success reply type")
            if step.compensation is not None and not step.compensated_on:
                raise DefinitionError(
                    f"step {step.name!r} has a compensation but no reply that confirms it"
                )
            if step.max_attempts < 1 or step.compensation_max_attempts < 1:
                raise DefinitionError(f"step {step.name!r}: attempts must be at least 1")
            for reply in step.reply_types():
                if reply.kind is not MessageKind.REPLY:
                    raise DefinitionError(f"step {step.name!r}: {reply.__name__} is not a reply")
            if step.retry is not None:
                _check_retry(step)
            if step.branches and step.next is None:
                raise DefinitionError(f"step {step.name!r} declares branches but has no next")
            unknown = [b for b in step.branches if b != END and b not in names]
            if unknown:
                raise DefinitionError(f"step {step.name!r} branches to unknown steps {unknown}")
            for declared in (step.sends, step.compensation_sends):
                if declared is not None and declared.kind is not MessageKind.COMMAND:
                    raise DefinitionError(f"step {step.name!r}: {declared.__name__} is no command")
        if not self.start_types:
            raise DefinitionError(f"saga {self.name!r} has no start event")
        handled = [t.message_type for t in self.start_types] + [
            r.event.message_type for r in self.reactions
        ]
        if len(set(handled)) != len(handled):
            raise DefinitionError(f"saga {self.name!r}: an event type is handled twice")

    @property
    def start_types(self) -> tuple[type[S], ...]:
        started = self.started_by
        return started if isinstance(started, tuple) else (started,)

    def step(self, name: str) -> Step[D]:
        for step in self.steps:
            if step.name == name:
                return step
        raise DefinitionError(f"saga {self.name!r} has no step {name!r}")

    def index_of(self, name: str) -> int:
        return [s.name for s in self.steps].index(name)

    def reaction_for(self, message_type: str) -> Reaction[D, Any] | None:
        for reaction in self.reactions:
            if reaction.event.message_type == message_type:
                return reaction
        return None

    def reply_types(self) -> set[str]:
        return {r.message_type for s in self.steps for r in s.reply_types()}

    def event_types(self) -> set[str]:
        return {
            *(t.message_type for t in self.start_types),
            *(r.event.message_type for r in self.reactions),
        }

    def message_models(self) -> set[type[Message]]:
        """Every model this saga receives or sends whose type is known statically."""
        models: set[type[Message]] = set(self.start_types)
        models.update(r.event for r in self.reactions)
        for step in self.steps:
            models.update(step.reply_types())
            models.update(m for m in (step.sends, step.compensation_sends) if m is not None)
        return models

    def correlation_of(self, event: Event) -> str:
        """The correlation id an event of this saga carries."""
        if isinstance(event, self.start_types):
            return self.correlate(event)
        reaction = self.reaction_for(event.message_type)
        if reaction is None:
            raise DefinitionError(f"saga {self.name!r} does not handle {event.message_type!r}")
        return reaction.correlate(event)
