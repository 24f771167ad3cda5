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
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from enum import StrEnum
from typing import Any, Generic, TypeVar, get_type_hints

from pydantic import BaseModel
from typing_extensions import TypeVar as DefaultTypeVar

from bus_orchestrator.core.lifecycle import CancelRequested, SagaEnded, cancel_event, end_events
from bus_orchestrator.core.messages import Command, Event, Message, MessageKind, Reply
from bus_orchestrator.errors import DefinitionError

D = TypeVar("D", bound=BaseModel)
S = TypeVar("S", bound=Event)
E = TypeVar("E", bound=Event)
R = DefaultTypeVar("R", bound=Reply, default=Reply)
"""The reply types a step declares it succeeds on: its handlers receive those, narrowed."""

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


def _keep_event(data: D, event: Event) -> D:
    return data


class OnFailure(StrEnum):
    """What a step's failure does to its saga."""

    COMPENSATE = "compensate"
    """Stop the saga and undo what was done, newest first (the default)."""
    SUSPEND = "suspend"
    """Hold the saga (``suspended``) for an operator: ``retry`` the step, ``skip`` it with
    the reply it should have had, or ``abort`` (compensate). For steps whose failure
    usually has a cause a person can fix (a mapping, a credential, an account on hold)."""


class StepBase(Generic[D]):
    """What a saga's ``steps`` (and a ``Parallel`` group's) hold: a ``Step``, a ``Wait`` or a
    ``Child``. It names no reply type, so a ``Step`` written inline in a definition is typed
    by its own arguments, not by the list it is in."""

    name: str


@dataclass(frozen=True)
class Step(StepBase[D], Generic[D, R]):
    """One step: a command to an adapter and the replies that settle it.

    ``command`` builds the command from the saga data, which holds what earlier replies
    taught us (``on_reply`` folds a success reply into the data). ``next`` picks the step
    that follows from the data and the success reply (a branch); by default the next one in
    the list. A step with a ``compensation`` is undone, in reverse order, when a later step
    fails, the saga is cancelled, or this step's outcome is unknown because it timed out.

    ``on_reply`` and ``next`` receive one of the ``succeeds_on`` types, so a handler may
    declare it (``def on_reply(d: Data, r: StockReserved) -> Data``) and mypy checks it
    against the tuple. Of several types mypy infers their common base, not their union: a
    handler of the union needs it spelled out, ``Step[Data, Charged | Deferred](...)``.
    """

    name: str
    command: Callable[[D], Command]
    succeeds_on: tuple[type[R], ...]
    fails_on: tuple[type[Reply], ...] = ()
    on_reply: Callable[[D, R], D] = _keep
    compensation: Callable[[D], Command] | None = None
    compensated_on: tuple[type[Reply], ...] = ()
    compensation_fails_on: tuple[type[Reply], ...] = ()
    timeout: timedelta = timedelta(seconds=60)
    max_attempts: int = 1
    compensation_max_attempts: int = 3
    next: Callable[[D, R], str | None] | None = None
    sends: type[Command] | None = None
    """The command model ``command`` builds: declared, so contracts can be documented and
    the built command checked. Taken from ``command``'s return annotation when not given."""
    compensation_sends: type[Command] | None = None
    retry: RetryOn | None = None
    """Failure replies to retry with backoff, each retry a new attempt (see ``RetryOn``)."""
    branches: tuple[str, ...] = ()
    """The steps ``next`` may pick (step names, or ``END``): declared, so that a diagram can
    draw the branch; checked against the saga's step names."""
    on_failure: OnFailure = OnFailure.COMPENSATE
    """What happens when the step fails for good (a failure reply, its retries spent, no
    reply after ``max_attempts``, its command refused): compensate, or suspend the saga for
    an operator. A saga already stopping (cancelled, another step failed) compensates."""

    @property
    def undo_timeout(self) -> timedelta:
        """How long each try of the compensation is awaited: the step's ``timeout``."""
        return self.timeout

    def reply_types(self) -> set[type[Reply]]:
        return {
            *self.succeeds_on,
            *self.fails_on,
            *(self.retry.transient if self.retry is not None else ()),
            *self.compensated_on,
            *self.compensation_fails_on,
        }


@dataclass(frozen=True, kw_only=True)
class Wait(StepBase[D], Generic[D, E]):
    """A step that waits for a business event about the saga, not for a reply.

    The event is found by ``correlate`` (as a ``Reaction``'s is). When it arrives before the
    saga reaches this step, it is kept and the wait ends as soon as it begins. ``on_event``
    folds the event into the data. No event within ``timeout``: the step has timed out
    and the saga compensates what it did. A wait has nothing to undo.
    """

    name: str
    event: type[E]
    correlate: Callable[[E], str]
    timeout: timedelta
    on_event: Callable[[D, E], D] = _keep_event


@dataclass(frozen=True, kw_only=True)
class Child(StepBase[D]):
    """A step that starts another saga (of this or another app) and waits for its end.

    ``start`` builds the child's start event, published on ``bus.events`` with this saga's
    correlation id in its ``correlationid`` attribute; the child's end event
    (``saga.<saga>.completed.v1``, ``.compensated.v1`` or ``.failed.v1``) names it in
    ``started_by``, which is how it finds its way back. ``completed`` is success; the other
    two fail the step. ``correlation`` gives the child's correlation id (what its definition
    takes from the start event), so that compensating this saga while the child runs can
    cancel it (``saga.<saga>.cancel_requested.v1``); the child's end then settles the step.
    A child that does not end within ``timeout`` is asked to cancel the same way, and the
    saga compensates once it ends; should it not end within another ``timeout`` either, it
    is taken as possibly done. A child that completed (or may have) is undone by
    ``compensation``, when there is one.
    """

    name: str
    saga: str
    """The child's saga type."""
    start: Callable[[D], Event]
    starts: type[Event]
    """The child's start event model, declared so it is part of this app's contracts."""
    correlation: Callable[[D], str]
    timeout: timedelta = timedelta(hours=1)
    compensation: Callable[[D], Command] | None = None
    compensated_on: tuple[type[Reply], ...] = ()
    compensation_fails_on: tuple[type[Reply], ...] = ()
    compensation_max_attempts: int = 3
    compensation_sends: type[Command] | None = None
    compensation_timeout: timedelta = timedelta(seconds=60)
    """How long each try of the compensation command is awaited (``timeout`` is the
    child's, which may be days)."""

    @property
    def undo_timeout(self) -> timedelta:
        return self.compensation_timeout

    def reply_types(self) -> set[type[Reply]]:
        return {*self.compensated_on, *self.compensation_fails_on}


Member = Step[D, Any] | Wait[D, Any] | Child[D]
"""What a saga or a parallel group is made of, as the engine reads it."""


def _member(step: object, group: str | None = None) -> Member[Any]:
    if isinstance(step, Step | Wait | Child):
        return step
    if isinstance(step, Parallel):
        raise DefinitionError(f"parallel group {group!r} holds a group ({step.name!r})")
    # Named by its type and name: the repr of a step spells out every function in it.
    name = getattr(step, "name", None)
    what = f"{type(step).__name__} {name!r}" if isinstance(name, str) else repr(step)[:100]
    raise DefinitionError(f"{what} is no Step, Wait or Child")


@dataclass(frozen=True)
class Parallel(Generic[D]):
    """Steps whose commands go out together; the saga moves on when all have succeeded.

    When one fails, those still in flight are awaited (a child is asked to cancel, a wait
    ends at once), then the group's completed steps and all earlier ones are compensated,
    newest first. The steps of a group are not branches: none has a ``next``.
    """

    name: str
    steps: Sequence[StepBase[D]]

    def members(self) -> list[Member[D]]:
        return [_member(step, self.name) for step in self.steps]


Stage = Member[D] | Parallel[D]
"""One entry of a saga's ``steps``: a step, or a parallel group of them."""


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


def _check_retry(step: Step[Any, Any]) -> None:
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


def _declared_sends(build: Callable[..., Any]) -> type[Command] | None:
    """The command model a builder's return annotation names, if it names one."""
    try:
        hints = get_type_hints(build)
    except Exception:  # an annotation that does not resolve declares nothing
        return None
    returned = hints.get("return")
    return returned if isinstance(returned, type) and issubclass(returned, Command) else None


def _check_sends(step: Step[Any, Any] | Child[Any]) -> None:
    """A step's declared command types against what its builders say they return."""
    pairs: list[tuple[str, type[Command] | None, Callable[..., Any] | None]] = [
        ("compensation", step.compensation_sends, step.compensation)
    ]
    if isinstance(step, Step):
        pairs.insert(0, ("command", step.sends, step.command))
    for what, declared, build in pairs:
        if declared is not None and declared.kind is not MessageKind.COMMAND:
            raise DefinitionError(f"step {step.name!r}: {declared.__name__} is no command")
        annotated = _declared_sends(build) if build is not None else None
        if declared is not None and annotated is not None and not issubclass(annotated, declared):
            raise DefinitionError(
                f"step {step.name!r}: its {what} is declared to send {declared.message_type}, "
                f"but returns {annotated.__name__}"
            )
        if declared is None and annotated is not None:
            field_name = "sends" if what == "command" else "compensation_sends"
            object.__setattr__(step, field_name, annotated)  # frozen: completed once, here


def _check_member(step: Member[Any], names: list[str], grouped: bool) -> None:
    if isinstance(step, Wait):
        if step.event.kind is not MessageKind.EVENT:
            raise DefinitionError(f"step {step.name!r}: {step.event.__name__} is not an event")
        return
    if step.compensation is not None and not step.compensated_on:
        raise DefinitionError(
            f"step {step.name!r} has a compensation but no reply that confirms it"
        )
    if step.compensation_max_attempts < 1:
        raise DefinitionError(f"step {step.name!r}: attempts must be at least 1")
    for reply in step.reply_types():
        if reply.kind is not MessageKind.REPLY:
            raise DefinitionError(f"step {step.name!r}: {reply.__name__} is not a reply")
    _check_sends(step)
    if isinstance(step, Child):
        if step.starts.kind is not MessageKind.EVENT:
            raise DefinitionError(f"step {step.name!r}: {step.starts.__name__} is not an event")
        return
    if not step.succeeds_on:
        raise DefinitionError(f"step {step.name!r} has no success reply type")
    if step.max_attempts < 1:
        raise DefinitionError(f"step {step.name!r}: attempts must be at least 1")
    if step.retry is not None:
        _check_retry(step)
    if step.branches and step.next is None:
        raise DefinitionError(f"step {step.name!r} declares branches but has no next")
    if grouped and step.next is not None:
        raise DefinitionError(f"step {step.name!r} is in a parallel group and cannot branch")
    unknown = [b for b in step.branches if b != END and b not in names]
    if unknown:
        raise DefinitionError(f"step {step.name!r} branches to unknown steps {unknown}")


LOCK_FIELD = re.compile(r"{([^{}]*)}")
SAGA_NAME = re.compile(r"^[a-z][a-z0-9_]{0,59}$")


def _has_field(model: type[BaseModel], path: str) -> bool:
    """Whether ``path`` (``customer_id``, ``order.customer_id``) names a field of ``model``.

    Nested fields are followed while they are models; past a field of another type (a
    union, say) the rest of the path is taken on trust."""
    current: Any = model
    for name in path.split("."):
        fields = getattr(current, "model_fields", None) if isinstance(current, type) else None
        if fields is None:
            return True
        if name not in fields:
            return False
        current = fields[name].annotation
    return True


@dataclass(frozen=True)
class SagaDefinition(Generic[D, S]):
    """A saga type: its start event, its data model, its steps and its reactions."""

    name: str
    data_model: type[D]
    started_by: type[S] | tuple[type[S], ...]
    """The start event, or several (say ``.v1`` and ``.v2`` while publishers migrate)."""
    correlate: Callable[[S], str]
    initial_data: Callable[[S], D]
    steps: Sequence[StepBase[D] | Parallel[D]]
    reactions: Sequence[Reaction[D, Any]] = field(default_factory=tuple)
    version: int = 1
    """Each instance records the version it started on and continues on it; an app may
    register several versions of one name, the newest starting new sagas."""
    locks: tuple[str, ...] = ()
    """Entity lock keys, as templates over the saga's data: ``("customer:{customer_id}",)``
    (fields by name, nested ones as ``{order.customer_id}``). A saga holds its keys from
    start to final status; another needing one of them waits, first come first served, and
    takes its first step once it holds them all."""

    _stages: list[Stage[D]] = field(init=False, repr=False, compare=False)
    _flat: list[Member[D]] = field(init=False, repr=False, compare=False)
    _by_name: dict[str, tuple[Member[D], int]] = field(init=False, repr=False, compare=False)
    """Each step, by name, with the position of its stage: looked up on every message."""

    def __post_init__(self) -> None:
        if not SAGA_NAME.match(self.name):
            raise DefinitionError(
                f"saga name {self.name!r} must be lower-case letters, digits and '_', "
                "starting with a letter (at most 60): it is part of message types "
                "(saga.<name>.completed.v1) and queue bindings"
            )
        stages = [s if isinstance(s, Parallel) else _member(s) for s in self.steps]
        flat: list[Member[D]] = []
        for stage in stages:
            flat.extend(stage.members() if isinstance(stage, Parallel) else (stage,))
        by_name = {
            member.name: (member, position)
            for position, stage in enumerate(stages)
            for member in (stage.members() if isinstance(stage, Parallel) else (stage,))
        }
        for name, value in (("_stages", stages), ("_flat", flat), ("_by_name", by_name)):
            object.__setattr__(self, name, value)  # frozen: derived once, here
        if self.version < 1:
            raise DefinitionError(f"saga {self.name!r}: version must be at least 1")
        if not self.steps:
            raise DefinitionError(f"saga {self.name!r} has no steps")
        names = [s.name for s in self.all_steps()] + [
            g.name for g in self.steps if isinstance(g, Parallel)
        ]
        if len(set(names)) != len(names):
            raise DefinitionError(f"saga {self.name!r} has duplicate step names: {names}")
        if END in names:
            raise DefinitionError(f"saga {self.name!r}: {END!r} is reserved")
        stage_names = [s.name for s in self.steps]
        for stage in self.stages():
            if isinstance(stage, Parallel):
                if len(stage.steps) < 2:
                    raise DefinitionError(f"parallel group {stage.name!r} needs two steps or more")
                for member in stage.members():  # refuses a group in a group
                    _check_member(member, stage_names, grouped=True)
            else:
                _check_member(stage, stage_names, grouped=False)
        if not self.start_types:
            raise DefinitionError(f"saga {self.name!r} has no start event")
        handled = (
            [t.message_type for t in self.start_types]
            + [r.event.message_type for r in self.reactions]
            + [w.event.message_type for w in self.waits()]
        )
        if len(set(handled)) != len(handled):
            raise DefinitionError(f"saga {self.name!r}: an event type is handled twice")
        for template in self.locks:
            if not LOCK_FIELD.search(template):
                raise DefinitionError(
                    f"saga {self.name!r}: lock {template!r} names no field of the data"
                )
            unknown = [
                f for f in LOCK_FIELD.findall(template) if not _has_field(self.data_model, f)
            ]
            if unknown:
                raise DefinitionError(
                    f"saga {self.name!r}: lock {template!r} names unknown fields {unknown}"
                )

    @property
    def start_types(self) -> tuple[type[S], ...]:
        started = self.started_by
        return started if isinstance(started, tuple) else (started,)

    def all_steps(self) -> list[Member[D]]:
        """Every step, those of parallel groups included, in declaration order."""
        return self._flat

    def stages(self) -> list[Stage[D]]:
        """``steps``, as the engine reads them."""
        return self._stages

    def commands(self) -> list[Step[D, Any]]:
        return [s for s in self.all_steps() if isinstance(s, Step)]

    def waits(self) -> list[Wait[D, Any]]:
        return [s for s in self.all_steps() if isinstance(s, Wait)]

    def children(self) -> list[Child[D]]:
        return [s for s in self.all_steps() if isinstance(s, Child)]

    def step(self, name: str) -> Member[D]:
        found = self._by_name.get(name)
        if found is None:
            raise DefinitionError(f"saga {self.name!r} has no step {name!r}")
        return found[0]

    def stage(self, name: str) -> Stage[D]:
        """The stage a step is in: the step itself, or its parallel group."""
        return self._stages[self.index_of(name)]

    def index_of(self, name: str) -> int:
        """The position in ``steps`` of the stage a step (or group) is in."""
        found = self._by_name.get(name)
        if found is not None:
            return found[1]
        for position, stage in enumerate(self._stages):
            if stage.name == name:
                return position
        raise DefinitionError(f"saga {self.name!r} has no step {name!r}")

    def reaction_for(self, message_type: str) -> Reaction[D, Any] | None:
        for reaction in self.reactions:
            if reaction.event.message_type == message_type:
                return reaction
        return None

    def wait_for(self, message_type: str) -> Wait[D, Any] | None:
        for wait in self.waits():
            if wait.event.message_type == message_type:
                return wait
        return None

    def lock_keys(self, data: BaseModel) -> tuple[str, ...]:
        """The lock keys a saga with ``data`` takes, sorted and without repeats."""
        fields = {name: getattr(data, name) for name in type(data).model_fields}
        return tuple(sorted({template.format(**fields) for template in self.locks}))

    def reply_types(self) -> set[str]:
        return {
            r.message_type
            for s in self.all_steps()
            if not isinstance(s, Wait)
            for r in s.reply_types()
        }

    def event_types(self) -> set[str]:
        """The events this saga's coordinator receives: starts, reactions, waits, the end
        events of its children, and its own cancellation."""
        return {
            *(t.message_type for t in self.start_types),
            *(r.event.message_type for r in self.reactions),
            *(w.event.message_type for w in self.waits()),
            *(e.message_type for c in self.children() for e in end_events(c.saga)),
            cancel_event(self.name).message_type,
        }

    def message_models(self) -> set[type[Message]]:
        """Every model this saga receives or sends whose type is known statically."""
        models: set[type[Message]] = set(self.start_types)
        models.update(r.event for r in self.reactions)
        models.update(end_events(self.name))
        models.add(cancel_event(self.name))
        for step in self.all_steps():
            if isinstance(step, Wait):
                models.add(step.event)
                continue
            models.update(step.reply_types())
            models.update(m for m in (step.compensation_sends,) if m is not None)
            if isinstance(step, Step):
                models.update(m for m in (step.sends,) if m is not None)
            else:
                models.add(step.starts)
                models.update(end_events(step.saga))
                models.add(cancel_event(step.saga))
        return models

    def correlation_of(self, event: Event) -> str | None:
        """The correlation id an event of this saga carries; ``None`` for the end event of
        a saga no saga started (it concerns none of this type)."""
        if isinstance(event, self.start_types):
            return self.correlate(event)
        reaction = self.reaction_for(event.message_type)
        if reaction is not None:
            return reaction.correlate(event)
        wait = self.wait_for(event.message_type)
        if wait is not None:
            return wait.correlate(event)
        if isinstance(event, SagaEnded):
            return event.started_by.correlation_id if event.started_by is not None else None
        if isinstance(event, CancelRequested):
            return event.correlation_id
        raise DefinitionError(f"saga {self.name!r} does not handle {event.message_type!r}")
