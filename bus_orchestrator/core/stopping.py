"""Stopping a saga for an operator, and what a finished saga keeps at rest."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from pydantic import ValidationError

from bus_orchestrator.core.decision import Outgoing
from bus_orchestrator.core.definition import SagaDefinition
from bus_orchestrator.core.lifecycle import MAX_REASON_CHARS, end_event
from bus_orchestrator.core.messages import REDACT_SECRETS, validation_errors
from bus_orchestrator.core.state import ID_NAMESPACE, SagaInstance, SagaStatus

MAX_ERROR_CHARS = 1000


def fail(instance: SagaInstance, reason: str, now: datetime) -> SagaInstance:
    """The saga stopped for an operator: nothing awaited, no deadline armed, the reason kept.

    For what ``decide`` cannot handle itself, e.g. a timer of a saga type no longer
    registered, or one that kept failing. The data is kept as it is, secrets included:
    ``resume`` compensates with it; it is masked when the saga ends compensated.
    """
    return instance.model_copy(
        update={
            "status": SagaStatus.FAILED,
            "failure": reason,
            "current": None,
            "pending_command_id": None,
            "deadline": None,
            "to_compensate": (),
            "waiting_for_locks": False,
            "early_events": {},  # kept for a wait it will never reach; they may hold secrets
            "version": instance.version + 1,
            "updated_at": now,
        }
    )


def at_rest(definition: SagaDefinition[Any, Any], data: dict[str, Any]) -> dict[str, Any]:
    """A finished saga's data as it is kept: ``Secret`` fields masked, as in its history.

    Raises ``pydantic.ValidationError`` when the data model refuses ``data``.
    """
    model = definition.data_model.model_validate(data)
    masked: dict[str, Any] = model.model_dump(mode="json", context=REDACT_SECRETS)
    return masked


def error_text(exc: BaseException) -> str:
    """A one-line account of an exception, without the input values it may quote."""
    text = validation_errors(exc) if isinstance(exc, ValidationError) else str(exc)
    return f"{type(exc).__name__}: {text}"[:MAX_ERROR_CHARS]


def end_of(before: SagaInstance | None, after: SagaInstance | None, cause: str) -> Outgoing | None:
    """The end event to send when a saga has just reached a final status, else ``None``.

    Its id is derived from the saga's, so the saga ends once on the bus however often the
    message that ended it is retried; a saga an operator resumed after it failed ends once
    more (``resumed``), with an id of its own."""
    if after is None or not after.status.terminal:
        return None
    if before is not None and before.status.terminal:
        return None
    model = end_event(after.saga_type, str(after.status))
    reason = after.failure[:MAX_REASON_CHARS] if after.failure else None
    ended = model(
        saga_id=after.saga_id,
        saga_type=after.saga_type,
        correlation_id=after.correlation_id,
        status=str(after.status),
        reason=reason,
        started_by=after.started_by,
    )
    again = f":{after.resumed}" if after.resumed else ""
    message_id = str(uuid.uuid5(ID_NAMESPACE, f"end:{after.saga_id}{again}"))
    return Outgoing(message_id, ended, after.correlation_id, cause)
