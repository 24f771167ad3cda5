"""An operator repairs sagas over HTTP, on the real services, in separate processes.

The payouts app (``tests/e2e/payouts.py``) runs as a coordinator, an adapters process and
an API process. With its bank adapter broken, one saga fails (its payee is rejected and the
credit that undoes the debit keeps failing) and one is suspended (its transfer is lost and
times out). The adapter is fixed (restarted with ``PAYOUTS_BANK=fixed``), then ``resume``
compensates the failed saga and ``retry`` resends the transfer, with the same command id,
and the saga completes. Each repair is in the saga's history with who did it and why.
"""

from __future__ import annotations

import json
import uuid
from typing import Any

import httpx
import pytest

from bus_orchestrator.config import Settings
from bus_orchestrator.core import SagaStatus, StepStatus
from tests.conftest import TestBus
from tests.e2e.payouts import PayoutRequested
from tests.e2e.processes import Processes, cli, free_port, wait_for_consumers
from tests.e2e.test_api import wait_until_serving
from tests.integration.harness import publish, wait_for_status

pytestmark = pytest.mark.e2e

APP = "tests.e2e.payouts:payouts_app"
QUEUES = ("payouts.coordinator", "payouts.adapter.bank")
TOKEN = "e2e-operator-token"


async def test_a_failed_saga_is_resumed_and_a_suspended_one_retried_over_http(
    settings: Settings, schema: str, bus: TestBus, processes: Processes
) -> None:
    await processes.start(settings, "run", BUS_APP=APP)
    broken = await processes.start(settings, "adapters", BUS_APP=APP, PAYOUTS_BANK="broken")
    port = free_port()
    await processes.start(
        settings,
        "api",
        BUS_APP=APP,
        BUS_API_PORT=str(port),
        BUS_API_TOKENS=f"{TOKEN}=operator:olga",
    )
    bus.queues += [f"{settings.exchange_prefix}bus.{q}" for q in QUEUES]
    await wait_for_consumers(bus.connection, settings, QUEUES)
    base = f"http://127.0.0.1:{port}"
    await wait_until_serving(base, processes)

    run = uuid.uuid4().hex[:6]
    rejected, lost = f"reject-{run}", f"lost-{run}"
    channel = await bus.channel()
    for payout in (rejected, lost):
        await publish(channel, bus.topology.events, PayoutRequested(payout_id=payout))
    sagas = await wait_for_status(settings, [rejected], {SagaStatus.FAILED})
    sagas |= await wait_for_status(settings, [lost], {SagaStatus.SUSPENDED})
    failed, suspended = sagas[rejected], sagas[lost]
    assert failed.failure is not None and "ledger locked" in failed.failure
    assert [s.status for s in failed.steps] == [StepStatus.COMPENSATION_FAILED, StepStatus.FAILED]
    transfer = suspended.steps[-1]
    assert (transfer.name, transfer.status) == ("transfer", StepStatus.TIMED_OUT)

    # the bank's adapter is fixed: deployed again
    await processes.stop(broken)
    await processes.start(settings, "adapters", BUS_APP=APP, PAYOUTS_BANK="fixed")
    await wait_for_consumers(bus.connection, settings, QUEUES)

    headers = {"Authorization": f"Bearer {TOKEN}"}
    async with httpx.AsyncClient(base_url=base, headers=headers) as http:
        view = (await http.get(f"/sagas/{rejected}")).json()
        assert view["repairs"] == ["resume"]
        assert (await http.get(f"/sagas/{lost}")).json()["awaiting"]["kind"] == "operator"

        resumed = await http.post(f"/sagas/{rejected}/resume", json={"reason": "ledger fixed"})
        assert resumed.status_code == 200, resumed.text
        assert resumed.json()["saga"]["status"] == "compensating"
        retried = await http.post(f"/sagas/{lost}/retry", json={"reason": "gateway fixed"})
        assert retried.status_code == 200, retried.text
        assert retried.json()["saga"]["status"] == "running"

        done = await wait_for_status(settings, [rejected], {SagaStatus.COMPENSATED})
        done |= await wait_for_status(settings, [lost], {SagaStatus.COMPLETED})
        assert done[rejected].steps[0].status is StepStatus.COMPENSATED
        assert done[lost].data["reference"] is not None

        # once done, neither repair is allowed again: refused, nothing changes
        again = await http.post(f"/sagas/{rejected}/resume", json={"reason": "twice"})
        assert again.status_code == 409 and again.json()["status"] == "compensated"

        for payout, repair, reason in (
            (rejected, "resume", "ledger fixed"),
            (lost, "retry", "gateway fixed"),
        ):
            history = (await http.get(f"/sagas/{payout}/history")).json()["entries"]
            actions = [e for e in history if e["message_type"] == f"bus.operator.{repair}"]
            assert [(a["payload"]["by"], a["payload"]["reason"]) for a in actions] == [
                ("olga", reason)
            ]
        transfers = sent(history, "payouts.transfer.v1")
        # the lost transfer went out again with its own command id: the adapter may have done it
        assert len(transfers) == 2 and len({t["message_id"] for t in transfers}) == 1


def sent(history: list[dict[str, Any]], message_type: str) -> list[dict[str, Any]]:
    return [e for e in history if e["direction"] == "out" and e["message_type"] == message_type]


async def test_the_cli_repairs_as_the_api_does(
    settings: Settings, schema: str, bus: TestBus, processes: Processes
) -> None:
    await processes.start(settings, "run", BUS_APP=APP)
    broken = await processes.start(settings, "adapters", BUS_APP=APP, PAYOUTS_BANK="broken")
    bus.queues += [f"{settings.exchange_prefix}bus.{q}" for q in QUEUES]
    await wait_for_consumers(bus.connection, settings, QUEUES)
    run = uuid.uuid4().hex[:6]
    rejected, lost = f"reject-{run}", f"lost-{run}"
    channel = await bus.channel()
    for payout in (rejected, lost):
        await publish(channel, bus.topology.events, PayoutRequested(payout_id=payout))
    await wait_for_status(settings, [rejected], {SagaStatus.FAILED})
    await wait_for_status(settings, [lost], {SagaStatus.SUSPENDED})

    # the transfer was made by phone: the step is marked done with the bank's reference
    reply = json.dumps({"payout_id": lost, "reference": "phone-77"})
    code, out, err = await cli(
        settings, "sagas", "skip", lost, "--reason", "paid by phone", "--data", reply,
        "--by", "bob", "--json", BUS_APP=APP,
    )  # fmt: skip
    assert code == 0, err
    shown = json.loads(out)
    assert shown["saga"]["status"] == "completed" and shown["repeated"] is False
    assert shown["saga"]["data"]["reference"] == "phone-77"

    code, _, err = await cli(settings, "sagas", "abort", lost, "--reason", "x", BUS_APP=APP)
    assert code == 1
    assert "abort refused: the saga is completed: nothing to repair" in err

    code, _, err = await cli(settings, "sagas", "resume", rejected, "--reason", "", BUS_APP=APP)
    assert code == 2 and "--reason is required" in err

    # resumed from the shell: the credit goes out from the CLI, the saga compensates
    await processes.stop(broken)
    await processes.start(settings, "adapters", BUS_APP=APP, PAYOUTS_BANK="fixed")
    await wait_for_consumers(bus.connection, settings, QUEUES)
    code, out, err = await cli(
        settings, "sagas", "resume", rejected, "--reason", "ledger fixed", BUS_APP=APP
    )
    assert code == 0, err
    assert f"payout/{rejected}: resume; now compensating" in out
    await wait_for_status(settings, [rejected], {SagaStatus.COMPENSATED})
