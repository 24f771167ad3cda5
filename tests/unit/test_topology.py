"""The topology as data: ``bus.lifecycle`` keeps end events, bounded, and nothing else."""

from __future__ import annotations

import pytest
from aio_pika.exceptions import ChannelPreconditionFailed

from bus_orchestrator.core.lifecycle import cancel_event, end_events
from bus_orchestrator.testing.bus import topic_matches
from bus_orchestrator.transport.topology import Topology, mismatch


def test_the_lifecycle_queue_is_a_bounded_quorum_queue_bound_to_end_events() -> None:
    spec = Topology("p.").lifecycle_queue()
    assert spec.name == "p.bus.lifecycle"
    assert spec.arguments == {
        "x-queue-type": "quorum",
        "x-max-length": 100_000,
        "x-overflow": "drop-head",
        "x-message-ttl": 7 * 24 * 60 * 60 * 1000,
    }
    assert spec.bindings == (
        ("p.bus.events", "saga.*.completed.v1"),
        ("p.bus.events", "saga.*.compensated.v1"),
        ("p.bus.events", "saga.*.failed.v1"),
    )


@pytest.mark.parametrize("saga", ["order_to_cash", "onboarding", "a-b"])
def test_every_end_event_and_no_cancel_request_reaches_the_lifecycle_queue(saga: str) -> None:
    keys = [key for _, key in Topology().lifecycle_queue().bindings]

    def kept(message_type: str) -> bool:
        return any(topic_matches(key, message_type) for key in keys)

    assert all(kept(model.message_type) for model in end_events(saga))
    assert not kept(cancel_event(saga).message_type)
    assert not kept(f"saga.{saga}.completed.v2")


def test_the_shared_queues_are_declared_after_the_exchanges_they_bind_to() -> None:
    topology = Topology()
    names = [q.name for q in topology.shared_queues()]
    assert names == ["bus.dead", "bus.unroutable", "bus.lifecycle"]
    exchanges = {e.name for e in topology.exchanges()}
    assert all(ex in exchanges for q in topology.shared_queues() for ex, _ in q.bindings)


def test_a_lifecycle_queue_declared_otherwise_is_named_with_the_argument() -> None:
    refusal = ChannelPreconditionFailed(
        "PRECONDITION_FAILED - inequivalent arg 'x-max-length' for queue 'p.bus.lifecycle' in "
        "vhost '/': received the value '100000' of type 'signedint' but current is none"
    )
    error = mismatch(refusal)
    assert (error.kind, error.name, error.argument) == ("queue", "p.bus.lifecycle", "x-max-length")
    assert "the broker has none, the engine declares the value '100000'" in str(error)
