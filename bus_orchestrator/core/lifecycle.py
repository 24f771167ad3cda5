"""The engine's own events about sagas: a saga's end, and a request to cancel one.

Every saga publishes one end event on ``bus.events`` when it reaches a final status:
``saga.<type>.completed.v1``, ``saga.<type>.compensated.v1`` or ``saga.<type>.failed.v1``.
Any system may react to them; a parent saga learns from them how its child ended. Any
system may cancel a running saga by publishing ``saga.<type>.cancel_requested.v1`` with its
correlation id: the saga compensates what it did, as on a ``Compensate`` reaction.

The models are made per saga type, once, so each type string has one model.
"""

from __future__ import annotations

import functools
from typing import Annotated, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field

from bus_orchestrator.core.messages import Event

M = TypeVar("M", bound=Event)

ENDS = ("completed", "compensated", "failed")
"""The final statuses, each with an end event."""
MAX_REASON_CHARS = 1000


class StartedBy(BaseModel):
    """The event that started a saga: its id, and the ``correlationid`` attribute it carried.

    A saga that starts a child publishes the child's start event with its own correlation
    id in that attribute and its step's id as the event id, so the child's end event finds
    its way back to the step."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    message_id: Annotated[str, Field(min_length=1, max_length=200)]
    correlation_id: Annotated[str, Field(min_length=1, max_length=200)] | None = None


class SagaEnded(Event):
    """A saga reached a final status (``status``; ``reason`` says why when not completed)."""

    saga_id: Annotated[str, Field(min_length=1, max_length=200)]
    saga_type: Annotated[str, Field(min_length=1, max_length=200)]
    correlation_id: Annotated[str, Field(min_length=1, max_length=200)]
    status: Literal["completed", "compensated", "failed"]
    reason: Annotated[str, Field(max_length=MAX_REASON_CHARS)] | None = None
    started_by: StartedBy | None = None


class CancelRequested(Event):
    """Someone asks a running saga to stop and undo what it did."""

    correlation_id: Annotated[str, Field(min_length=1, max_length=200)]
    reason: Annotated[str, Field(min_length=1, max_length=MAX_REASON_CHARS)]


def _camel(saga_type: str) -> str:
    return "".join(part.capitalize() for part in saga_type.replace("-", "_").split("_"))


def _model(base: type[M], name: str, message_type: str, doc: str) -> type[M]:
    """A subclass of ``base`` for one saga type's ``message_type``."""
    namespace = {"__module__": __name__, "message_type": message_type, "__doc__": doc}
    return type(name, (base,), namespace)


@functools.cache
def end_event(saga_type: str, status: str) -> type[SagaEnded]:
    """The model of ``saga.<saga_type>.<status>.v1``."""
    if status not in ENDS:
        raise ValueError(f"{status!r} is not a final status")
    name = f"{_camel(saga_type)}{status.capitalize()}"
    doc = (
        f"The {saga_type} saga with this correlation id ended {status}.\n\n"
        "The engine publishes it once per saga, on `bus.events` with the type as routing "
        "key. `started_by` names the event that started the saga (its `id`, and its "
        "`correlationid` attribute: the parent saga's, for a child saga); `reason` says why "
        "when the saga did not complete. The queue `bus.lifecycle` keeps the newest of "
        "these for a while; bind a queue of your own to react to them."
    )
    return _model(SagaEnded, name, f"saga.{saga_type}.{status}.v1", doc)


def end_events(saga_type: str) -> tuple[type[SagaEnded], ...]:
    return tuple(end_event(saga_type, status) for status in ENDS)


@functools.cache
def cancel_event(saga_type: str) -> type[CancelRequested]:
    """The model of ``saga.<saga_type>.cancel_requested.v1``."""
    name = f"{_camel(saga_type)}CancelRequested"
    doc = (
        f"Asks the {saga_type} saga with this correlation id to compensate and stop.\n\n"
        "Publish it on `bus.events` with the type as routing key. A running saga sends no "
        "more forward commands, awaits those in flight, compensates what it did (newest "
        "first) and ends `compensated` (`failed`, should a compensation fail); a finished "
        "saga ignores it. A request for a saga that has not started yet is kept until it "
        "starts, and dead-lettered with the reason `expired` if it does not start within "
        "`BUS_PARK_TTL_SECONDS`."
    )
    return _model(CancelRequested, name, f"saga.{saga_type}.cancel_requested.v1", doc)
