"""The CloudEvents codec: both content modes in, binary mode out, every kind of bad input."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import pytest

from bus_orchestrator.errors import DeadLetterReason, InvalidMessageError
from bus_orchestrator.transport.codec import RawMessage, decode, encode
from contracts import REGISTRY, OrderCancelled

T = datetime(2026, 1, 1, tzinfo=UTC)
ATTRS = {"id": "e-1", "type": "orders.order_cancelled.v1", "source": "test", "specversion": "1.0"}


def structured(document: Any) -> RawMessage:
    return RawMessage(json.dumps(document).encode(), {}, "application/cloudevents+json")


def binary(attrs: dict[str, str], data: bytes) -> RawMessage:
    return RawMessage(data, {f"ce-{k}": v for k, v in attrs.items()}, "application/json")


def test_encode_mirrors_ids_and_round_trips() -> None:
    out = encode(
        message_id="m-1",
        payload=OrderCancelled(order_id="o-1"),
        exchange="bus.events",
        source="test",
        time=T,
        correlation_id="o-1",
        causation_id="c-1",
        compensates="f-1",
    )
    assert out.routing_key == "orders.order_cancelled.v1" and out.exchange == "bus.events"
    assert out.headers["ce-correlationid"] == "o-1" and out.headers["ce-causationid"] == "c-1"
    assert out.content_type == "application/json"
    inbound = decode(RawMessage(out.body, out.headers, out.content_type), REGISTRY, 10_000)
    assert inbound.message_id == "m-1"
    assert inbound.payload == OrderCancelled(order_id="o-1")
    assert (inbound.correlation_id, inbound.causation_id) == ("o-1", "c-1")
    assert (inbound.source, inbound.compensates) == ("test", "f-1")


def test_structured_and_binary_modes_decode_alike() -> None:
    data = {"order_id": "o-1", "reason": "x"}
    a = decode(structured({**ATTRS, "correlationid": "o-1", "data": data}), REGISTRY, 10_000)
    b = decode(
        binary({**ATTRS, "correlationid": "o-1"}, json.dumps(data).encode()), REGISTRY, 10_000
    )
    assert a == b


BAD = [
    (
        "oversized",
        RawMessage(b"x" * 2000, {}, "application/cloudevents+json"),
        DeadLetterReason.OVERSIZED,
    ),
    (
        "malformed structured",
        RawMessage(b"{nope", {}, "application/cloudevents+json"),
        DeadLetterReason.MALFORMED,
    ),
    ("malformed binary data", binary(ATTRS, b"{nope"), DeadLetterReason.MALFORMED),
    (
        "plain JSON, no envelope",
        RawMessage(b'{"order_id": "o"}', {}, "application/json"),
        DeadLetterReason.NOT_CLOUDEVENT,
    ),
    ("structured array", structured([1, 2]), DeadLetterReason.NOT_CLOUDEVENT),
    (
        "structured without id",
        structured({k: v for k, v in ATTRS.items() if k != "id"} | {"data": {}}),
        DeadLetterReason.MISSING_ATTRIBUTES,
    ),
    (
        "binary without specversion",
        binary({k: v for k, v in ATTRS.items() if k != "specversion"}, b"{}"),
        DeadLetterReason.MISSING_ATTRIBUTES,
    ),
    (
        "binary without source",
        binary({k: v for k, v in ATTRS.items() if k != "source"}, b"{}"),
        DeadLetterReason.MISSING_ATTRIBUTES,
    ),
    (
        "wrong specversion",
        structured({**ATTRS, "specversion": "0.9", "data": {}}),
        DeadLetterReason.NOT_CLOUDEVENT,
    ),
    (
        "unknown type",
        structured({**ATTRS, "type": "orders.unheard_of.v1", "data": {}}),
        DeadLetterReason.UNKNOWN_TYPE,
    ),
    ("schema: missing field", structured({**ATTRS, "data": {}}), DeadLetterReason.SCHEMA),
    (
        "schema: extra field",
        structured({**ATTRS, "data": {"order_id": "o", "evil": 1}}),
        DeadLetterReason.SCHEMA,
    ),
    ("schema: data not an object", structured({**ATTRS, "data": "text"}), DeadLetterReason.SCHEMA),
]


@pytest.mark.parametrize(("label", "raw", "reason"), BAD, ids=[b[0] for b in BAD])
def test_bad_input_is_refused_with_a_reason(
    label: str, raw: RawMessage, reason: DeadLetterReason
) -> None:
    with pytest.raises(InvalidMessageError) as caught:
        decode(raw, REGISTRY, 1000)
    assert caught.value.reason is reason, caught.value.detail
    assert caught.value.detail


def test_schema_errors_name_the_field_but_not_the_value() -> None:
    raw = structured({**ATTRS, "data": {"order_id": "o", "reason": {"secret": "hunter2"}}})
    with pytest.raises(InvalidMessageError) as caught:
        decode(raw, REGISTRY, 10_000)
    assert "reason" in caught.value.detail
    assert "hunter2" not in caught.value.detail


def test_secret_content_travels_in_clear_but_is_masked_elsewhere() -> None:
    from bus_orchestrator.core.messages import REDACT_SECRETS
    from contracts import ChargePayment

    command = ChargePayment(
        order_id="o", customer_id="c", amount="1.00", currency="EUR", payment_token="tok-123"
    )
    out = encode(message_id="m", payload=command, exchange="x", source="s", time=T)
    assert b"tok-123" in out.body  # the adapter needs it
    inbound = decode(RawMessage(out.body, out.headers, out.content_type), REGISTRY, 10_000)
    assert "tok-123" not in repr(inbound) and "tok-123" not in str(inbound.payload)
    assert inbound.payload.model_dump(mode="json", context=REDACT_SECRETS)["payment_token"] == (
        "**********"
    )
