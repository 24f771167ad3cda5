"""Money: one decimal-string definition, and the published schema and the engine agree on it.

The same table of inputs goes through the exported JSON Schema (a real validator, reading
the committed files) and through the engine's ``decode``; they must accept and refuse the
very same inputs, and what the engine sends on is canonical: plain notation, exactly the
declared places, matching the published pattern.
"""

from __future__ import annotations

import json
import typing
from collections.abc import Iterator
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import regress
from jsonschema import Draft202012Validator, ValidationError, validators
from pydantic import BaseModel
from pydantic import ValidationError as PydanticValidationError

from bus_orchestrator.core import DecimalString
from bus_orchestrator.errors import DeadLetterReason, InvalidMessageError
from bus_orchestrator.transport.codec import RawMessage, decode, encode
from contracts import REGISTRY, ChargePayment, LineItem
from contracts.orders import Money

SCHEMAS = Path(__file__).resolve().parents[2] / "contracts" / "schemas"
MONEY: DecimalString = typing.get_args(Money)[1]
HUGE_NUMBER = "9" * 5000  # valid JSON; more digits than Python converts to an int by default


def _ecma_pattern(
    validator: Any, pattern: str, instance: Any, schema: dict[str, Any]
) -> Iterator[ValidationError]:
    if validator.is_type(instance, "string") and regress.Regex(pattern).find(instance) is None:
        yield ValidationError(f"{instance!r} does not match {pattern!r}")


# JSON Schema patterns are ECMA-262 regular expressions. jsonschema evaluates them with
# Python's re.search, whose "$" also matches before a trailing newline ("1.00\n" would
# pass); regress is an ECMA-262 engine, so "pattern" here means what the spec says.
Validator = validators.extend(Draft202012Validator, {"pattern": _ecma_pattern})


def _number(text: str) -> Any:
    # A JSON number of any length is a number to a schema validator in any language.
    return int(text) if len(text) < 4000 else Decimal(text)


def _refuse_constant(text: str) -> Any:
    raise ValueError(f"{text} is not JSON")


# (label, the amount as JSON text, what the engine holds and sends, or None: refused)
TABLE: list[tuple[str, str, str | None]] = [
    ("float", "1.5", None),
    ("int", "10", None),
    ("zero as a number", "0", None),
    ("exponent as a number", "1e3", None),
    ("huge number", HUGE_NUMBER, None),
    ("NaN literal", "NaN", None),
    ("exponent", '"1e3"', None),
    ("upper-case exponent", '"2E+4"', None),
    ("underscore", '"1_000"', None),
    ("spaces", '" 1.00 "', None),
    ("trailing newline", '"1.00\\n"', None),
    ("leading tab", '"\\t1.00"', None),
    ("negative", '"-5.00"', None),
    ("plus sign", '"+5.00"', None),
    ("negative zero", '"-0"', None),
    ("letters", '"abc"', None),
    ("empty", '""', None),
    ("NaN string", '"NaN"', None),
    ("Infinity string", '"Infinity"', None),
    ("three places", '"1.005"', None),
    ("trailing zero beyond places", '"1.000"', None),
    ("bare point", '"1."', None),
    ("no integer part", '".5"', None),
    ("leading zero", '"01.00"', None),
    ("two zeros", '"00"', None),
    ("comma", '"1,00"', None),
    ("thousands separator", '"1,000.00"', None),
    ("full-width digits", '"\\uff11.\\uff10\\uff10"', None),
    ("Arabic-Indic digits", '"\\u0661"', None),
    ("17 digits", '"10000000000000000"', None),
    ("40 digits", '"' + "1" * 40 + '"', None),
    ("null", "null", None),
    ("true", "true", None),
    ("array", '["1.00"]', None),
    ("object", '{"value": "1.00"}', None),
    ("0", '"0"', "0.00"),
    ("0.00", '"0.00"', "0.00"),
    ("one place", '"0.5"', "0.50"),
    ("no places", '"7"', "7.00"),
    ("two places", '"39.80"', "39.80"),
    ("over the payment limit", '"10000.01"', "10000.01"),
    ("largest", '"9999999999999999.99"', "9999999999999999.99"),
]
IDS = [row[0] for row in TABLE]


def schema_accepts(message_type: str, data_text: str) -> bool:
    schema = json.loads((SCHEMAS / f"{message_type}.json").read_text())
    Validator.check_schema(schema)
    try:
        instance = json.loads(data_text, parse_int=_number, parse_constant=_refuse_constant)
    except ValueError:
        return False  # not JSON: nothing for a schema to accept
    return bool(Validator(schema).is_valid(instance))


def engine_accepts(message_type: str, data_text: str) -> Any:
    body = (
        '{"specversion": "1.0", "id": "m-1", "source": "urn:test", '
        f'"type": "{message_type}", "data": {data_text}}}'
    ).encode()
    try:
        return decode(RawMessage(body, {}, "application/cloudevents+json"), REGISTRY, 10**6)
    except InvalidMessageError as exc:
        assert exc.reason in (DeadLetterReason.SCHEMA, DeadLetterReason.MALFORMED), exc.detail
        return None


def charge(amount: str) -> tuple[str, str]:
    return "payments.charge_payment.v1", (
        '{"order_id": "o-1", "customer_id": "c-1", "currency": "EUR", '
        f'"payment_token": "tok", "amount": {amount}}}'
    )


def order(unit_price: str) -> tuple[str, str]:
    return "orders.order_placed.v1", (
        '{"order_id": "o-1", "customer_id": "c-1", "currency": "EUR", "total": "1.00", '
        '"shipping_address": {"country": "DE"}, '
        f'"items": [{{"sku": "S-1", "quantity": 1, "unit_price": {unit_price}}}]}}'
    )


def sent(payload: Any) -> dict[str, Any]:
    out = encode(
        message_id="m-2", payload=payload, exchange="x", source="s", time=datetime.now(UTC)
    )
    body: dict[str, Any] = json.loads(out.body)
    return body


@pytest.mark.parametrize(("label", "amount", "canonical"), TABLE, ids=IDS)
def test_schema_and_engine_agree_on_a_top_level_amount(
    label: str, amount: str, canonical: str | None
) -> None:
    message_type, data = charge(amount)
    inbound = engine_accepts(message_type, data)
    assert schema_accepts(message_type, data) is (inbound is not None) is (canonical is not None)
    if inbound is not None:
        assert inbound.payload.amount == Decimal(canonical)
        assert str(inbound.payload.amount) == canonical  # held with exactly 2 places
        assert sent(inbound.payload)["amount"] == canonical
        # what the engine sends is itself accepted, unchanged, by the schema and the engine
        again = json.dumps(sent(inbound.payload))
        assert schema_accepts(message_type, again)
        assert engine_accepts(message_type, again) == inbound


@pytest.mark.parametrize(("label", "amount", "canonical"), TABLE, ids=IDS)
def test_schema_and_engine_agree_on_a_nested_amount(
    label: str, amount: str, canonical: str | None
) -> None:
    message_type, data = order(amount)
    inbound = engine_accepts(message_type, data)
    assert schema_accepts(message_type, data) is (inbound is not None) is (canonical is not None)
    if inbound is not None:
        [item] = sent(inbound.payload)["items"]
        assert item["unit_price"] == canonical


def test_every_money_field_publishes_the_engines_pattern() -> None:
    found = []
    for path in sorted(SCHEMAS.glob("*.json")):
        text = path.read_text()
        assert '"number"' not in text, f"{path.name} still allows a JSON number"
        schema = json.loads(text)
        for holder in [schema, *schema.get("$defs", {}).values()]:
            for name, field in holder["properties"].items():
                if name in ("amount", "total", "unit_price"):
                    found.append(path.name)
                    assert field["type"] == "string"
                    assert field["pattern"] == MONEY.pattern
    assert len(found) == 5  # ChargePayment, PaymentCharged, RefundPayment, OrderPlaced x2
    assert MONEY.pattern == r"^(0|[1-9][0-9]{0,15})(\.[0-9]{1,2})?$"


@pytest.mark.parametrize(
    ("given", "sends"),
    [
        (Decimal("10.00"), "10.00"),
        (Decimal("10"), "10.00"),
        (Decimal("0.5"), "0.50"),
        (Decimal("1E+3"), "1000.00"),
        (Decimal("2E+4"), "20000.00"),
        (Decimal("1.500"), "1.50"),
        (Decimal("-0"), "0.00"),
        (Decimal("9999999999999999.99"), "9999999999999999.99"),
        ("12.5", "12.50"),
    ],
)
def test_python_code_sets_money_from_decimals_and_the_engine_sends_it_plain(
    given: Any, sends: str
) -> None:
    command = ChargePayment(order_id="o", customer_id="c", amount=given, currency="EUR")
    assert sent(command)["amount"] == sends
    assert command.model_dump(mode="json")["amount"] == sends  # saga data, history
    assert isinstance(command.model_dump()["amount"], Decimal)
    assert LineItem(sku="s", quantity=1, unit_price=given).unit_price == Decimal(sends)


@pytest.mark.parametrize(
    "given",
    [
        Decimal("1.005"),
        Decimal("-0.01"),
        Decimal("NaN"),
        Decimal("sNaN"),
        Decimal("Infinity"),
        Decimal("1E+16"),
        Decimal("1E+100"),
        1.5,
        10,
        True,
        None,
        "1e3",
    ],
)
def test_python_code_cannot_set_what_the_wire_refuses(given: Any) -> None:
    with pytest.raises(PydanticValidationError) as caught:
        ChargePayment(order_id="o", customer_id="c", amount=given, currency="EUR")
    [error] = caught.value.errors()
    assert error["type"] == "decimal_string"
    assert "decimal string" in error["msg"]


@pytest.mark.parametrize(
    ("max_digits", "places", "pattern", "good", "bad"),
    [
        (5, 0, r"^(0|[1-9][0-9]{0,4})$", ["0", "12345"], ["1.0", "123456"]),
        (3, 1, r"^(0|[1-9][0-9]{0,1})(\.[0-9])?$", ["99.9", "0.1"], ["100", "1.25"]),
        (1, 0, r"^(0|[1-9])$", ["0", "9"], ["10", "-1"]),
        (20, 4, r"^(0|[1-9][0-9]{0,15})(\.[0-9]{1,4})?$", ["1.2345"], ["1.23456"]),
    ],
)
def test_the_pattern_follows_the_declared_digits_and_places(
    max_digits: int, places: int, pattern: str, good: list[str], bad: list[str]
) -> None:
    shape = DecimalString(max_digits, places)

    class Price(BaseModel):
        value: typing.Annotated[Decimal, shape]

    assert shape.pattern == pattern
    assert Price.model_json_schema()["properties"]["value"] == {
        "type": "string",
        "pattern": pattern,
        "title": "Value",
    }
    for text in good:
        assert Price(value=text).model_dump(mode="json")["value"] == str(
            Decimal(text).quantize(Decimal(1).scaleb(-places))
        )
    for text in bad:
        with pytest.raises(PydanticValidationError):
            Price(value=text)


@pytest.mark.parametrize(("max_digits", "places"), [(2, 2), (0, 0), (3, -1)])
def test_an_impossible_shape_is_refused(max_digits: int, places: int) -> None:
    with pytest.raises(ValueError, match="max_digits > decimal_places >= 0"):
        DecimalString(max_digits, places)
