"""schemathesis against the API's own ``/openapi.json`` (in process, over the in-memory
store holding a few sagas): no server error, and no response the document does not
declare (status, content type, body schema). The served process on the real Postgres
store is checked the same way in ``tests/e2e/test_api.py``."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import hypothesis
import schemathesis
from fastapi import FastAPI

from bus_orchestrator.api import create_api
from bus_orchestrator.app import App
from bus_orchestrator.config import Settings
from bus_orchestrator.core import Inbound, decide
from bus_orchestrator.ports import Change
from bus_orchestrator.store.memory import InMemorySagaStore
from contracts import Address, LineItem, OrderPlaced
from sagas import order_to_cash

TOKEN = "schema-operator"  # every route, those that change things included
T0 = datetime(2025, 1, 1, tzinfo=UTC)


def order(order_id: str) -> OrderPlaced:
    return OrderPlaced(
        order_id=order_id,
        customer_id="c-1",
        items=(LineItem(sku="S", quantity=1, unit_price="1.00"),),
        total="1.00",
        currency="EUR",
        shipping_address=Address(country="DE"),
        payment_token="tok-1",
    )


async def filled_store() -> InMemorySagaStore:
    store = InMemorySagaStore()
    for n in range(5):
        inbound = Inbound(str(uuid.uuid4()), order(f"o-{n}"), f"o-{n}")
        decision = decide(order_to_cash.build(), None, inbound, T0 + timedelta(seconds=n))
        assert decision.instance is not None
        await store.commit(
            Change(
                "test", inbound.message_id, decision.instance.saga_id, decision.instance, None, ()
            )
        )
    return store


def served() -> FastAPI:
    settings = Settings(api_tokens=f"{TOKEN}=operator")
    app = App("schema-test", sagas=[order_to_cash.build()])
    return create_api(settings, app, store=asyncio.run(filled_store()))


schema = schemathesis.openapi.from_asgi("/openapi.json", served())


@schema.parametrize()
@hypothesis.settings(derandomize=True, database=None, deadline=None, max_examples=60)
def test_every_response_is_one_the_document_declares(case: Any) -> None:
    # A cursor is opaque: the document cannot say which strings are cursors, so one the
    # API did not give is (rightly) refused although the schema allows the string.
    excluded = (
        [schemathesis.checks.positive_data_acceptance] if "cursor" in (case.query or {}) else []
    )
    case.call_and_validate(headers={"Authorization": f"Bearer {TOKEN}"}, excluded_checks=excluded)
