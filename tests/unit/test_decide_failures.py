"""decide() when things go wrong: saga code that raises, a command that cannot be sent,
and what a finished saga keeps at rest."""

from __future__ import annotations

import dataclasses
from datetime import timedelta

from pydantic import SecretStr

from bus_orchestrator.app import App
from bus_orchestrator.core import (
    CommandRefused,
    Decision,
    Inbound,
    Outcome,
    SagaStatus,
    Step,
    StepStatus,
    TimerFired,
    decide,
)
from bus_orchestrator.core.lifecycle import SagaEnded
from bus_orchestrator.core.messages import REDACTED
from bus_orchestrator.core.state import SagaInstance
from bus_orchestrator.testing import SagaHarness
from contracts import ChargePayment, CreateShipment, OrderPlaced, ReserveStock
from sagas import order_to_cash
from tests.unit.test_decide import (
    CHARGED,
    DECLINED,
    OID,
    RELEASED,
    RESERVED,
    SAGA,
    SHIPPED,
    T0,
    placed,
)


def broken(step_name: str, **changes: object) -> object:
    """Order-to-cash with one step's functions replaced."""
    saga = order_to_cash.build(timedelta(seconds=30))
    steps = tuple(
        Step(**{**s.__dict__, **changes}) if s.name == step_name else s for s in saga.steps
    )
    return dataclasses.replace(saga, steps=steps)


def ended_with(decision: Decision) -> tuple[str, str | None]:
    """The type and reason of the one message ``decision`` sends: the saga's end event."""
    [ended] = decision.send
    assert isinstance(ended.payload, SagaEnded)
    return ended.payload.message_type, ended.payload.reason


def boom(*_: object) -> object:
    raise ValueError("the ERP changed its mind")


def harness() -> SagaHarness:
    return SagaHarness(App("order-to-cash", sagas=[SAGA]), adapters=False)


async def saga_after(harness: SagaHarness, *answers: object) -> SagaInstance:
    """The saga's state once its order is placed and ``answers`` replied, in turn."""
    await harness.publish(placed(), message_id="e-1")
    await harness.run_until_idle()
    for answer in answers:
        await harness.answer(harness.commands[-1], answer)  # type: ignore[arg-type]
        await harness.run_until_idle()
    return await harness.saga(OID)


def test_saga_code_that_raises_fails_the_saga_with_the_error() -> None:
    saga = broken("charge_payment", command=boom)
    started = decide(saga, None, Inbound("e-1", placed(), OID), T0).instance
    assert started is not None
    reply = Inbound("r-1", RESERVED, OID, started.pending_command_id)
    decision = decide(saga, started, reply, T0 + timedelta(seconds=1))
    assert decision.outcome is Outcome.FAILED and isinstance(decision.error, ValueError)
    failed = decision.instance
    assert failed is not None and failed.status is SagaStatus.FAILED
    assert failed.failure == (
        "saga code raised on inventory.stock_reserved.v1: ValueError: the ERP changed its mind"
    )
    assert ended_with(decision) == ("saga.order_to_cash.failed.v1", failed.failure)
    assert failed.version == started.version + 1
    assert (failed.pending_command_id, failed.deadline) == (None, None)
    # a failed saga takes no further messages
    late = decide(saga, failed, Inbound("r-2", CHARGED, OID, "x"), T0 + timedelta(seconds=2))
    assert late.outcome is Outcome.IGNORED


def test_initial_data_that_raises_leaves_a_failed_saga_to_find() -> None:
    saga = order_to_cash.build()
    saga = dataclasses.replace(saga, initial_data=boom)
    decision = decide(saga, None, Inbound("e-1", placed(), OID), T0)
    assert decision.outcome is Outcome.FAILED
    assert decision.instance is not None
    assert (decision.instance.correlation_id, decision.instance.status) == (
        OID,
        SagaStatus.FAILED,
    )
    assert ended_with(decision) == ("saga.order_to_cash.failed.v1", decision.instance.failure)


def test_timer_whose_resend_raises_fails_the_saga() -> None:
    calls = {"n": 0}

    def once(data: object) -> object:
        calls["n"] += 1
        if calls["n"] > 1:
            raise RuntimeError("cannot build it twice")
        return order_to_cash.build().steps[0].command(data)  # type: ignore[arg-type]

    saga = broken("reserve_stock", command=once)
    started = decide(saga, None, Inbound("e-1", placed(), OID), T0)
    instance = started.instance
    assert instance is not None and instance.deadline is not None
    timer = TimerFired(instance.saga_id, instance.pending_command_id or "", instance.deadline)
    decision = decide(saga, instance, timer, instance.deadline)
    assert decision.outcome is Outcome.FAILED
    assert decision.instance is not None and decision.instance.deadline is None
    assert ended_with(decision) == ("saga.order_to_cash.failed.v1", decision.instance.failure)


async def test_a_refused_forward_command_fails_its_step_and_compensates_the_earlier_ones() -> None:
    state = await saga_after(harness(), RESERVED)
    charge = state.pending_command_id
    assert charge is not None
    refused = CommandRefused(state.saga_id, charge, "5000 bytes, limit 1000", "m")
    decision = decide(SAGA, state, refused, T0)
    assert [o.payload.message_type for o in decision.send] == ["inventory.release_stock.v1"]
    assert [o.causation_id for o in decision.send] == ["m"]
    after = decision.instance
    assert after is not None and after.steps[1].status is StepStatus.FAILED
    assert after.failure == "step charge_payment failed: 5000 bytes, limit 1000"
    release = Inbound("r-9", RELEASED, OID, after.pending_command_id)
    done = decide(SAGA, after, release, T0).instance
    assert done is not None and done.status is SagaStatus.COMPENSATED


async def test_a_refused_compensation_fails_the_saga_for_an_operator() -> None:
    state = await saga_after(harness(), RESERVED, DECLINED)
    release = state.pending_command_id
    assert release is not None
    decision = decide(SAGA, state, CommandRefused(state.saga_id, release, "too big", "m"), T0)
    after = decision.instance
    assert after is not None and after.status is SagaStatus.FAILED
    assert after.steps[0].status is StepStatus.COMPENSATION_FAILED
    # no command goes out, only the saga's end
    assert ended_with(decision) == ("saga.order_to_cash.failed.v1", after.failure)
    assert decision.send[0].causation_id == "m"


async def test_a_refusal_of_a_command_no_longer_awaited_is_ignored() -> None:
    state = await saga_after(harness())
    decision = decide(SAGA, state, CommandRefused(state.saga_id, "other", "too big", "m"), T0)
    assert decision.outcome is Outcome.IGNORED


async def test_a_finished_saga_keeps_no_secret_in_its_data() -> None:
    event = placed().model_copy(update={"payment_token": SecretStr("tok_4242")})
    assert isinstance(event, OrderPlaced)
    subject = harness()
    for command, reply in (
        (ReserveStock, RESERVED),
        (ChargePayment, CHARGED),
        (CreateShipment, SHIPPED),
    ):
        subject.reply(command, lambda _, reply=reply: reply)  # type: ignore[misc]
    subject.reply(ReserveStock)  # held back: look at the saga while it runs
    await subject.publish(event)
    await subject.run_until_idle()
    # while the saga runs, the token is there for the commands that need it
    running = await subject.saga(OID)
    assert running.data["order"]["payment_token"] == "tok_4242"
    await subject.answer(subject.commands[-1], RESERVED)
    await subject.run_until_idle()
    done = await subject.saga(OID)
    assert done.status is SagaStatus.COMPLETED
    assert done.data["order"]["payment_token"] == REDACTED
    assert "tok_4242" not in done.model_dump_json()
    # nor in its history: the commands that carried it are recorded masked
    history = await subject.history(OID)
    assert "tok_4242" not in repr([h.payload for h in history])


def test_a_saga_failed_by_its_own_code_keeps_its_data_for_resume() -> None:
    # A failed saga waits for an operator, whose ``resume`` compensates with its data:
    # secrets included (views mask them); masked once it ends compensated.
    event = placed().model_copy(update={"payment_token": SecretStr("tok_4242")})
    saga = broken("charge_payment", command=boom)
    started = decide(saga, None, Inbound("e-1", event, OID), T0)
    assert started.instance is not None
    assert started.instance.data["order"]["payment_token"] == "tok_4242"
    reply = Inbound("r-1", RESERVED, OID, started.instance.pending_command_id)
    failed = decide(saga, started.instance, reply, T0 + timedelta(seconds=1)).instance
    assert failed is not None and failed.status is SagaStatus.FAILED
    assert failed.data["order"]["payment_token"] == "tok_4242"


def test_fail_keeps_the_data() -> None:
    from bus_orchestrator.core import fail

    event = placed().model_copy(update={"payment_token": SecretStr("tok_4242")})
    started = decide(order_to_cash.build(), None, Inbound("e-1", event, OID), T0).instance
    assert started is not None
    assert fail(started, "gave up", T0).data == started.data
