"""Who sends and who receives each message type: the coordinator and the adapters.

Read off the saga definitions and the adapter declarations, so the contracts document what
the running system does rather than what someone remembered to write down. Steps must
declare the command models they build (``Step.sends``, ``Step.compensation_sends``) and
adapters the replies they return (``Adapter.handles(..., replies=...)``); a gap is a
``DefinitionError`` rather than a silently incomplete document.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from bus_orchestrator.core.definition import Child, SagaDefinition, Wait
from bus_orchestrator.core.lifecycle import cancel_event, end_events
from bus_orchestrator.core.messages import Message
from bus_orchestrator.errors import DefinitionError

if TYPE_CHECKING:  # only the declaration is read; the adapter kit's I/O stays unimported
    from bus_orchestrator.adapters.adapter import Adapter

COORDINATOR = "coordinator"


@dataclass(frozen=True)
class Participant:
    """One party on the bus and the message models it sends and receives (sorted by type)."""

    name: str
    description: str
    sends: tuple[type[Message], ...]
    receives: tuple[type[Message], ...]


def _sorted_unique(models: Iterable[type[Message]], owner: str) -> tuple[type[Message], ...]:
    by_type: dict[str, type[Message]] = {}
    for model in models:
        known = by_type.setdefault(model.message_type, model)
        if known is not model:
            raise DefinitionError(
                f"{owner}: {known.__name__} and {model.__name__} both claim type "
                f"{model.message_type!r}"
            )
    return tuple(by_type[t] for t in sorted(by_type))


def _coordinator(definitions: Iterable[SagaDefinition[Any, Any]]) -> Participant:
    sends: list[type[Message]] = []
    receives: list[type[Message]] = []
    names: list[str] = []
    for definition in definitions:
        names.append(definition.name)
        receives.extend(definition.start_types)
        receives.extend(r.event for r in definition.reactions)
        receives.append(cancel_event(definition.name))
        sends.extend(end_events(definition.name))
        for step in definition.all_steps():
            where = f"saga {definition.name!r}, step {step.name!r}"
            if isinstance(step, Wait):
                receives.append(step.event)
                continue
            if isinstance(step, Child):
                sends.extend((step.starts, cancel_event(step.saga)))
                receives.extend(end_events(step.saga))
            elif step.sends is None:
                raise DefinitionError(
                    f"{where}: declare the command model it sends (Step(sends=...)) "
                    "so its contract can be documented"
                )
            else:
                sends.append(step.sends)
            if step.compensation is not None:
                if step.compensation_sends is None:
                    raise DefinitionError(
                        f"{where}: has a compensation but no compensation_sends; declare the "
                        "command model the compensation sends (Step(compensation_sends=...))"
                    )
                sends.append(step.compensation_sends)
            receives.extend(step.reply_types())
    runs = ", ".join(sorted(set(names))) or "no sagas"  # a saga name once, for all versions
    return Participant(
        name=COORDINATOR,
        description=(
            f"The saga coordinator (runs {runs}): consumes, from its app's queue "
            "bus.<app>.coordinator, the events that start or affect a saga and the adapters' "
            "replies, and sends the steps' commands and compensations. It publishes each "
            "saga's end event (saga.<saga>.<status>.v1) and receives the requests to cancel "
            "one (saga.<saga>.cancel_requested.v1)."
        ),
        sends=_sorted_unique(sends, COORDINATOR),
        receives=_sorted_unique(receives, COORDINATOR),
    )


def _adapter(adapter: Adapter) -> Participant:
    receives: list[type[Message]] = []
    sends: list[type[Message]] = []
    for command_type in adapter.command_types:
        contract = adapter.registry.get(command_type)
        if contract is None:  # Adapter.register refuses this; kept for a clear message
            raise DefinitionError(
                f"adapter {adapter.name!r}: {command_type!r} is not in its contract registry"
            )
        receives.append(contract.model)
        replies = adapter.reply_models(command_type)
        if not replies:
            raise DefinitionError(
                f"adapter {adapter.name!r}: no replies declared for {command_type!r}; declare "
                "them with handles(..., replies=(...))"
            )
        sends.extend(replies)
    return Participant(
        name=adapter.name,
        description=(
            f"The {adapter.name} adapter: consumes its commands from its app's queue "
            f"bus.<app>.adapter.{adapter.name} and answers each with one reply."
        ),
        sends=_sorted_unique(sends, f"adapter {adapter.name!r}"),
        receives=_sorted_unique(receives, f"adapter {adapter.name!r}"),
    )


def participants_from(
    definitions: Iterable[SagaDefinition[Any, Any]], adapters: Iterable[Adapter]
) -> list[Participant]:
    """The coordinator (running ``definitions``), then one participant per adapter by name."""
    participants = [_coordinator(definitions)]
    participants += sorted((_adapter(a) for a in adapters), key=lambda p: p.name)
    names = [p.name for p in participants]
    if len(set(names)) != len(names):
        raise DefinitionError(f"participant names must be unique, got {names}")
    return participants
