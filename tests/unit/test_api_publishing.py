"""The write routes in process over the in-memory store (no services): what they commit
waits in the store's outbox; and schemathesis, with an operator's token, finds no
response the document does not declare on ``POST /events`` and ``POST /webhooks``.

The same routes on the real services: ``tests/integration/test_api_events.py`` and
``test_api_webhooks.py``."""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any

import httpx
import hypothesis
import pytest
import schemathesis
from fastapi import FastAPI

from bus_orchestrator.api import create_api
from bus_orchestrator.app import App
from bus_orchestrator.config import Settings
from bus_orchestrator.store.memory import InMemorySagaStore
from bus_orchestrator.webhooks import Webhook, sign
from contracts import OrderCancelled
from sagas import order_to_cash

OPERATOR = "unit-operator"
SECRET = "unit-webhook-secret"


def cancelled(payload: Any) -> dict[str, Any]:
    return {"order_id": payload["id"], "reason": payload.get("why")}


def app() -> App:
    hook = Webhook("shop", event=OrderCancelled, map=cancelled, secret_env="UNIT_SHOP_SECRET")
    return App("unit-pub", sagas=[order_to_cash.build()], webhooks=[hook])


def served(store: InMemorySagaStore) -> FastAPI:
    settings = Settings(api_tokens=f"{OPERATOR}=operator")
    return create_api(settings, app(), store=store)


@pytest.fixture
async def store(monkeypatch: pytest.MonkeyPatch) -> InMemorySagaStore:
    monkeypatch.setenv("UNIT_SHOP_SECRET", SECRET)
    return InMemorySagaStore(outbox_lease=timedelta(seconds=-1))  # claimable at once


@pytest.fixture
async def http(store: InMemorySagaStore) -> AsyncIterator[httpx.AsyncClient]:
    api = served(store)
    async with (
        api.router.lifespan_context(api),
        httpx.AsyncClient(
            transport=httpx.ASGITransport(api),
            base_url="http://api",
            headers={"Authorization": f"Bearer {OPERATOR}"},
        ) as client,
    ):
        yield client


async def unsent(store: InMemorySagaStore) -> list[dict[str, Any]]:
    rows = await store.claim_unsent(timedelta(0), limit=100)
    return [
        {"id": r.message.message_id, "type": r.message.message_type, **json.loads(r.message.body)}
        for r in rows
    ]


async def test_an_event_waits_in_the_outbox_of_the_in_memory_store(
    http: httpx.AsyncClient, store: InMemorySagaStore
) -> None:
    body = {"data": {"order_id": "o-1", "reason": "changed mind"}}
    key = {"Idempotency-Key": "k-1"}
    first = await http.post("/events/orders.order_cancelled.v1", json=body, headers=key)
    again = await http.post("/events/orders.order_cancelled.v1", json=body, headers=key)
    assert first.status_code == again.status_code == 202
    assert first.json()["event_id"] == again.json()["event_id"]
    assert again.json()["duplicate"] is True
    assert await unsent(store) == [
        {
            "id": first.json()["event_id"],
            "type": "orders.order_cancelled.v1",
            "order_id": "o-1",
            "reason": "changed mind",
        }
    ]


async def test_a_signed_webhook_waits_in_the_outbox_too(
    http: httpx.AsyncClient, store: InMemorySagaStore
) -> None:
    raw = json.dumps({"id": "o-2", "why": "fraud"}).encode()
    headers = sign(SECRET.encode(), raw, time.time())
    response = await http.post("/webhooks/shop", content=raw, headers=headers)
    assert response.status_code == 202, response.text
    assert [(m["id"], m["order_id"]) for m in await unsent(store)] == [
        (response.json()["event_id"], "o-2")
    ]
    refused = await http.post("/webhooks/shop", content=raw + b" ", headers=headers)
    assert refused.status_code == 401
    assert len(await unsent(store)) == 1


def schema_app() -> FastAPI:
    import os

    os.environ.setdefault("UNIT_SHOP_SECRET", SECRET)
    return served(InMemorySagaStore())


schema = schemathesis.openapi.from_asgi("/openapi.json", schema_app()).include(
    path_regex="^/(events|webhooks)/"
)


@schema.parametrize()
@hypothesis.settings(derandomize=True, database=None, deadline=None, max_examples=60)
def test_every_response_of_the_write_routes_is_declared(case: Any) -> None:
    # A body the document allows (any object as `data`) is refused when the event's own
    # contract refuses it, and a webhook request without a real signature is 401: the
    # document cannot say which, so schema-valid requests may rightly be refused.
    case.call_and_validate(
        headers={"Authorization": f"Bearer {OPERATOR}"},
        excluded_checks=[schemathesis.checks.positive_data_acceptance],
    )
