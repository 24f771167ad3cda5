"""The bodies of the HTTP API's responses, errors included, as ``/openapi.json`` shows them.

A saga is the object ``sagas show --json`` prints (``views.saga_view``): times are its ISO
8601 strings, unchanged.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, Field

from bus_orchestrator.core.state import SagaStatus, StepStatus

Time = Annotated[str, Field(json_schema_extra={"format": "date-time"})]
"""An ISO 8601 time with its offset, as ``datetime.isoformat`` writes it."""


class ErrorBody(BaseModel):
    """Every refusal but a request's validation (422, FastAPI's own shape)."""

    error: Literal[
        "unauthorized",
        "forbidden",
        "not_found",
        "ambiguous",
        "unavailable",
        "invalid",
        "not_an_event",
        "key_reused",
        "too_large",
        "refused",
    ]
    detail: str


class Caller(BaseModel):
    """Who holds the token (the name repairs are recorded by) and its role."""

    name: str
    role: Literal["reader", "operator"]


class SagaRef(BaseModel):
    saga_id: str
    saga_type: str
    correlation_id: str
    status: SagaStatus
    created_at: Time


class AmbiguousBody(ErrorBody):
    """A correlation id that several sagas (of different types) share: name one of
    ``candidates`` by its saga id, or as ``{saga_type}/{correlation_id}``."""

    candidates: list[SagaRef]


class StepView(BaseModel):
    name: str
    group: str | None
    status: StepStatus
    command_type: str
    command_id: str
    attempts: int
    tries: int
    retry_at: Time | None
    deadline: Time | None
    cancel_requested_at: Time | None
    started_at: Time
    finished_at: Time | None
    error: str | None
    compensation_type: str | None
    compensation_attempts: int
    compensated_at: Time | None


class AwaitedView(BaseModel):
    step: str
    kind: Literal["reply", "event", "child", "retry", "compensation", "operator", "step"]
    """What answers it: a ``reply`` to its command, the ``event`` a wait waits for, a
    ``child`` saga's end, a ``retry`` sent at ``until``, the reply to its ``compensation``,
    or an ``operator`` (it holds a suspended saga)."""
    message_type: str | None
    message_id: str | None
    """The id of the command (or event) the answer is to."""
    until: Time | None


class AwaitingView(BaseModel):
    """What a saga that has not ended waits for."""

    kind: Literal["steps", "compensation", "locks", "operator", "nothing"]
    until: Time | None
    """When its timer fires (the earliest deadline of the items)."""
    items: list[AwaitedView]


Repairs = Literal["retry", "skip", "abort", "resume"]


class SagaSummary(BaseModel):
    """A saga as ``sagas list --json`` shows it."""

    saga_id: str
    saga_type: str
    correlation_id: str
    status: SagaStatus
    version: int
    """The stored row's version (optimistic concurrency), not the definition's."""
    definition_version: int
    created_at: Time
    updated_at: Time
    failure: str | None
    awaiting: AwaitingView | None
    """What it waits for, until when; ``null`` once it has ended."""
    repairs: list[Repairs]
    """The repairs its state allows now (``POST /sagas/{id}/<repair>``)."""
    in_flight: list[str]
    """The steps awaiting their reply."""
    deadline: Time | None
    early_events: list[str]
    started_by: dict[str, Any] | None
    trace_id: str | None
    jaeger_url: str | None
    steps: list[StepView]
    data: dict[str, Any] | None
    """The saga's data, its secret fields masked; ``null`` for a saga type this app does
    not define (nothing says which of its fields are secret)."""


class HeldLockView(BaseModel):
    key: str
    since: Time


class AwaitedLockView(BaseModel):
    key: str
    place: int
    """1: next in line."""
    holder: str | None
    """The saga id holding the key now, if any."""
    since: Time


class LocksView(BaseModel):
    keys: list[str]
    waiting: bool
    held: list[HeldLockView]
    awaited: list[AwaitedLockView]


class SagaDetail(SagaSummary):
    """A saga as ``sagas show --json`` shows it, with its entity locks (none: empty)."""

    locks: LocksView


class SagaPage(BaseModel):
    items: list[SagaSummary]
    next: str | None
    """Pass as ``cursor`` for the next page; ``null`` on the last one."""


class HistoryEntryView(BaseModel):
    at: Time
    direction: Literal["in", "out"]
    message_id: str
    message_type: str
    """A message's type; ``bus.operator.<repair>`` for an operator's repair, whose
    ``payload`` says who (``by``) and why (``reason``)."""
    correlation_id: str | None
    causation_id: str | None
    outcome: str
    note: str
    trace_id: str | None
    """The trace of the work that wrote the entry, when tracing was on."""
    payload: dict[str, Any]
    """The message's data, secret fields masked."""


class SagaHistory(BaseModel):
    saga_id: str
    saga_type: str
    correlation_id: str
    trace_id: str | None
    """The saga's trace: every message in and out of it belongs to it."""
    entries: list[HistoryEntryView]
    """Oldest first."""


class StatusCount(BaseModel):
    saga_type: str
    status: SagaStatus
    count: int


class OldestRunningView(BaseModel):
    saga_type: str
    saga_id: str
    correlation_id: str
    status: SagaStatus
    created_at: Time


class Stats(BaseModel):
    counts: list[StatusCount]
    """By saga type, then status; a status no saga has is left out."""
    oldest_running: list[OldestRunningView]
    """Per saga type, its unfinished (running or compensating) saga that started first."""


class Health(BaseModel):
    status: Literal["ok"]


class Readiness(BaseModel):
    status: Literal["ready", "not ready"]
    checks: dict[str, str]
    """``postgres``, ``migrations`` and ``rabbitmq``: ``ok``, or why not."""
