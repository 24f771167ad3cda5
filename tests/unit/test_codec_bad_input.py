"""Bad input the codec must label right: never a crash (which would be a ``handler-error``).

JSON too deep to parse is ``malformed``; a NUL or a lone surrogate in the data (Postgres text
and jsonb cannot hold them) is a ``schema-violation``; an attribute the engine reads that is
not a string, or that holds a control character, is ``not-a-cloudevent`` in either content
mode; a reply without ``causationid`` is ``missing-attributes``.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from bus_orchestrator.errors import DeadLetterReason, InvalidMessageError
from bus_orchestrator.transport.codec import RawMessage, decode
from contracts import REGISTRY, OrderCancelled, StockReserved

ATTRS: dict[str, Any] = {
    "id": "e-1",
    "type": "orders.order_cancelled.v1",
    "source": "urn:test",
    "specversion": "1.0",
}
REPLY = {**ATTRS, "type": "inventory.stock_reserved.v1"}
REPLY_DATA = {"order_id": "o-1", "reservation_id": "r-1"}
DEEP = b"[" * 10_000 + b"]" * 10_000


def structured(document: Any) -> RawMessage:
    return RawMessage(json.dumps(document).encode(), {}, "application/cloudevents+json")


def structured_text(text: bytes) -> RawMessage:
    return RawMessage(text, {}, "application/cloudevents+json")


def binary(headers: dict[str, Any], data: Any = None, body: bytes | None = None) -> RawMessage:
    body = (
        json.dumps({"order_id": "o-1"} if data is None else data).encode() if body is None else body
    )
    return RawMessage(body, {f"ce-{k}": v for k, v in headers.items()}, "application/json")


def refusal(raw: RawMessage) -> InvalidMessageError:
    with pytest.raises(InvalidMessageError) as caught:
        decode(raw, REGISTRY, 10_000_000)
    return caught.value


MALFORMED = [
    ("structured body 10,000 deep", structured_text(DEEP)),
    ("structured data 10,000 deep", structured_text(b'{"id": "x", "data": ' + DEEP + b"}")),
    ("binary data 10,000 deep", binary(ATTRS, body=b'{"order_id": ' + DEEP + b"}")),
    ("binary object 10,000 deep", binary(ATTRS, body=b'{"a":' * 10_000 + b"1" + b"}" * 10_000)),
    ("NaN is not JSON", binary(ATTRS, body=b'{"order_id": "o", "reason": NaN}')),
    ("Infinity is not JSON", structured_text(b'{"id": "x", "data": {"a": -Infinity}}')),
    ("an integer Python cannot convert", binary(ATTRS, body=b'{"reason": ' + b"9" * 5000 + b"}")),
    ("not UTF-8", binary(ATTRS, body=b'{"order_id": "\xff"}')),
    ("empty binary body", binary(ATTRS, body=b"")),
]


@pytest.mark.parametrize(("label", "raw"), MALFORMED, ids=[m[0] for m in MALFORMED])
def test_json_the_engine_cannot_parse_is_malformed(label: str, raw: RawMessage) -> None:
    error = refusal(raw)
    assert error.reason is DeadLetterReason.MALFORMED, error.detail
    assert "JSON" in error.detail


NUL_DATA = [
    ("NUL in a string", {"order_id": "o\u0000-1"}, "order_id"),
    ("NUL alone", {"order_id": "o-1", "reason": "\u0000"}, "reason"),
    ("NUL in a key", {"order_id": "o-1", "re\u0000ason": "x"}, "a key in <data>"),
    ("NUL deep in an extra field", {"order_id": "o-1", "x": [{"y": ["\u0000"]}]}, "x.0.y.0"),
    ("lone high surrogate", {"order_id": "\ud800"}, "order_id"),
    ("lone low surrogate", {"order_id": "o", "reason": "a\udfffb"}, "reason"),
]


@pytest.mark.parametrize(("label", "data", "where"), NUL_DATA, ids=[n[0] for n in NUL_DATA])
@pytest.mark.parametrize("mode", ["structured", "binary"])
def test_nul_or_a_lone_surrogate_in_the_data_is_a_schema_violation(
    label: str, data: dict[str, Any], where: str, mode: str
) -> None:
    raw = structured({**ATTRS, "data": data}) if mode == "structured" else binary(ATTRS, data)
    error = refusal(raw)
    assert error.reason is DeadLetterReason.SCHEMA, error.detail
    assert f"orders.order_cancelled.v1: {where}: holds a NUL" in error.detail


def test_an_escaped_backslash_before_u0000_is_just_text() -> None:
    # The body holds the escape sequence, the data the six characters \u0000: no NUL.
    inbound = decode(structured({**ATTRS, "data": {"order_id": "\\u0000"}}), REGISTRY, 10_000)
    assert inbound.payload == OrderCancelled(order_id="\\u0000")


def test_other_control_characters_in_the_data_are_fine() -> None:
    data = {"order_id": "o-1", "reason": "line one\nline two\ttab \u0001 \u007f \u00e9 \U0001f600"}
    inbound = decode(binary(ATTRS, data), REGISTRY, 10_000)
    assert inbound.payload == OrderCancelled(**data)


NOT_A_STRING = [
    ("id", 42),
    ("id", True),
    ("id", 1.5),
    ("id", {"nested": "table"}),
    ("id", ["array"]),
    ("id", b"\xff\xfe"),  # a long string that is not UTF-8 comes as bytes
    ("id", bytearray(b"e-1")),  # an AMQP byte array
    ("source", 7),
    ("type", False),
    ("specversion", 1),
    ("correlationid", 1001),
    ("causationid", {"id": "c"}),
    ("compensates", True),
    ("time", 1_700_000_000),
    ("someextension", 5),
]


@pytest.mark.parametrize(("name", "value"), NOT_A_STRING)
def test_a_binary_ce_header_that_is_not_a_string_is_refused(name: str, value: Any) -> None:
    error = refusal(binary({**ATTRS, name: value}))
    assert error.reason is DeadLetterReason.NOT_CLOUDEVENT, error.detail
    assert f"header 'ce-{name}' must be a string, not " in error.detail


@pytest.mark.parametrize(
    ("name", "value"), [(n, v) for n, v in NOT_A_STRING if n not in ("time", "someextension")]
)
def test_a_structured_attribute_the_engine_reads_must_be_a_string(name: str, value: Any) -> None:
    if isinstance(value, bytes | bytearray):
        value = list(value)  # JSON has no bytes; an array stands in
    error = refusal(structured({**ATTRS, name: value, "data": {"order_id": "o-1"}}))
    assert error.reason is DeadLetterReason.NOT_CLOUDEVENT, error.detail
    assert f"attribute '{name}' must be a string, not " in error.detail


def test_structured_extensions_may_be_integers_and_booleans_as_cloudevents_allows() -> None:
    raw = structured({**ATTRS, "sequence": 5, "sampled": True, "data": {"order_id": "o-1"}})
    assert decode(raw, REGISTRY, 10_000).payload == OrderCancelled(order_id="o-1")


def test_a_null_optional_attribute_in_structured_mode_is_absent() -> None:
    raw = structured({**ATTRS, "correlationid": None, "time": None, "data": {"order_id": "o-1"}})
    assert decode(raw, REGISTRY, 10_000).correlation_id is None


@pytest.mark.parametrize("name", ["id", "source", "type", "correlationid", "causationid"])
@pytest.mark.parametrize("char", ["\u0000", "\n", "\u001f", "\u007f", "\u0085", "\ud800"])
def test_a_control_character_in_an_attribute_is_refused(name: str, char: str) -> None:
    value = f"a{char}b"
    for raw in (
        structured({**ATTRS, name: value, "data": {"order_id": "o-1"}}),
        binary({**ATTRS, name: value}),
    ):
        error = refusal(raw)
        assert error.reason is DeadLetterReason.NOT_CLOUDEVENT, error.detail
        assert f"'{name}'" in error.detail or f"'ce-{name}'" in error.detail
        assert "control character" in error.detail


@pytest.mark.parametrize("name", ["id", "source", "type", "specversion"])
def test_an_empty_or_null_required_attribute_is_missing(name: str) -> None:
    for raw in (
        structured({**ATTRS, name: None, "data": {"order_id": "o-1"}}),
        structured({**ATTRS, name: "", "data": {"order_id": "o-1"}}),
        binary({**ATTRS, name: ""}),
    ):
        error = refusal(raw)
        assert error.reason is DeadLetterReason.MISSING_ATTRIBUTES, error.detail
        assert repr(name) in error.detail


@pytest.mark.parametrize(
    ("label", "raw"),
    [
        ("binary time", binary({**ATTRS, "time": "yesterday"})),
        ("structured time", structured({**ATTRS, "time": "soon", "data": {"order_id": "o"}})),
        ("time without a zone", binary({**ATTRS, "time": "2026-01-01T00:00:00"})),
        ("structured time as a list", structured({**ATTRS, "time": [], "data": {}})),
    ],
)
def test_a_bad_time_is_not_a_cloudevent(label: str, raw: RawMessage) -> None:
    assert refusal(raw).reason is DeadLetterReason.NOT_CLOUDEVENT


def test_string_attributes_decode_as_before() -> None:
    headers = {
        **ATTRS,
        "time": "2026-01-01T00:00:00Z",
        "correlationid": "o-1",
        "causationid": "c-1",
        "compensates": "f-1",
    }
    inbound = decode(binary(headers), REGISTRY, 10_000)
    assert (inbound.message_id, inbound.source) == ("e-1", "urn:test")
    assert (inbound.correlation_id, inbound.causation_id, inbound.compensates) == (
        "o-1",
        "c-1",
        "f-1",
    )


@pytest.mark.parametrize(
    ("label", "raw"),
    [
        ("structured, absent", structured({**REPLY, "data": REPLY_DATA})),
        ("structured, empty", structured({**REPLY, "causationid": "", "data": REPLY_DATA})),
        ("structured, null", structured({**REPLY, "causationid": None, "data": REPLY_DATA})),
        ("binary, absent", binary(REPLY, REPLY_DATA)),
        ("binary, empty", binary({**REPLY, "causationid": ""}, REPLY_DATA)),
    ],
)
def test_a_reply_without_causationid_is_missing_attributes(label: str, raw: RawMessage) -> None:
    error = refusal(raw)
    assert error.reason is DeadLetterReason.MISSING_ATTRIBUTES, error.detail
    assert "causationid" in error.detail


def test_a_reply_with_causationid_and_an_event_without_one_are_accepted() -> None:
    reply = decode(binary({**REPLY, "causationid": "cmd-1"}, REPLY_DATA), REGISTRY, 10_000)
    assert reply.payload == StockReserved(**REPLY_DATA) and reply.causation_id == "cmd-1"
    event = decode(binary(ATTRS), REGISTRY, 10_000)  # events and commands may omit it
    assert event.causation_id is None
