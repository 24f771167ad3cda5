"""Message models and the contract registry.

A message model is a frozen pydantic model that names its stable, dotted, versioned type
string (``payments.charge_payment.v1``) in ``message_type``. The type string is the contract;
it is never derived from the Python class path.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Annotated, Any, ClassVar

from pydantic import BaseModel, ConfigDict, PlainSerializer, SecretStr, SerializationInfo

REDACTED = "**********"
REDACT_SECRETS = {"redact_secrets": True}
"""Serialization context under which ``Secret`` fields come out masked (audit history)."""


def _secret_value(value: SecretStr, info: SerializationInfo) -> str:
    context = info.context
    if isinstance(context, dict) and context.get("redact_secrets"):
        return REDACTED
    return value.get_secret_value()


Secret = Annotated[SecretStr, PlainSerializer(_secret_value, return_type=str, when_used="json")]
"""Message content marked secret: sent in clear to whoever needs it (the JSON on the wire),
masked everywhere else: ``repr``, logs, span attributes, and the saga's audit history."""


class MessageKind(StrEnum):
    """What a message is for; decides the exchange it travels on."""

    EVENT = "event"
    COMMAND = "command"
    REPLY = "reply"


EXCHANGES: dict[MessageKind, str] = {
    MessageKind.EVENT: "bus.events",
    MessageKind.COMMAND: "bus.commands",
    MessageKind.REPLY: "bus.replies",
}
"""The exchange each kind of message travels on (before any deployment prefix)."""


class Message(BaseModel):
    """Base of every message model: frozen, and strict about unknown fields on input."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    message_type: ClassVar[str]
    kind: ClassVar[MessageKind]


class Event(Message):
    """A business fact, named in the past tense (``OrderPlaced``)."""

    kind: ClassVar[MessageKind] = MessageKind.EVENT


class Command(Message):
    """A request to an adapter, named in the imperative (``ChargePayment``)."""

    kind: ClassVar[MessageKind] = MessageKind.COMMAND


class Reply(Message):
    """An adapter's answer to a command (``PaymentCharged``, ``PaymentDeclined``)."""

    kind: ClassVar[MessageKind] = MessageKind.REPLY


@dataclass(frozen=True, slots=True)
class Contract:
    """One registered message type."""

    message_type: str
    model: type[Message]
    kind: MessageKind
    version: int

    @property
    def exchange(self) -> str:
        return EXCHANGES[self.kind]

    @property
    def family(self) -> str:
        """The type without its version: ``orders.order_placed`` for ``...order_placed.v2``."""
        return self.message_type.rsplit(".", 1)[0]


def _version_of(message_type: str) -> int:
    last = message_type.rsplit(".", 1)[-1]
    if len(message_type.split(".")) < 3 or not last.startswith("v") or not last[1:].isdigit():
        raise ValueError(
            f"message type {message_type!r} must be dotted and versioned, "
            "e.g. 'orders.order_placed.v1'"
        )
    return int(last[1:])


class ContractRegistry:
    """Maps each type string to its model, kind and version."""

    def __init__(self, models: Iterable[type[Message]] = ()) -> None:
        self._by_type: dict[str, Contract] = {}
        for model in models:
            self.register(model)

    def register(self, model: type[Message]) -> None:
        message_type = model.message_type
        existing = self._by_type.get(message_type)
        if existing is not None and existing.model is not model:
            raise ValueError(f"message type {message_type!r} is registered twice")
        self._by_type[message_type] = Contract(
            message_type, model, model.kind, _version_of(message_type)
        )

    def get(self, message_type: str) -> Contract | None:
        return self._by_type.get(message_type)

    def __contains__(self, message_type: object) -> bool:
        return message_type in self._by_type

    def __iter__(self) -> Any:
        return iter(sorted(self._by_type.values(), key=lambda c: c.message_type))

    def parse(self, message_type: str, data: Mapping[str, Any] | Any) -> Message:
        """Validate ``data`` against the registered model.

        Raises ``KeyError`` for an unknown type and ``pydantic.ValidationError`` for bad data.
        """
        return self._by_type[message_type].model.model_validate(data)
