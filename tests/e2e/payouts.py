"""A payout saga whose bank adapter can be broken, for the repair tests.

``payout`` debits an account (undone by a credit), checks the payee, then transfers; the
transfer suspends the saga for an operator when it fails or times out
(``OnFailure.SUSPEND``). The ``bank`` adapter reads ``PAYOUTS_BANK`` on each command:
``broken`` (the default) refuses every credit and loses transfers whose payout id starts
with ``lost`` (its handler fails: the command is dead-lettered, the saga hears nothing);
``fixed`` does all. A payee whose payout id starts with ``reject`` fails the check. Only
the engine's public API is used.
"""

from __future__ import annotations

import os
from datetime import timedelta
from typing import Annotated

from pydantic import BaseModel, Field

from bus_orchestrator.adapters import Adapter, CommandContext
from bus_orchestrator.app import App
from bus_orchestrator.core import OnFailure, SagaDefinition, Step
from bus_orchestrator.core.messages import Command, Event, Reply
from bus_orchestrator.errors import PermanentAdapterError

Id = Annotated[str, Field(min_length=1, max_length=200)]
TIMEOUT = timedelta(seconds=2)
"""Short, so that a lost transfer suspends its saga quickly."""


class PayoutRequested(Event):
    message_type = "payouts.payout_requested.v1"
    payout_id: Id


class Debit(Command):
    message_type = "payouts.debit.v1"
    payout_id: Id


class Debited(Reply):
    message_type = "payouts.debited.v1"
    payout_id: Id


class Credit(Command):
    message_type = "payouts.credit.v1"
    payout_id: Id


class Credited(Reply):
    message_type = "payouts.credited.v1"
    payout_id: Id


class CreditFailed(Reply):
    message_type = "payouts.credit_failed.v1"
    payout_id: Id
    reason: str


class CheckPayee(Command):
    message_type = "payouts.check_payee.v1"
    payout_id: Id


class PayeeOk(Reply):
    message_type = "payouts.payee_ok.v1"
    payout_id: Id


class PayeeRejected(Reply):
    message_type = "payouts.payee_rejected.v1"
    payout_id: Id
    reason: str


class Transfer(Command):
    message_type = "payouts.transfer.v1"
    payout_id: Id


class Transferred(Reply):
    message_type = "payouts.transferred.v1"
    payout_id: Id
    reference: Id


class Payout(BaseModel):
    payout_id: str
    reference: str | None = None


def payout_saga() -> SagaDefinition[Payout, PayoutRequested]:
    return SagaDefinition(
        name="payout",
        data_model=Payout,
        started_by=PayoutRequested,
        correlate=lambda e: e.payout_id,
        initial_data=lambda e: Payout(payout_id=e.payout_id),
        steps=(
            Step(
                name="debit",
                command=lambda d: Debit(payout_id=d.payout_id),
                succeeds_on=(Debited,),
                compensation=lambda d: Credit(payout_id=d.payout_id),
                compensated_on=(Credited,),
                compensation_fails_on=(CreditFailed,),
                timeout=TIMEOUT,
            ),
            Step(
                name="check_payee",
                command=lambda d: CheckPayee(payout_id=d.payout_id),
                succeeds_on=(PayeeOk,),
                fails_on=(PayeeRejected,),
                timeout=TIMEOUT,
            ),
            Step[Payout, Transferred](
                name="transfer",
                command=lambda d: Transfer(payout_id=d.payout_id),
                succeeds_on=(Transferred,),
                on_reply=lambda d, r: d.model_copy(update={"reference": r.reference}),
                timeout=TIMEOUT,
                on_failure=OnFailure.SUSPEND,
            ),
        ),
    )


def _fixed() -> bool:
    return os.environ.get("PAYOUTS_BANK", "broken") == "fixed"


def bank_adapter() -> Adapter:
    bank = Adapter("bank")

    @bank.handles(Debit, replies=(Debited,))
    async def debit(command: Debit, ctx: CommandContext) -> Debited:
        return Debited(payout_id=command.payout_id)

    @bank.handles(Credit, replies=(Credited, CreditFailed))
    async def credit(command: Credit, ctx: CommandContext) -> Credited | CreditFailed:
        if not _fixed():
            return CreditFailed(payout_id=command.payout_id, reason="ledger locked")
        return Credited(payout_id=command.payout_id)

    @bank.handles(CheckPayee, replies=(PayeeOk, PayeeRejected))
    async def check(command: CheckPayee, ctx: CommandContext) -> PayeeOk | PayeeRejected:
        if command.payout_id.startswith("reject"):
            return PayeeRejected(payout_id=command.payout_id, reason="account closed")
        return PayeeOk(payout_id=command.payout_id)

    @bank.handles(Transfer, replies=(Transferred,))
    async def transfer(command: Transfer, ctx: CommandContext) -> Transferred:
        if command.payout_id.startswith("lost") and not _fixed():
            raise PermanentAdapterError("the transfer gateway dropped the request")
        return Transferred(payout_id=command.payout_id, reference=f"ref-{ctx.command_id[:8]}")

    return bank


def payouts_app() -> App:
    return App("payouts", sagas=[payout_saga()], adapters=[bank_adapter()])
