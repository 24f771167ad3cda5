"""Declaring an adapter: the command types it handles, and the function for each.

An adapter is the engine's edge to one external system (a legacy service, a SaaS API). It
turns each command into a call on that system and the call's result into a reply::

    inventory = Adapter("inventory")

    @inventory.handles(ReserveStock)
    async def reserve(command: ReserveStock, ctx: CommandContext) -> StockReserved:
        result = await client.reserve(command.items, idempotency_key=ctx.idempotency_key)
        return StockReserved(order_id=command.order_id, reservation_id=result.id)

A handler raises ``TransientAdapterError`` when the system may succeed later (the call is
retried under the adapter's ``RetryPolicy``) and ``PermanentAdapterError`` when it will not
(the command is dead-lettered). A business refusal is not an error: it is a reply
(``StockUnavailable``). Running an adapter (dedup, retries, publishing) is done by
``CommandProcessor``; the declaration here does no I/O.

A compensating command can overtake the command it undoes (the saga gave up waiting for a
late reply). The kit then refuses that command should it arrive later, without calling the
handler, and answers it with the reply built by ``refuse``::

    @payments.handles(
        ChargePayment,
        replies=(PaymentCharged, PaymentDeclined),
        refuse=lambda command, reason: PaymentDeclined(order_id=command.order_id, reason=reason),
    )

Without ``refuse``, such a command is acknowledged with no reply and a warning in the log
(the saga, compensating already, awaits none). An adapter written without this kit must do
the same: see "Writing an adapter" in the README.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TypeVar

from bus_orchestrator.core.messages import (
    Command,
    ContractRegistry,
    Message,
    MessageKind,
    Reply,
)
from bus_orchestrator.errors import DefinitionError

C = TypeVar("C", bound=Command)
R = TypeVar("R", bound=Reply)


@dataclass(frozen=True, slots=True)
class CommandContext:
    """What a handler knows about the delivery besides the command itself."""

    adapter: str
    command_id: str
    command_type: str
    correlation_id: str | None
    causation_id: str | None
    received_at: datetime
    compensates: str | None = None
    """For a compensating command: the id of the command it undoes."""

    @property
    def idempotency_key(self) -> str:
        """The key to hand to the external system so a repeated call has no new effect.

        It is the command's id, which stays the same when the coordinator resends the
        command and when the broker redelivers it.
        """
        return self.command_id


CommandHandler = Callable[[C, CommandContext], Awaitable[R]]
"""``async def handler(command: SomeCommand, ctx: CommandContext) -> SomeReply``."""

Refusal = Callable[[C, str], Reply]
"""``(command, reason) -> failure reply``, for a command refused because a compensation of
it came first; ``reason`` says so in words."""

# The erased form the adapter stores; the result is checked at run time, since a handler
# written without type checking may return anything.
_AnyHandler = Callable[[Command, CommandContext], Awaitable[object]]
_AnyRefusal = Callable[[Command, str], object]

DEFAULT_CLAIM_LEASE = timedelta(minutes=5)


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """How a handler's ``TransientAdapterError`` is retried before giving the message back.

    Waits grow exponentially from ``initial_backoff`` up to ``max_backoff``, each with up
    to ``jitter`` seconds of random extra. Retrying stops after ``attempts`` calls, or
    before a wait would take the whole beyond ``max_total`` seconds; the command is then
    requeued, and the broker's delivery limit and the saga's step timeout take over.
    """

    attempts: int = 5
    initial_backoff: float = 0.2
    max_backoff: float = 5.0
    jitter: float = 0.2
    max_total: float = 15.0

    def __post_init__(self) -> None:
        if self.attempts < 1:
            raise ValueError("attempts must be at least 1")
        if min(self.initial_backoff, self.max_backoff, self.jitter, self.max_total) < 0:
            raise ValueError("backoffs, jitter and max_total must not be negative")


class Adapter:
    """A named set of command handlers, one per command type.

    The adapter's contract registry (what incoming commands are decoded with) holds the
    command models it handles and the replies it declares; a ``registry`` given instead
    must hold each command model handled. ``source`` is the CloudEvents source of this
    adapter's replies.

    ``claim_lease`` is how long a command's claim holds without renewal. A compensation of
    the command that comes while it is being handled waits for the outcome; the delivery
    renews the claim every third of the lease while its call lasts. A claim whose lease ran
    out with no outcome recorded (its delivery died and nothing redelivered it) no longer
    holds the compensation back. It must outlast the time a crashed process takes to get
    its deliveries back, and a stall of the process or of Postgres.
    """

    def __init__(
        self,
        name: str,
        registry: ContractRegistry | None = None,
        *,
        retry: RetryPolicy | None = None,
        source: str | None = None,
        claim_lease: timedelta = DEFAULT_CLAIM_LEASE,
    ) -> None:
        if not name or not all(ch.isalnum() or ch in "_-" for ch in name):
            raise DefinitionError(f"adapter name {name!r} must be letters, digits, '_' or '-'")
        self.name = name
        self._given = registry
        self.registry = registry if registry is not None else ContractRegistry()
        self.retry = retry or RetryPolicy()
        self.source = source or f"urn:bus-orchestrator:adapter:{name}"
        if claim_lease <= timedelta(0):
            raise DefinitionError("claim_lease must be positive")
        self.claim_lease = claim_lease
        self._handlers: dict[str, _AnyHandler] = {}
        self._replies: dict[str, tuple[type[Reply], ...]] = {}
        self._refusals: dict[str, _AnyRefusal] = {}

    def handles(
        self,
        model: type[C],
        *,
        replies: tuple[type[Reply], ...] = (),
        refuse: Refusal[C] | None = None,
    ) -> Callable[[CommandHandler[C, R]], CommandHandler[C, R]]:
        """Decorator registering the handler of ``model``; returns the handler unchanged.

        ``replies`` declares the reply types the handler may return: they are documented in
        the contracts, and any other reply is refused as a handler error. ``refuse`` builds
        the failure reply for a command a compensation overtook (one of ``replies``).
        """

        def decorate(handler: CommandHandler[C, R]) -> CommandHandler[C, R]:
            self.register(model, handler, replies=replies, refuse=refuse)
            return handler

        return decorate

    def register(
        self,
        model: type[C],
        handler: CommandHandler[C, R],
        *,
        replies: tuple[type[Reply], ...] = (),
        refuse: Refusal[C] | None = None,
    ) -> None:
        """Register ``handler`` for the commands of ``model`` (the non-decorator form)."""
        message_type = model.message_type
        for reply in replies:
            if reply.kind is not MessageKind.REPLY:
                raise DefinitionError(f"{reply.__name__} is not a reply")
        if model.kind is not MessageKind.COMMAND:
            raise DefinitionError(f"{message_type!r} is not a command")
        if self._given is None:
            known: tuple[type[Message], ...] = (model, *replies)
            for each in known:
                self.registry.register(each)
        contract = self.registry.get(message_type)
        if contract is None or contract.model is not model:
            raise DefinitionError(f"{message_type!r} is not in the adapter's contract registry")
        if message_type in self._handlers:
            raise DefinitionError(f"adapter {self.name!r} handles {message_type!r} twice")

        async def call(command: Command, ctx: CommandContext) -> object:
            if not isinstance(command, model):
                raise TypeError(f"expected {model.__name__}, got {type(command).__name__}")
            return await handler(command, ctx)

        self._handlers[message_type] = call
        self._replies[message_type] = replies
        if refuse is not None:

            def refusal(command: Command, reason: str) -> object:
                if not isinstance(command, model):
                    raise TypeError(f"expected {model.__name__}, got {type(command).__name__}")
                return refuse(command, reason)

            self._refusals[message_type] = refusal

    def message_models(self) -> set[type[Message]]:
        """The commands this adapter handles and the replies it declares."""
        models: set[type[Message]] = set()
        for command_type in self._handlers:
            contract = self.registry.get(command_type)
            assert contract is not None  # noqa: S101 - checked by register()
            models.add(contract.model)
            models.update(self._replies[command_type])
        return models

    @property
    def command_types(self) -> tuple[str, ...]:
        """The command types this adapter handles, sorted."""
        return tuple(sorted(self._handlers))

    def reply_models(self, command_type: str) -> tuple[type[Reply], ...]:
        """The reply types declared for ``command_type`` (empty when none were declared)."""
        return self._replies.get(command_type, ())

    def handles_type(self, command_type: str) -> bool:
        """Whether a handler is registered for ``command_type``."""
        return command_type in self._handlers

    def refuses_with_reply(self, command_type: str) -> bool:
        """Whether a failure reply (``refuse``) is declared for ``command_type``."""
        return command_type in self._refusals

    def refusal(self, command: Command, reason: str) -> Reply:
        """The failure reply to ``command``, refused because its compensation came first.

        Raises ``KeyError`` when no ``refuse`` is declared for its type, and ``TypeError``
        when ``refuse`` builds something that is not one of the declared replies.
        """
        return self._checked(command, self._refusals[command.message_type](command, reason))

    async def call(self, command: Command, ctx: CommandContext) -> Reply:
        """Run the handler of ``command`` once: no retries, no deduplication, no I/O of ours.

        Raises ``KeyError`` for a command type this adapter does not handle, and
        ``TypeError`` when the handler returns something that is not a ``Reply``.
        """
        return self._checked(command, await self._handlers[command.message_type](command, ctx))

    def _checked(self, command: Command, result: object) -> Reply:
        if not isinstance(result, Reply):
            raise TypeError(
                f"handler of {command.message_type} returned {type(result).__name__}, not a Reply"
            )
        declared = self._replies.get(command.message_type, ())
        if declared and not isinstance(result, declared):
            raise TypeError(
                f"handler of {command.message_type} returned {result.message_type}, "
                f"which it does not declare ({', '.join(r.message_type for r in declared)})"
            )
        return result
