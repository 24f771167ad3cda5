"""``GET /schedules`` on the real Postgres store: each schedule's next firing from its
expression, its last from the table the coordinators fire through; and its refusals."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import httpx
import pytest
from pydantic import SecretStr

from bus_orchestrator.api import create_api
from bus_orchestrator.app import App
from bus_orchestrator.config import Settings
from bus_orchestrator.core.schedule import slot_event_id
from bus_orchestrator.ports import OutboxMessage
from bus_orchestrator.store.memory import InMemorySagaStore
from bus_orchestrator.store.postgres import PostgresSagaStore, create_pool
from bus_orchestrator.store.schedules import PostgresScheduleStore
from tests.e2e.schedule_app import NAME, Ticked, schedules
from tests.integration.harness import migrated

pytestmark = pytest.mark.integration

READER = "schedules-reader"
HOURLY = "0 * * * *"


def settings_with_tokens(settings: Settings) -> Settings:
    return settings.model_copy(update={"api_tokens": SecretStr(f"{READER}=reader")})


async def test_schedules_show_next_and_last_firing(settings: Settings, db_schema: str) -> None:
    await migrated(settings)
    app = App(NAME, schedules=schedules(HOURLY))
    pool = await create_pool(settings.model_copy(update={"db_pool_size": 2}))
    try:
        slot = datetime(2026, 1, 1, 12, tzinfo=UTC)
        fired_at = slot + timedelta(seconds=40)  # caught up at a start-up
        message = OutboxMessage(
            slot_event_id(NAME, "caught", slot),
            Ticked.message_type,
            "bus.events",
            Ticked.message_type,
            b"{}",
            "application/json",
        )
        store = PostgresScheduleStore(pool, timedelta(seconds=10))
        assert await store.fire(NAME, "caught", slot, None, message, fired_at) is not None
        served = create_api(
            settings_with_tokens(settings), app, store=PostgresSagaStore(pool, timedelta(1))
        )
        served.state.pool = pool  # what the lifespan opens when the API runs as a process
        transport = httpx.ASGITransport(app=served)
        async with httpx.AsyncClient(transport=transport, base_url="http://api") as http:
            before = datetime.now(UTC)
            response = await http.get("/schedules", headers={"Authorization": f"Bearer {READER}"})
            after = datetime.now(UTC)
            refused = await http.get("/schedules")
            wrong = await http.get("/schedules", headers={"Authorization": "Bearer nope"})
    finally:
        await pool.close()

    assert response.status_code == 200, response.text
    caught, skipped = response.json()["items"]
    assert {k: v for k, v in caught.items() if k != "next_firing"} == {
        "name": "caught",
        "cron": HOURLY,
        "timezone": "UTC",
        "catch_up": True,
        "publishes": "tests.schedule_ticked.v1",
        "last_firing": {
            "slot": "2026-01-01T12:00:00+00:00",
            "fired_at": "2026-01-01T12:00:40+00:00",
            "event_id": slot_event_id(NAME, "caught", slot),
        },
    }
    hour = timedelta(hours=1)
    following = datetime.fromisoformat(caught["next_firing"])
    assert following.minute == 0 and before < following <= after + hour
    assert (skipped["name"], skipped["timezone"], skipped["catch_up"]) == (
        "skipped",
        "Europe/Berlin",
        False,
    )
    assert skipped["last_firing"] is None and skipped["next_firing"] == caught["next_firing"]
    assert refused.status_code == 401 and wrong.status_code == 401
    assert refused.json()["error"] == "unauthorized"


async def test_an_app_without_schedules_lists_none(settings: Settings) -> None:
    served = create_api(
        settings_with_tokens(settings), App("no-schedules"), store=InMemorySagaStore()
    )
    transport = httpx.ASGITransport(app=served)
    async with httpx.AsyncClient(transport=transport, base_url="http://api") as http:
        response = await http.get("/schedules", headers={"Authorization": f"Bearer {READER}"})
        document = (await http.get("/openapi.json")).json()
    assert response.json() == {"items": []}
    declared = document["paths"]["/schedules"]["get"]["responses"]
    assert {"200", "401", "403", "503"} <= set(declared)
