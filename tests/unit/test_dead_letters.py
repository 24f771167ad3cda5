"""Dead letters without I/O: headers kept as JSON and given back as AMQP values, the
corrections of a replay, and the saga a dead letter concerns."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import pytest
from pamqp import decode, encode

from bus_orchestrator.app import App
from bus_orchestrator.core.state import saga_id_for
from bus_orchestrator.ports import DeadLetterRecord
from bus_orchestrator.runtime.dead_archive import saga_of
from bus_orchestrator.transport.dead_letters import (
    REPLAY_OF,
    amqp_message,
    from_json,
    replay_headers,
    to_json,
    with_data,
    with_id,
)
from sagas import order_to_cash
from tests.integration.harness import order

STAMP = datetime(2026, 11, 29, 21, 0, 1, tzinfo=UTC)


@pytest.mark.parametrize(
    "value",
    [
        "plain",
        "nul \x00 inside",
        "lone \ud800 surrogate",
        bytearray(b"\x00\xff"),
        Decimal("1.50"),
        STAMP,
        1.5,
        float("inf"),
        7,
        True,
        None,
        [1, "a", bytearray(b"\x01")],
        {"nested": {"deep": bytearray(b"\x02"), "n": Decimal("-3")}},
    ],
)
def test_a_header_value_survives_json_and_postgres(value: Any) -> None:
    stored = json.loads(json.dumps(to_json(value)))  # what jsonb gives back
    assert "\\u0000" not in json.dumps(stored) and "\\ud800" not in json.dumps(stored)
    back = from_json(stored)
    assert back == value
    if value != "lone \ud800 surrogate":  # AMQP text is UTF-8: it never comes from there
        # pamqp takes it again, as the replay sends it.
        assert decode.field_table(encode.field_table({"k": back}))[1]["k"] == value


def test_a_replay_leaves_out_what_dead_lettering_added() -> None:
    headers = {
        "ce-id": "m-1",
        "traceparent": "00-abc-def-01",
        "x-dead-reason": "malformed",
        "x-dead-detail": "d",
        "x-original-exchange": "bus.events",
        "x-first-death-queue": "q",
        "x-death": [{"count": 1}],
        "x-delivery-count": 2,
        "x-custom": {"$bytes": "AAE="},
    }
    assert replay_headers(headers) == {
        "ce-id": "m-1",
        "traceparent": "00-abc-def-01",
        "x-custom": bytearray(b"\x00\x01"),
    }
    message = amqp_message(
        b"{}",
        replay_headers(headers),
        {"content_type": "application/json", "message_id": "m-1", "user_id": "guest"},
        None,
        "dead-1",
    )
    assert message.message_id == "m-1" and message.user_id is None
    assert message.headers[REPLAY_OF] == "dead-1"
    renamed = amqp_message(b"{}", {}, {"message_id": "m-1"}, "m-2", "dead-1")
    assert renamed.message_id == "m-2"


def test_data_is_the_body_in_binary_mode_and_a_member_in_structured_mode() -> None:
    assert with_data(b'{"old": 1}', "application/json", {"new": "é"}) == '{"new":"é"}'.encode()
    structured = json.dumps({"id": "m", "type": "t", "data": {"old": 1}}).encode()
    replaced = json.loads(with_data(structured, "application/cloudevents+json", {"new": 2}))
    assert replaced == {"id": "m", "type": "t", "data": {"new": 2}}
    with pytest.raises(ValueError, match="whole corrected body"):
        with_data(b"[1]", "application/cloudevents+json", {})


def test_a_new_id_goes_where_the_mode_keeps_it() -> None:
    headers = {"ce-id": "old"}
    assert with_id(b"{}", "application/json", headers, "new") == b"{}"
    assert headers == {"ce-id": "new"}
    structured = json.dumps({"id": "old", "data": {}}).encode()
    assert json.loads(with_id(structured, "application/cloudevents+json", {}, "new"))["id"] == "new"


def record(message_type: str | None, body: bytes, **changes: Any) -> DeadLetterRecord:
    values: dict[str, Any] = {
        "id": str(uuid.uuid4()),
        "fingerprint": b"f",
        "message_id": "m",
        "message_type": message_type,
        "source": "urn:test",
        "correlation_id": "from-attribute",
        "reason": "schema-violation",
        "detail": "",
        "dead_lettered_by": "coordinator",
        "original_exchange": "bus.events",
        "original_routing_key": message_type,
        "content_type": "application/json",
        "properties": {},
        "headers": {},
        "body": body,
        "dead_lettered_at": STAMP,
    }
    return DeadLetterRecord(**{**values, **changes})


def test_the_saga_of_a_dead_letter() -> None:
    app = App("order-to-cash", sagas=[order_to_cash.build()])
    valid = order("from-data").model_dump_json().encode()
    placed = "orders.order_placed.v1"
    assert saga_of(record(placed, valid), app) == saga_id_for("order_to_cash", "from-data")
    # Data the contract refuses: the correlation id attribute, as the saga would have it.
    assert saga_of(record(placed, b'{"x": 1}'), app) == saga_id_for(
        "order_to_cash", "from-attribute"
    )
    reply = "payments.payment_charged.v1"
    assert saga_of(record(reply, b"{}"), app) == saga_id_for("order_to_cash", "from-attribute")
    named = str(uuid.uuid4())
    assert saga_of(record(placed, valid, saga_id=named), app) == named
    assert saga_of(record("elsewhere.thing_happened.v1", b"{}"), app) is None
    assert saga_of(record(placed, b"{}", correlation_id=None), app) is None
    assert saga_of(record(None, b"garbage"), app) is None
    assert saga_of(record(placed, valid), None) is None
