"""Every error the engine raises on purpose.

BusOrchestratorError                 root; ``retryable`` says whether trying again may help
├── DefinitionError                  a saga definition is inconsistent (found at start-up)
├── InvalidMessageError              bad input: dead-lettered with ``reason`` and ``detail``
├── ConcurrencyConflictError         the saga changed under us; reload and decide again
├── StoreUnavailableError            Postgres is unreachable or timed out (retryable)
├── BrokerUnavailableError           RabbitMQ is unreachable or timed out (retryable)
├── ServiceRefusedError              Postgres or RabbitMQ answered and refused the settings
│   ├── StoreRefusedError            wrong user or password, or no such database
│   └── BrokerRefusedError           wrong user or password, or no such vhost (or no access)
├── SagaNotFoundError                no saga with that id or correlation id
├── TimerError                       a due timer cannot be fired here (e.g. unknown saga type)
├── AppLoadError                     an --app reference that names no application
├── SchemaNotMigratedError           the database lacks migrations this version needs
├── AppConflictError                 another app on the database runs a saga type of this one
├── DefinitionVersionError           running sagas need a version of their definition that
│                                    this app does not register
├── ContractCheckError               contracts cannot be compared (unknown ref, bad schema file)
├── TopologyMismatchError            RabbitMQ refuses to declare an exchange or queue as the
│                                    engine does (it exists with other arguments, or access)
└── AdapterError                     raised by command handlers in an adapter
    ├── TransientAdapterError        the external system may succeed later (retryable)
    └── PermanentAdapterError        it will not; the command is dead-lettered
"""

from __future__ import annotations

from enum import StrEnum


class BusOrchestratorError(Exception):
    """Root of the engine's errors."""

    retryable: bool = False


class DefinitionError(BusOrchestratorError):
    """A saga definition is inconsistent."""


class DeadLetterReason(StrEnum):
    """Why a message was dead-lettered; carried in the ``x-dead-reason`` header."""

    MALFORMED = "malformed"
    NOT_CLOUDEVENT = "not-a-cloudevent"
    MISSING_ATTRIBUTES = "missing-attributes"
    UNKNOWN_TYPE = "unknown-type"
    SCHEMA = "schema-violation"
    OVERSIZED = "oversized"
    HANDLER_ERROR = "handler-error"
    DELIVERY_LIMIT = "delivery-limit"
    EXPIRED = "expired"
    """An event kept for a saga that did not start within its time to live."""


class InvalidMessageError(BusOrchestratorError):
    """A message the engine cannot accept. It is dead-lettered, never retried."""

    def __init__(self, reason: DeadLetterReason, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


class ConcurrencyConflictError(BusOrchestratorError):
    """The saga row changed between load and write."""

    retryable = True


class StoreUnavailableError(BusOrchestratorError):
    """The saga store cannot be reached."""

    retryable = True


class BrokerUnavailableError(BusOrchestratorError):
    """The message broker cannot be reached."""

    retryable = True


class ServiceRefusedError(BusOrchestratorError):
    """The service answered, and refused what the settings ask: waiting will not help.

    ``problem`` is ``"credentials"``, ``"database"`` or ``"vhost"``; ``detail`` is the
    service's own words.
    """

    def __init__(self, problem: str, detail: str) -> None:
        super().__init__(f"{problem}: {detail}")
        self.problem = problem
        self.detail = detail


class StoreRefusedError(ServiceRefusedError):
    """Postgres refused the login: an unknown role, a wrong password, no such database."""


class BrokerRefusedError(ServiceRefusedError):
    """RabbitMQ refused the login or the vhost."""


class SagaNotFoundError(BusOrchestratorError):
    """No saga matches the given id or correlation id."""


class TimerError(BusOrchestratorError):
    """A due timer this process cannot fire, e.g. of a saga type it has no definition of.

    The timer loop backs off and tries again; after its attempts, the saga is failed.
    """


class AppLoadError(BusOrchestratorError):
    """An ``--app`` reference that does not lead to an application object."""


class SchemaNotMigratedError(BusOrchestratorError):
    """The database schema lacks migrations this version needs."""


class AppConflictError(BusOrchestratorError):
    """Another application on the same database runs a saga type this one defines: the two
    would share that type's sagas, timers and parked events."""


class DefinitionVersionError(BusOrchestratorError):
    """Running sagas need a version of their definition this app does not register.

    At start-up the coordinator refuses to run; on a message (a saga started by a newer
    coordinator during a rolling deploy) the message goes back to the queue for a
    coordinator that has the version."""


class ContractCheckError(BusOrchestratorError):
    """Contracts cannot be compared: an unknown git ref, no schemas there, a bad schema file."""


class TopologyMismatchError(BusOrchestratorError):
    """RabbitMQ refuses to declare an exchange or queue as the engine does.

    Mostly because one of that name exists with other arguments (then ``kind``, ``name``
    and ``argument`` say which), else because the user may not declare it. Not retryable:
    an operator must delete it, grant access, or change the engine's settings.
    """

    def __init__(self, message: str, *, kind: str = "", name: str = "", argument: str = "") -> None:
        super().__init__(message)
        self.kind = kind
        self.name = name
        self.argument = argument


class AdapterError(BusOrchestratorError):
    """Raised by an adapter's command handler."""


class TransientAdapterError(AdapterError):
    """The external system failed in a way that may pass; the call is retried."""

    retryable = True


class PermanentAdapterError(AdapterError):
    """The external system refused the call for good; no reply can be produced."""
