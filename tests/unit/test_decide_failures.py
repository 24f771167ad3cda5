"""decide() when things go wrong: saga code that raises, a command that cannot be sent,
and what a finished saga keeps at rest."""

from __future__ import annotations

from datetime import timedelta

from pydantic import SecretStr

from bus_orchestrator.core import (
    CommandRefused,
    Inbound,
    Outcome,
    SagaStatus,
    Step,
    StepStatus,
    TimerFired,
    decide,
)
from bus_orchestrator.core.messages import REDACTED
from contracts import OrderPlaced
from sagas import order_to_cash
from tests.unit.test_decide import (
    CHARGED,
    DECLINED,
    OID,
    RELEASED,
    RESERVED,
    SHIPPED,
    T0,
    Run,
    placed,
)


def broken(step_name: str, **changes: object) -> object:
    """Order-to-cash with one step's functions replaced."""
    saga = order_to_cash.build(timedelta(seconds=30))
    steps = tuple(
        Step(**{**s.__dict__, **changes}) if s.name == step_name else s for s in saga.steps
    )
    return type(saga)(**{**saga.__dict__, "steps": steps})


def boom(*_: object) -> object:
    raise ValueError("the ERP changed its mind")


def test_saga_code_that_raises_fails_the_saga_with_the_error() -> None:
    saga = broken("charge_payment", command=boom)
    run = Run()
    started = decide(saga, None, Inbound("e-1", placed(), OID), T0)
    run.instance = started.instance
    assert run.instance is not None
    reply = Inbound("r-1", RESERVED, OID, run.instance.pending_command_id)
    decision = decide(saga, run.instance, reply, T0 + timedelta(seconds=1))
    assert decision.outcome is Outcome.FAILED and isinstance(decision.error, ValueError)
    assert decision.send == ()
    failed = decision.instance
    assert failed is not None and failed.status is SagaStatus.FAILED
    assert failed.failure == (
        "saga code raised on inventory.stock_reserved.v1: ValueError: the ERP changed its mind"
    )
    assert failed.version == run.instance.version + 1
    assert (failed.pending_command_id, failed.deadline) == (None, None)
    # a failed saga takes no further messages
    late = decide(saga, failed, Inbound("r-2", CHARGED, OID, "x"), T0 + timedelta(seconds=2))
    assert late.outcome is Outcome.IGNORED


def test_initial_data_that_raises_leaves_a_failed_saga_to_find() -> None:
    saga = order_to_cash.build()
    saga = type(saga)(**{**saga.__dict__, "initial_data": boom})
    decision = decide(saga, None, Inbound("e-1", placed(), OID), T0)
    assert decision.outcome is Outcome.FAILED
    assert decision.instance is not None
    assert (decision.instance.correlation_id, decision.instance.status) == (
        OID,
        SagaStatus.FAILED,
    )


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


def test_a_refused_forward_command_fails_its_step_and_compensates_the_earlier_ones() -> None:
    run = Run()
    run.event(placed())
    run.reply(RESERVED)
    charge = run.state.pending_command_id
    assert charge is not None
    decision = run.feed(CommandRefused(run.state.saga_id, charge, "5000 bytes, limit 1000", "m"))
    assert [o.payload.message_type for o in decision.send] == ["inventory.release_stock.v1"]
    assert [o.causation_id for o in decision.send] == ["m"]
    assert run.step_statuses()[1] == ("charge_payment", StepStatus.FAILED)
    assert run.state.failure == "step charge_payment failed: 5000 bytes, limit 1000"
    run.reply(RELEASED)
    assert run.state.status is SagaStatus.COMPENSATED


def test_a_refused_compensation_fails_the_saga_for_an_operator() -> None:
    run = Run()
    run.event(placed())
    run.reply(RESERVED)
    release = run.reply(DECLINED).send[0]
    decision = run.feed(CommandRefused(run.state.saga_id, release.message_id, "too big", "m"))
    assert decision.send == ()
    assert run.state.status is SagaStatus.FAILED
    assert run.step_statuses()[0] == ("reserve_stock", StepStatus.COMPENSATION_FAILED)


def test_a_refusal_of_a_command_no_longer_awaited_is_ignored() -> None:
    run = Run()
    run.event(placed())
    decision = run.feed(CommandRefused(run.state.saga_id, "other", "too big", "m"))
    assert decision.outcome is Outcome.IGNORED


def test_a_finished_saga_keeps_no_secret_in_its_data() -> None:
    event = placed().model_copy(update={"payment_token": SecretStr("tok_4242")})
    assert isinstance(event, OrderPlaced)
    run = Run()
    run.feed(Inbound("e-1", event, OID))
    # while the saga runs, the token is there for the commands that need it
    assert run.state.data["order"]["payment_token"] == "tok_4242"
    run.reply(RESERVED)
    run.reply(CHARGED)
    run.reply(SHIPPED)
    assert run.state.status is SagaStatus.COMPLETED
    assert run.state.data["order"]["payment_token"] == REDACTED
    assert "tok_4242" not in run.state.model_dump_json()


def test_a_saga_failed_by_its_own_code_keeps_no_secret_either() -> None:
    event = placed().model_copy(update={"payment_token": SecretStr("tok_4242")})
    saga = broken("charge_payment", command=boom)
    started = decide(saga, None, Inbound("e-1", event, OID), T0)
    assert started.instance is not None
    assert started.instance.data["order"]["payment_token"] == "tok_4242"
    reply = Inbound("r-1", RESERVED, OID, started.instance.pending_command_id)
    failed = decide(saga, started.instance, reply, T0 + timedelta(seconds=1)).instance
    assert failed is not None and failed.status is SagaStatus.FAILED
    assert failed.data["order"]["payment_token"] == REDACTED


def test_fail_with_a_definition_masks_secrets_and_without_keeps_the_data() -> None:
    from bus_orchestrator.core import fail

    event = placed().model_copy(update={"payment_token": SecretStr("tok_4242")})
    started = decide(order_to_cash.build(), None, Inbound("e-1", event, OID), T0).instance
    assert started is not None
    masked = fail(started, "gave up", T0, order_to_cash.build())
    assert masked.data["order"]["payment_token"] == REDACTED
    assert fail(started, "gave up", T0).data == started.data
