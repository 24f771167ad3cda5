"""Pure parts of the transport: dead letters that fit a frame, one-line mismatches, waits."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from aio_pika.exceptions import ChannelPreconditionFailed

from bus_orchestrator.config import Settings
from bus_orchestrator.errors import (
    BrokerUnavailableError,
    DeadLetterReason,
    StoreUnavailableError,
)
from bus_orchestrator.schema.asyncapi import WIRE_RULES
from bus_orchestrator.startup import waiting_for
from bus_orchestrator.transport.codec import RawMessage
from bus_orchestrator.transport.publisher import DeadLetterer, header_frame_size
from bus_orchestrator.transport.topology import Topology, mismatch

ROOT = Path(__file__).resolve().parents[2]
FRAME_MAX = 131_072


def raw(headers: dict[str, Any]) -> RawMessage:
    return RawMessage(
        body=b"{}",
        headers=headers,
        content_type="application/json",
        message_id="m-1",
        exchange="t.bus.events",
        routing_key="orders.order_placed.v1",
    )


LETTERER = DeadLetterer(None, Topology("t."), "coordinator")  # type: ignore[arg-type]


def filler(count: int, size: int = 20) -> dict[str, Any]:
    return {f"h{i:05d}": "x" * size for i in range(count)}


@pytest.mark.parametrize(
    "headers",
    [
        {"ce-id": "1", **filler(4030)},  # just under the frame with the original headers
        {**filler(2000), "ce-id": "1", "traceparent": "00-" + "a" * 32 + "-" + "b" * 16 + "-01"},
        {"ce-id": "1", "big": "y" * 130_000},  # one header nearly the whole frame
        {"ce-id": "1", "nested": {"list": [1, 2, {"deep": "z" * 1000}] * 100}},
    ],
)
def test_a_dead_letter_always_fits_one_frame_and_keeps_its_reason(headers: dict[str, Any]) -> None:
    letter = LETTERER.message(raw(headers), DeadLetterReason.MALFORMED, "d" * 5000)

    assert header_frame_size(letter) <= FRAME_MAX - 1024
    assert letter.headers["x-dead-reason"] == "malformed"
    assert letter.headers["x-original-routing-key"] == "orders.order_placed.v1"
    assert letter.headers["ce-id"] == "1"  # CloudEvents headers are kept first
    kept = [k for k in headers if k in letter.headers]
    dropped = letter.headers.get("x-dead-headers-dropped", 0)
    assert len(kept) + dropped == len(headers)


def test_the_trace_survives_a_bomb_that_puts_it_last() -> None:
    trace = "00-" + "a" * 32 + "-" + "b" * 16 + "-01"
    letter = LETTERER.message(
        raw({**filler(4060), "traceparent": trace}), DeadLetterReason.MALFORMED, "bad"
    )
    assert letter.headers["traceparent"] == trace
    assert letter.headers["x-dead-headers-dropped"] > 0


def test_nothing_is_dropped_or_said_when_everything_fits() -> None:
    letter = LETTERER.message(raw({"ce-id": "1", "x-saga-id": "s"}), DeadLetterReason.SCHEMA, "d")
    assert "x-dead-headers-dropped" not in letter.headers
    assert letter.headers["x-saga-id"] == "s"


def test_a_mismatched_argument_is_named_in_one_line() -> None:
    refusal = ChannelPreconditionFailed(
        "PRECONDITION_FAILED - inequivalent arg 'alternate-exchange' for exchange "
        "'p.bus.events' in vhost '/': received the value 'p.bus.unroutable' of type "
        "'longstr' but current is none"
    )
    error = mismatch(refusal)
    assert (error.kind, error.name, error.argument) == (
        "exchange",
        "p.bus.events",
        "alternate-exchange",
    )
    assert str(error) == (
        "exchange 'p.bus.events' exists on RabbitMQ with another 'alternate-exchange' than the "
        "engine declares (the broker has none, the engine declares the value "
        "'p.bus.unroutable' of type 'longstr'); delete the exchange or declare it as "
        "contracts/asyncapi.yaml says"
    )


def test_the_wait_says_what_where_and_why() -> None:
    settings = Settings(
        database_url="postgresql://root:secret@db.example:6543/test",
        amqp_url="amqp://guest:guest@mq.example/",
    )
    try:
        raise ConnectionRefusedError(111, "Connect call failed")
    except ConnectionRefusedError as exc:
        store = StoreUnavailableError("Postgres unavailable")
        store.__cause__ = exc
    broker = BrokerUnavailableError("RabbitMQ is not reachable")
    broker.__cause__ = TimeoutError()

    assert waiting_for(store, settings) == "Postgres at db.example:6543: connection refused"
    assert waiting_for(broker, settings) == "RabbitMQ at mq.example:5672: timed out"


@pytest.mark.parametrize("reason", list(DeadLetterReason))
def test_every_dead_letter_reason_is_documented(reason: DeadLetterReason) -> None:
    assert f"`{reason}`" in (ROOT / "README.md").read_text()
    assert f"`{reason}`" in WIRE_RULES
