"""The pure saga core: definitions, instances and ``decide``. No I/O lives here."""

from bus_orchestrator.core.decide import (
    TIMER_MESSAGE_TYPE,
    Decision,
    Inbound,
    Outcome,
    Outgoing,
    TimerFired,
    decide,
    fail,
)
from bus_orchestrator.core.definition import END, Compensate, Reaction, SagaDefinition, Step
from bus_orchestrator.core.messages import (
    Command,
    Contract,
    ContractRegistry,
    Event,
    Message,
    MessageKind,
    Reply,
    Secret,
)
from bus_orchestrator.core.state import (
    Phase,
    SagaInstance,
    SagaStatus,
    StepRecord,
    StepStatus,
    command_id_for,
    saga_id_for,
)

__all__ = [
    "END",
    "TIMER_MESSAGE_TYPE",
    "Command",
    "Compensate",
    "Contract",
    "ContractRegistry",
    "Decision",
    "Event",
    "Inbound",
    "Message",
    "MessageKind",
    "Outcome",
    "Outgoing",
    "Phase",
    "Reaction",
    "Reply",
    "SagaDefinition",
    "SagaInstance",
    "SagaStatus",
    "Secret",
    "Step",
    "StepRecord",
    "StepStatus",
    "TimerFired",
    "command_id_for",
    "decide",
    "fail",
    "saga_id_for",
]
