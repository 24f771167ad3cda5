"""The dashboard in a real browser (Debian's Chromium, driven by Playwright), over the API
process of the payouts app on the real services.

With the bank adapter broken, one payout fails (its payee is rejected and the credit that
undoes its debit keeps failing); with it fixed, another is compensated. The test signs in,
reads the overview, finds the compensated payout by its correlation id and reads its failed
step and its compensation in the timeline, then resumes the failed one from its page and
watches it end compensated. It takes screenshots of the overview and a saga page: into
``docs/`` (where the README shows them) with ``BUS_UI_SCREENSHOTS=docs``, else into the
test's own folder.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from bus_orchestrator.config import Settings
from bus_orchestrator.core import SagaStatus
from tests.conftest import TestBus
from tests.e2e.payouts import PayoutRequested
from tests.e2e.processes import Processes, free_port, wait_for_consumers
from tests.e2e.test_api import wait_until_serving
from tests.integration.harness import publish, sql, wait_for_status

pytestmark = pytest.mark.e2e

APP = "tests.e2e.payouts:payouts_app"
QUEUES = ("payouts.coordinator", "payouts.adapter.bank")
TOKEN = "browser-operator-token"
CHROMIUM = shutil.which("chromium")
ROOT = Path(__file__).resolve().parents[2]

playwright_api = pytest.importorskip("playwright.async_api")


@pytest.fixture
async def browser() -> AsyncIterator[object]:
    if CHROMIUM is None:
        if os.environ.get("CI"):
            pytest.fail("no chromium on PATH: .ci/run installs Debian's chromium")
        pytest.skip("no Chromium here: apt-get install chromium")
    async with playwright_api.async_playwright() as p:
        launched = await p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        try:
            yield launched
        finally:
            await launched.close()


async def test_an_operator_finds_reads_and_repairs_sagas_in_the_browser(
    settings: Settings,
    schema: str,
    bus: TestBus,
    processes: Processes,
    browser: object,
    tmp_path: Path,
) -> None:
    shots = (
        ROOT / os.environ["BUS_UI_SCREENSHOTS"] if "BUS_UI_SCREENSHOTS" in os.environ else tmp_path
    )
    await processes.start(settings, "run", BUS_APP=APP)
    broken = await processes.start(settings, "adapters", BUS_APP=APP, PAYOUTS_BANK="broken")
    port = free_port()
    await processes.start(
        settings, "api", BUS_APP=APP, BUS_API_PORT=str(port),
        BUS_API_TOKENS=f"{TOKEN}=operator:olga",
    )  # fmt: skip
    bus.queues += [f"{settings.exchange_prefix}bus.{q}" for q in QUEUES]
    await wait_for_consumers(bus.connection, settings, QUEUES)
    base = f"http://127.0.0.1:{port}"
    await wait_until_serving(base, processes)

    run = uuid.uuid4().hex[:6]
    failed, compensated = f"reject-a-{run}", f"reject-b-{run}"
    channel = await bus.channel()
    await publish(channel, bus.topology.events, PayoutRequested(payout_id=failed))
    await wait_for_status(settings, [failed], {SagaStatus.FAILED})
    await processes.stop(broken)  # the bank is fixed
    await processes.start(settings, "adapters", BUS_APP=APP, PAYOUTS_BANK="fixed")
    await wait_for_consumers(bus.connection, settings, QUEUES)
    await publish(channel, bus.topology.events, PayoutRequested(payout_id=compensated))
    await wait_for_status(settings, [compensated], {SagaStatus.COMPENSATED})

    page = await browser.new_page(viewport={"width": 1280, "height": 800})  # type: ignore[attr-defined]
    problems: list[str] = []
    page.on("pageerror", lambda error: problems.append(str(error)))

    # sign in; the overview counts the sagas by status
    await page.goto(f"{base}/ui")
    await page.fill("#token", TOKEN)
    await page.press("#token", "Enter")
    await page.wait_for_selector(".cards")
    assert await page.text_content("#who") == "olga (operator)"
    cards = {
        (await card.locator(".label").text_content()): (await card.locator(".big").text_content())
        for card in await page.locator(".card").all()
    }
    assert cards["failed"] == "1" and cards["compensated"] == "1"
    shots.mkdir(exist_ok=True)
    await page.screenshot(path=str(shots / "dashboard-overview.png"))

    # the compensated payout, found by its correlation id: its failed step in red, then
    # the compensation of the step before it
    await page.fill("#search-box", compensated)
    await page.press("#search-box", "Enter")
    await page.wait_for_selector(".timeline")
    assert await page.locator("h1 .status").text_content() == "compensated"
    failure = page.locator(".timeline li.failure", has_text="payouts.payee_rejected.v1")
    assert await failure.count() == 1
    undo = page.locator(".timeline li.compensation", has_text="payouts.credit.v1")
    assert await undo.count() == 1
    kinds = await page.locator(".timeline li .kind").all_text_contents()
    assert kinds.index("payouts.payee_rejected.v1") < kinds.index("payouts.credit.v1")
    assert await page.locator(".repairs").count() == 0  # nothing to repair
    await page.screenshot(path=str(shots / "dashboard-saga.png"), full_page=True)

    # the failed payout: resume it, and watch it end compensated
    await page.fill("#search-box", failed)
    await page.press("#search-box", "Enter")
    await page.wait_for_selector(".repairs")
    assert await page.locator("h1 .status").text_content() == "failed"
    assert await page.locator(".repairs button").all_text_contents() == ["resume"]
    await page.click(".repairs button:has-text('resume')")
    await page.fill("#repair-reason", "the ledger is unlocked")
    await page.click("dialog button[type=submit]")
    await page.wait_for_selector(".notice.ok")
    for _ in range(50):
        await page.reload()
        await page.wait_for_selector("h1 .status")
        if await page.locator("h1 .status").text_content() == "compensated":
            break
        await asyncio.sleep(0.2)
    assert await page.locator("h1 .status").text_content() == "compensated"
    operator = page.locator(".timeline li.operator")
    assert "resume by olga: the ledger is unlocked" in (await operator.text_content() or "")
    assert problems == []

    # a long history: 500 more entries on the compensated payout; the page's own timing
    # (fetch to rendered, measured in the page) is logged, not asserted
    await sql(
        settings,
        "INSERT INTO saga_history (saga_id, at, direction, message_id, message_type, "
        "correlation_id, causation_id, outcome, note, payload) "
        "SELECT s.saga_id, now() + n * interval '1 second', 'in', 'filler-' || n, "
        "'payouts.payee_ok.v1', s.correlation_id, NULL, 'ignored', 'a late copy', "
        "jsonb_build_object('payout_id', s.correlation_id) "
        "FROM saga s, generate_series(1, 500) n WHERE s.correlation_id = $1",
        compensated,
    )
    await page.goto(f"{base}/ui/sagas/{compensated}")
    await page.wait_for_selector(".timeline")
    assert await page.locator(".timeline li").count() >= 500
    rendered = await page.locator("main").get_attribute("data-rendered-ms")
    print(f"saga page with {await page.locator('.timeline li').count()} entries: {rendered} ms")
