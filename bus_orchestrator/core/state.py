"""The state of one saga instance, as stored between steps.

The instance is a frozen value: ``decide`` returns a new one. Nothing about a saga is kept
in memory between messages; the store holds this and only this.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from enum import StrEnum
from typing import Any

from pydantic import BaseModel, ConfigDict

from bus_orchestrator.core.lifecycle import StartedBy

# Fixed namespace for the engine's deterministic ids. Changing it changes every saga and
# command id derived from it, so it never changes.
ID_NAMESPACE = uuid.UUID("6f1d4c8e-3b0a-5e7f-9a26-1c5b7d2e8f40")


class SagaStatus(StrEnum):
    RUNNING = "running"
    COMPLETED = "completed"
    COMPENSATING = "compensating"
    COMPENSATED = "compensated"
    FAILED = "failed"
    """A compensation could not be done; an operator must look (``resume`` once fixed)."""
    SUSPENDED = "suspended"
    """A step whose definition says ``on_failure=OnFailure.SUSPEND`` failed or timed out:
    the saga holds, nothing undone, until an operator retries, skips or aborts."""

    @property
    def terminal(self) -> bool:
        return self in (SagaStatus.COMPLETED, SagaStatus.COMPENSATED, SagaStatus.FAILED)


class StepStatus(StrEnum):
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    TIMED_OUT = "timed_out"
    COMPENSATING = "compensating"
    COMPENSATED = "compensated"
    COMPENSATION_FAILED = "compensation_failed"


class Phase(StrEnum):
    FORWARD = "forward"
    COMPENSATION = "compensation"


class StepRecord(BaseModel):
    """One executed step, in the order the saga ran them."""

    model_config = ConfigDict(frozen=True)

    name: str
    status: StepStatus
    command_type: str
    command_id: str
    attempts: int
    """Sends of the current command (a resend on timeout reuses its id)."""
    started_at: datetime
    finished_at: datetime | None = None
    error: str | None = None
    compensation_type: str | None = None
    compensation_id: str | None = None
    compensation_attempts: int = 0
    compensated_at: datetime | None = None
    tries: int = 1
    """The attempt under the step's retry policy; each has its own ``command_id``."""
    retry_at: datetime | None = None
    """When the next attempt goes out, while the step waits out a transient failure."""
    group: str | None = None
    """The parallel group the step ran in, if any."""
    deadline: datetime | None = None
    """While the step is in flight: when its wait ends (its timeout, or its retry)."""
    cancel_requested_at: datetime | None = None
    """A child saga's step: when the saga asked the child to cancel."""


class SagaInstance(BaseModel):
    """A saga's whole state. ``data`` is the definition's data model in JSON form."""

    model_config = ConfigDict(frozen=True)

    saga_id: str
    saga_type: str
    correlation_id: str
    status: SagaStatus
    version: int
    """The stored row's version, for optimistic concurrency (not the definition's)."""
    definition_version: int = 1
    """The version of the saga's definition it started on, and continues on."""
    data: dict[str, Any]
    steps: tuple[StepRecord, ...] = ()
    current: int | None = None
    """Index in ``steps`` of the step awaited (the first, when a parallel group has several
    in flight); ``None`` when nothing is awaited."""
    phase: Phase = Phase.FORWARD
    pending_command_id: str | None = None
    """The id of what the ``current`` step awaits an answer to."""
    deadline: datetime | None = None
    """The earliest deadline of the steps in flight: the saga's one timer."""
    to_compensate: tuple[int, ...] = ()
    """Indexes in ``steps`` still to compensate after the current one, next first."""
    cancel_reason: str | None = None
    """Set when a cancellation arrived while a step's reply was still awaited."""
    failure: str | None = None
    locks: tuple[str, ...] = ()
    """The entity lock keys the saga holds, or waits for, until its final status."""
    waiting_for_locks: bool = False
    """Started, but not yet holding all its ``locks``: no step has begun."""
    early_events: dict[str, dict[str, Any]] = {}
    """Events a later ``Wait`` step waits for that arrived before it began, by type."""
    started_by: StartedBy | None = None
    """The start event's id and ``correlationid``: named in the saga's end event."""
    resumed: int = 0
    """How often an operator resumed the saga after it failed: it ends once more each time,
    and its end event's id counts them."""
    trace_context: dict[str, str] = {}
    """Opaque W3C trace context of the saga's start, so all its work joins one trace."""
    created_at: datetime
    updated_at: datetime


def saga_id_for(saga_type: str, correlation_id: str) -> str:
    """The saga id is derived, so every copy of a start event names the same saga."""
    return str(uuid.uuid5(ID_NAMESPACE, f"saga:{saga_type}:{correlation_id}"))


def command_id_for(saga_id: str, step_index: int, phase: Phase, attempt: int = 1) -> str:
    """Resends of a command reuse its id, so adapters can deduplicate them.

    A retry after a transient failure is a new ``attempt`` with an id of its own (the
    adapter would replay its stored reply to the old one); attempt 1 keeps the id it
    always had.
    """
    suffix = "" if attempt == 1 else f":{attempt}"
    return str(uuid.uuid5(ID_NAMESPACE, f"command:{saga_id}:{step_index}:{phase}{suffix}"))
