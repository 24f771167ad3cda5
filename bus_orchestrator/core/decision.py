"""What ``decide`` takes and returns: the messages a saga meets, and its decision.

Plain frozen values: ``Inbound`` (a validated event or reply), ``TimerFired`` (a deadline
passed), ``CommandRefused`` (a command that cannot be sent), ``Outgoing`` (a command to
send) and ``Decision``.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum

from bus_orchestrator.core.messages import Command, Event, Message
from bus_orchestrator.core.state import SagaInstance

TIMER_MESSAGE_TYPE = "bus.saga_timer_fired"
COMMAND_REFUSED_TYPE = "bus.command_refused"
LOCKS_GRANTED_TYPE = "bus.saga_locks_granted"


@dataclass(frozen=True, slots=True)
class Inbound:
    """A validated event or reply, as the core sees it."""

    message_id: str
    payload: Message
    correlation_id: str | None = None
    causation_id: str | None = None
    source: str = ""
    """The CloudEvents ``source``: a message id is unique only together with it."""
    compensates: str | None = None
    """On a compensating command: the id of the command it undoes."""

    @property
    def message_type(self) -> str:
        return self.payload.message_type


@dataclass(frozen=True, slots=True)
class TimerFired:
    """The deadline of the command a saga awaits has passed."""

    saga_id: str
    command_id: str
    due: datetime

    @property
    def message_id(self) -> str:
        return f"timer:{self.command_id}:{self.due.isoformat()}"

    @property
    def message_type(self) -> str:
        return TIMER_MESSAGE_TYPE


@dataclass(frozen=True, slots=True)
class CommandRefused:
    """A command a decision built cannot be sent (say, it is over the message size limit).

    The step that sends it fails at once with ``reason``, as if its adapter had refused it.
    ``cause`` is the id of the message whose decision built the command.
    """

    saga_id: str
    command_id: str
    reason: str
    cause: str

    @property
    def message_id(self) -> str:
        return self.cause

    @property
    def message_type(self) -> str:
        return COMMAND_REFUSED_TYPE


@dataclass(frozen=True, slots=True)
class LocksGranted:
    """A saga that waited for its entity locks now holds them all: it may take its first
    step. The store grants locks; this tells the saga."""

    saga_id: str

    @property
    def message_id(self) -> str:
        return f"locks:{self.saga_id}"

    @property
    def message_type(self) -> str:
        return LOCKS_GRANTED_TYPE


@dataclass(frozen=True, slots=True)
class Outgoing:
    """A message to send (a command, or an event: a child's start, the saga's end), with
    the ids that tie it to the saga and its cause."""

    message_id: str
    payload: Command | Event
    correlation_id: str
    causation_id: str
    compensates: str | None = None
    """Set on a compensating command: the id of the forward command it undoes, so an
    adapter that never saw that command can refuse it should it arrive later."""


class Outcome(StrEnum):
    STARTED = "started"
    ADVANCED = "advanced"
    IGNORED = "ignored"
    FAILED = "failed"
    """The saga's own code raised: the saga is stopped in ``failed`` for an operator."""


@dataclass(frozen=True, slots=True)
class Decision:
    """What to do with one message: the new state (if any), what to send, and why."""

    outcome: Outcome
    note: str
    instance: SagaInstance | None = None
    send: tuple[Outgoing, ...] = ()
    error: Exception | None = None
    """What the saga's own code raised (outcome ``FAILED``), for the runtime to log."""

    @property
    def timer(self) -> datetime | None:
        """The deadline to arm; it replaces any earlier one of this saga."""
        return self.instance.deadline if self.instance is not None else None
