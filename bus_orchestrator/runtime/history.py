"""The audit record of a message received: one ``HistoryEntry`` line in its saga's history."""

from __future__ import annotations

from datetime import datetime

from bus_orchestrator.core.decide import Inbound, LocksGranted, TimerFired
from bus_orchestrator.core.messages import REDACT_SECRETS
from bus_orchestrator.core.repair import OperatorAction
from bus_orchestrator.ports import Direction, HistoryEntry

EngineMessage = Inbound | TimerFired | LocksGranted | OperatorAction
"""What the coordinator applies to a saga: a message from the bus, the engine's own, or an
operator's repair."""


def source_of(message: EngineMessage) -> str:
    """The source a message is known by in the inbox; the engine's own (timers, lock
    grants) have none."""
    return message.source if isinstance(message, Inbound) else ""


def entry_in(message: EngineMessage, outcome: str, note: str, now: datetime) -> HistoryEntry:
    """What a message was and what came of it; secret fields masked."""
    if isinstance(message, OperatorAction):
        reply = message.reply
        return HistoryEntry(
            direction=Direction.IN,
            message_id=message.message_id,
            message_type=message.message_type,
            correlation_id=None,
            causation_id=None,
            outcome=outcome,
            note=note,
            payload={
                "repair": str(message.repair),
                "by": message.by,
                "reason": message.reason,
                "step": message.step,
                "reply_type": reply.message_type if reply is not None else None,
                "reply": reply.model_dump(mode="json", context=REDACT_SECRETS) if reply else None,
            },
            at=now,
        )
    if isinstance(message, LocksGranted):
        return HistoryEntry(
            direction=Direction.IN,
            message_id=message.message_id,
            message_type=message.message_type,
            correlation_id=None,
            causation_id=None,
            outcome=outcome,
            note=note,
            payload={"saga_id": message.saga_id},
            at=now,
        )
    if isinstance(message, TimerFired):
        return HistoryEntry(
            direction=Direction.IN,
            message_id=message.message_id,
            message_type=message.message_type,
            correlation_id=None,
            causation_id=message.command_id,
            outcome=outcome,
            note=note,
            payload={"command_id": message.command_id, "due": message.due.isoformat()},
            at=now,
        )
    return HistoryEntry(
        direction=Direction.IN,
        message_id=message.message_id,
        message_type=message.message_type,
        correlation_id=message.correlation_id,
        causation_id=message.causation_id,
        outcome=outcome,
        note=note,
        payload=message.payload.model_dump(mode="json", context=REDACT_SECRETS),
        at=now,
    )
