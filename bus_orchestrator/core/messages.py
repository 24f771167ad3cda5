"""Message models and the contract registry.

A message model is a frozen pydantic model that names its stable, dotted, versioned type
string (``payments.charge_payment.v1``) in ``message_type``. The type string is the contract;
it is never derived from the Python class path.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from decimal import Context, Decimal
from enum import StrEnum
from typing import Annotated, Any, ClassVar

from pydantic import (
    BaseModel,
    ConfigDict,
    GetCoreSchemaHandler,
    GetJsonSchemaHandler,
    PlainSerializer,
    SecretStr,
    SerializationInfo,
    ValidationError,
)
from pydantic.json_schema import JsonSchemaValue
from pydantic_core import PydanticCustomError, core_schema

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


@dataclass(frozen=True, slots=True)
class DecimalString:
    """A non-negative decimal that travels as a JSON string: ONE definition for the engine
    and the published schema. Use it as ``Annotated[Decimal, DecimalString(18, 2)]``.

    - **In**: a string matching ``pattern``: an integer part without leading zeros (``0``,
      ``7``, ``120``) of at most ``max_digits - decimal_places`` digits, then optionally a
      point and 1 to ``decimal_places`` digits; no sign, exponent, underscore or whitespace.
      Python code
      may also pass a ``Decimal`` of that range (finite, not negative, no more places).
      Anything else is refused, JSON numbers included: a float has already lost
      precision, and a schema that allows both a number and a string allows too much.
    - **Held**: a ``Decimal`` with exactly ``decimal_places`` places (``"1.5"`` holds
      ``Decimal("1.50")``).
    - **Out** (JSON): plain notation with exactly ``decimal_places`` places, never an
      exponent, so one value has one spelling: ``"1.50"``, ``"20000.00"``, ``"0.00"``.
    - **Schema**: ``{"type": "string", "pattern": pattern}``, the very pattern checked here
      (ECMA-262 semantics: ``$`` is the end of the string, as in Python's ``fullmatch``).
    """

    max_digits: int
    decimal_places: int
    pattern: str = field(init=False)
    _regex: re.Pattern[str] = field(init=False, repr=False, compare=False)
    _limit: Decimal = field(init=False, repr=False, compare=False)
    _quantum: Decimal = field(init=False, repr=False, compare=False)
    _context: Context = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        whole, places = self.max_digits - self.decimal_places, self.decimal_places
        if places < 0 or whole < 1:
            raise ValueError("DecimalString needs max_digits > decimal_places >= 0")
        integer = "(0|[1-9])" if whole == 1 else f"(0|[1-9][0-9]{{0,{whole - 1}}})"
        fraction = {0: "", 1: r"(\.[0-9])?"}.get(places, rf"(\.[0-9]{{1,{places}}})?")
        pattern = f"^{integer}{fraction}$"
        derived = {
            "pattern": pattern,
            "_regex": re.compile(pattern),
            "_limit": Decimal(10) ** whole,
            "_quantum": Decimal(1).scaleb(-places),
            "_context": Context(prec=self.max_digits),
        }
        for name, value in derived.items():  # a frozen dataclass: set once, here
            object.__setattr__(self, name, value)

    def _error(self, problem: str = "") -> PydanticCustomError:
        whole, places = self.max_digits - self.decimal_places, self.decimal_places
        after = f" and at most {places} after it" if places else ", and no decimal point"
        wanted = (
            f"a decimal string like '{Decimal(10).quantize(self._quantum)}' (at most {whole} "
            f"digits before the point{after}; no sign, exponent, spaces or extra leading zero)"
        )
        return PydanticCustomError(
            "decimal_string", "must be {wanted}{problem}", {"wanted": wanted, "problem": problem}
        )

    def validate(self, value: object) -> Decimal:
        """``value`` as the held ``Decimal``; a ``PydanticCustomError`` if it does not fit."""
        if isinstance(value, str):
            if self._regex.fullmatch(value) is None:
                raise self._error()
            return Decimal(value).quantize(self._quantum, context=self._context)
        if isinstance(value, Decimal):
            if not value.is_finite() or value < 0 or value >= self._limit:
                raise self._error()
            held = value.quantize(self._quantum, context=self._context)
            if held != value:
                raise self._error(f"; it has more than {self.decimal_places} decimal places")
            return held.copy_abs()  # Decimal("-0") is not negative, but prints as "-0.00"
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise self._error(f", not {type(value).__name__}")
        raise self._error(", not a JSON number")

    def __get_pydantic_core_schema__(
        self, source: Any, handler: GetCoreSchemaHandler
    ) -> core_schema.CoreSchema:
        return core_schema.no_info_plain_validator_function(
            self.validate,
            serialization=core_schema.plain_serializer_function_ser_schema(
                _plain, when_used="json", return_schema=core_schema.str_schema()
            ),
        )

    def __get_pydantic_json_schema__(
        self, schema: core_schema.CoreSchema, handler: GetJsonSchemaHandler
    ) -> JsonSchemaValue:
        return {"type": "string", "pattern": self.pattern}


def _plain(value: Decimal) -> str:
    # "f" never uses an exponent; the value already has its declared places (validate()).
    return format(value, "f")


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


def validation_errors(exc: ValidationError) -> str:
    """What failed validation, field by field, without the input values: they may carry
    personal or secret data."""
    return "; ".join(
        f"{'.'.join(str(p) for p in err['loc']) or '<data>'}: {err['msg']}"
        for err in exc.errors(include_url=False, include_input=False)
    )
