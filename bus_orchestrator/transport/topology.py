"""Exchange and queue names and arguments, and their idempotent declaration.

Every name takes the configured prefix, so tests and tenants never see each other's
messages. The exchanges are shared by every application on the broker; the work queues are
an application's own (``bus.<app>.coordinator``, ``bus.<app>.adapter.<name>``), each bound
only to the types that app consumes, so several apps share one broker without receiving,
or dead-lettering, each other's traffic. Exchanges:

- ``bus.events``   (topic) business events, routing key = event type
- ``bus.commands`` (topic) commands to adapters, routing key = command type
- ``bus.replies``  (topic) adapter replies, routing key = reply type
- ``bus.dead``     (fanout) bad input and poison messages, with the reason in headers
- ``bus.unroutable`` (fanout) alternate exchange of the three above: what nobody is bound to

Besides the work queues, three shared queues: ``bus.dead`` and ``bus.unroutable`` (one per
fanout exchange), and ``bus.lifecycle``, a bounded feed of every saga's end event (see
``Topology.lifecycle_queue``).

The arguments of each declaration are data here (``exchanges``, ``queues``), so the AsyncAPI
document publishes exactly what the engine declares. A broker holding an exchange or queue
of the same name with other arguments refuses the declaration; that becomes one
``TopologyMismatchError`` naming the exchange or queue and the argument.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Literal, TypeVar

import aio_pika
from aio_pika.abc import AbstractChannel, AbstractQueue, ExchangeType
from aio_pika.exceptions import (
    AMQPError,
    ChannelInvalidStateError,
    ChannelNotFoundEntity,
    ChannelPreconditionFailed,
)
from aiormq.exceptions import (
    ChannelAccessRefused,
    InvalidFrameError,
    ProbableAuthenticationError,
)
from pamqp.common import FieldTable

from bus_orchestrator.core.lifecycle import ENDS
from bus_orchestrator.core.messages import EXCHANGES, MessageKind
from bus_orchestrator.errors import (
    BrokerRefusedError,
    BrokerUnavailableError,
    TopologyMismatchError,
)

T = TypeVar("T")

_INEQUIVALENT = re.compile(
    r"inequivalent arg '(?P<argument>[^']+)' for (?P<kind>exchange|queue) '(?P<name>[^']+)'"
    r"[^:]*:\s*(?P<detail>.*)$"
)


LIFECYCLE_KEYS = tuple(f"saga.*.{status}.v1" for status in ENDS)
"""The end events ``bus.lifecycle`` is bound to on ``bus.events`` (not the cancel requests:
one nobody handles must still reach ``bus.unroutable``)."""
LIFECYCLE_MAX_LENGTH = 100_000
"""The most end events ``bus.lifecycle`` keeps; the oldest is dropped for a new one."""
LIFECYCLE_TTL_MS = 7 * 24 * 60 * 60 * 1000
"""How long ``bus.lifecycle`` keeps an end event (7 days, in milliseconds)."""


@dataclass(frozen=True, slots=True)
class ExchangeSpec:
    """One exchange as the engine declares it (always durable, never auto-deleted)."""

    name: str
    type: Literal["topic", "fanout"]
    arguments: dict[str, str | int] = field(default_factory=dict)
    purpose: str = ""


@dataclass(frozen=True, slots=True)
class QueueSpec:
    """One queue as the engine declares it (always durable), and what it is bound to."""

    name: str
    arguments: dict[str, str | int]
    bindings: tuple[tuple[str, str], ...] = ()
    purpose: str = ""


@dataclass(frozen=True, slots=True)
class Topology:
    prefix: str = ""
    delivery_limit: int = 20

    @property
    def events(self) -> str:
        return self.prefix + EXCHANGES[MessageKind.EVENT]

    @property
    def commands(self) -> str:
        return self.prefix + EXCHANGES[MessageKind.COMMAND]

    @property
    def replies(self) -> str:
        return self.prefix + EXCHANGES[MessageKind.REPLY]

    @property
    def dead(self) -> str:
        return f"{self.prefix}bus.dead"

    @property
    def unroutable(self) -> str:
        return f"{self.prefix}bus.unroutable"

    @property
    def lifecycle(self) -> str:
        return f"{self.prefix}bus.lifecycle"

    def exchange_for(self, kind: MessageKind) -> str:
        return {
            MessageKind.EVENT: self.events,
            MessageKind.COMMAND: self.commands,
            MessageKind.REPLY: self.replies,
        }[kind]

    def queue(self, name: str) -> str:
        return f"{self.prefix}bus.{name}"

    def coordinator_queue(self, app: str | None) -> str:
        """The work queue of an app's coordinators: ``bus.<app>.coordinator``.

        Without an app (the engine used with no ``App``), ``bus.coordinator``.
        """
        return self.queue("coordinator" if app is None else f"{app}.coordinator")

    def adapter_queue(self, app: str | None, adapter: str) -> str:
        """The work queue of one adapter of an app: ``bus.<app>.adapter.<adapter>``.

        Without an app, ``bus.adapter.<adapter>``.
        """
        return self.queue(f"adapter.{adapter}" if app is None else f"{app}.adapter.{adapter}")

    def exchanges(self) -> tuple[ExchangeSpec, ...]:
        """The shared exchanges, in the order they are declared (alternates first)."""
        alternate: dict[str, str | int] = {"alternate-exchange": self.unroutable}
        return (
            ExchangeSpec(self.dead, "fanout", purpose="bad input and poison messages"),
            ExchangeSpec(
                self.unroutable, "fanout", purpose="whatever no queue is bound to receive"
            ),
            ExchangeSpec(self.events, "topic", alternate, "business events"),
            ExchangeSpec(self.commands, "topic", alternate, "commands to adapters"),
            ExchangeSpec(self.replies, "topic", alternate, "adapter replies"),
        )

    def parking_queues(self) -> tuple[QueueSpec, ...]:
        """``bus.dead`` and ``bus.unroutable``: the queues of the two fanout exchanges."""
        arguments: dict[str, str | int] = {"x-queue-type": "quorum"}
        return (
            QueueSpec(self.dead, arguments, ((self.dead, ""),), "dead letters, with a reason"),
            QueueSpec(self.unroutable, arguments, ((self.unroutable, ""),), "unroutable messages"),
        )

    def lifecycle_queue(self) -> QueueSpec:
        """``bus.lifecycle``: the end events of every saga, bounded in number and age.

        Every saga publishes an end event; one that no system binds would otherwise go to
        ``bus.unroutable`` and pile up there. Here it is kept as a feed instead: the newest
        ``LIFECYCLE_MAX_LENGTH``, each for ``LIFECYCLE_TTL_MS`` at most, the oldest dropped
        first, so the queue never grows without bound and nobody need consume it. A system
        that must see every end event binds a queue of its own to the keys it wants.
        """
        arguments: dict[str, str | int] = {
            "x-queue-type": "quorum",
            "x-max-length": LIFECYCLE_MAX_LENGTH,
            "x-overflow": "drop-head",
            "x-message-ttl": LIFECYCLE_TTL_MS,
        }
        bindings = tuple((self.events, key) for key in LIFECYCLE_KEYS)
        days = LIFECYCLE_TTL_MS // (24 * 60 * 60 * 1000)
        purpose = (
            f"the end events of every saga, the newest {LIFECYCLE_MAX_LENGTH} for at most "
            f"{days} days (the oldest dropped first)"
        )
        return QueueSpec(self.lifecycle, arguments, bindings, purpose)

    def shared_queues(self) -> tuple[QueueSpec, ...]:
        """The queues every application shares, in the order they are declared."""
        return (*self.parking_queues(), self.lifecycle_queue())

    def work_queue_arguments(self) -> dict[str, str | int]:
        """The arguments of every queue a consumer of the engine takes work from."""
        return {
            "x-queue-type": "quorum",
            "x-delivery-limit": self.delivery_limit,
            "x-dead-letter-exchange": self.dead,
            "x-dead-letter-strategy": "at-least-once",
            "x-overflow": "reject-publish",
        }

    async def declare_exchanges(self, channel: AbstractChannel) -> None:
        """Declare the shared exchanges and queues (``shared_queues``), idempotently.

        Raises ``TopologyMismatchError`` when one exists with other arguments, and
        ``BrokerUnavailableError`` when the broker goes away meanwhile.
        """
        for exchange in self.exchanges():
            await _declaring(
                channel.declare_exchange(
                    exchange.name,
                    ExchangeType(exchange.type),
                    arguments=_table(exchange.arguments),
                    durable=True,
                )
            )
        for spec in self.shared_queues():
            queue = await _declaring(
                channel.declare_queue(spec.name, durable=True, arguments=_table(spec.arguments))
            )
            for exchange_name, routing_key in spec.bindings:
                await _declaring(queue.bind(exchange_name, routing_key=routing_key))

    async def declare_work_queue(
        self,
        channel: AbstractChannel,
        name: str,
        bindings: Iterable[tuple[str, str]],
    ) -> AbstractQueue:
        """A durable quorum queue bound to ``(exchange, routing_key)`` pairs.

        A message delivered ``delivery_limit`` times without being settled is dead-lettered
        by its consumer with the reason ``delivery-limit`` on the next delivery; should that
        fail too, the broker moves it to ``bus.dead`` itself (``x-first-death-reason:
        delivery_limit``), never drops it.
        """
        queue = await _declaring(
            channel.declare_queue(name, durable=True, arguments=_table(self.work_queue_arguments()))
        )
        for exchange, routing_key in bindings:
            await _declaring(queue.bind(exchange, routing_key=routing_key))
        return queue

    async def delete(self, channel: AbstractChannel, queues: Iterable[str] = ()) -> None:
        """Remove this prefix's exchanges and the given queues (used by tests and teardown)."""
        for name in (*queues, *(spec.name for spec in self.shared_queues())):
            await channel.queue_delete(name)
        for name in (self.events, self.commands, self.replies, self.dead, self.unroutable):
            await channel.exchange_delete(name)


def _table(arguments: dict[str, str | int]) -> FieldTable:
    return dict(arguments)


async def _declaring(declaration: Awaitable[T]) -> T:
    with declaration_errors():
        return await declaration


@contextmanager
def declaration_errors() -> Iterator[None]:
    """Turn the broker's refusals of a declaration into the engine's errors."""
    try:
        yield
    except ChannelPreconditionFailed as exc:
        raise mismatch(exc) from exc
    except (ChannelAccessRefused, ChannelNotFoundEntity) as exc:
        # Waiting would not help: the user may not declare it, or what it needs is gone.
        text = " ".join(str(arg) for arg in exc.args)
        raise TopologyMismatchError(f"RabbitMQ refused a declaration: {text}") from exc
    except (AMQPError, ChannelInvalidStateError, OSError, TimeoutError) as exc:
        raise BrokerUnavailableError(f"RabbitMQ went away during declarations: {exc!r}") from exc


def mismatch(exc: ChannelPreconditionFailed) -> TopologyMismatchError:
    """One line naming the exchange or queue and the argument the broker disagrees on."""
    text = " ".join(str(arg) for arg in exc.args)
    found = _INEQUIVALENT.search(text)
    if found is None:
        return TopologyMismatchError(f"RabbitMQ refused a declaration: {text}")
    kind, name, argument = found["kind"], found["name"], found["argument"]
    detail = found["detail"].strip().rstrip('"')
    sides = re.fullmatch(r"received (?P<ours>.*) but current is (?P<theirs>.*)", detail)
    if sides is not None:
        detail = f"the broker has {sides['theirs']}, the engine declares {sides['ours']}"
    return TopologyMismatchError(
        f"{kind} {name!r} exists on RabbitMQ with another {argument!r} than the engine "
        f"declares ({detail}); delete the {kind} or declare it as contracts/asyncapi.yaml "
        "says",
        kind=kind,
        name=name,
        argument=argument,
    )


async def connect(url: str, name: str = "") -> aio_pika.abc.AbstractRobustConnection:
    """A connection that reconnects, and re-declares its queues and consumers, by itself.

    ``name`` shows in RabbitMQ's connection list. Raises ``BrokerUnavailableError`` when the
    first connection cannot be made.
    """
    properties: FieldTable | None = {"connection_name": name} if name else None
    from bus_orchestrator.startup import quiet  # aiormq logs the failure too: one line is enough

    try:
        with quiet():
            return await aio_pika.connect_robust(url, client_properties=properties)
    except ProbableAuthenticationError as exc:
        raise BrokerRefusedError("credentials", str(exc)) from exc
    except InvalidFrameError as exc:
        # RabbitMQ answers Connection.Open with Connection.Close for a vhost that does not
        # exist or that the user may not use; aiormq keeps only that it was not OpenOk.
        if "Connection.Close" not in str(exc):
            raise BrokerUnavailableError(f"RabbitMQ is not reachable: {exc}") from exc
        raise BrokerRefusedError("vhost", str(exc)) from exc
    except (OSError, ConnectionError, TimeoutError, AMQPError) as exc:
        raise BrokerUnavailableError(f"RabbitMQ is not reachable: {exc}") from exc
