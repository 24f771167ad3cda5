"""The HTTP API on the real Postgres store: every route, each refusal, pages that stay
stable while sagas are inserted, and secrets masked.

Sagas are written through the real store (``PostgresSagaStore.commit``) from the decisions
of the real definitions, and one through the running coordinator.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import httpx
import pytest
from pydantic import SecretStr

from bus_orchestrator.api import create_api
from bus_orchestrator.app import App
from bus_orchestrator.config import Settings
from bus_orchestrator.core import Inbound, decide
from bus_orchestrator.core.state import SagaInstance, SagaStatus
from bus_orchestrator.ports import Change, CommitResult, Direction, HistoryEntry
from bus_orchestrator.runtime.history import entry_in
from bus_orchestrator.store.postgres import PostgresSagaStore, create_pool
from bus_orchestrator.views import app_saga_view
from contracts import OrderPlaced
from contracts.onboarding import CustomerSignedUp
from example import create_app
from sagas import onboarding, order_to_cash
from tests.conftest import TestBus
from tests.integration.harness import migrated, order, publish, start_coordinator, wait_for_status

pytestmark = pytest.mark.integration

T0 = datetime(2025, 3, 1, 9, 0, tzinfo=UTC)
READER, OPERATOR = "reader-token-1", "operator-token-1"
SECRET = "tok-very-secret-42"


def api_app() -> App:
    """An app of two saga types (so a correlation id may be ambiguous); the second takes
    an entity lock."""
    return App("api-test", sagas=[order_to_cash.build(), onboarding.build()])


@dataclass
class Api:
    http: httpx.AsyncClient
    store: PostgresSagaStore

    async def get(self, path: str, token: str | None = READER, **params: Any) -> httpx.Response:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        return await self.http.get(path, headers=headers, params=params)

    async def ok(self, path: str, **params: Any) -> Any:
        response = await self.get(path, **params)
        assert response.status_code == 200, response.text
        return response.json()


@pytest.fixture
async def api(settings: Settings, db_schema: str) -> AsyncIterator[Api]:
    await migrated(settings)
    tokens = SecretStr(f"{READER}=reader,{OPERATOR}=operator")
    configured = settings.model_copy(update={"api_tokens": tokens})
    served = create_api(configured, api_app())
    pool = await create_pool(settings.model_copy(update={"db_pool_size": 2}))
    try:
        async with (
            served.router.lifespan_context(served),
            httpx.AsyncClient(transport=httpx.ASGITransport(served), base_url="http://api") as http,
        ):
            yield Api(http, PostgresSagaStore(pool, timedelta(seconds=1)))
    finally:
        await pool.close()


async def start(
    store: PostgresSagaStore,
    event: OrderPlaced | CustomerSignedUp,
    correlation_id: str,
    at: datetime,
) -> SagaInstance:
    """Start a saga as the coordinator would: the definition's decision, committed with
    its history (the event in, the first command out)."""
    definition = order_to_cash.build() if isinstance(event, OrderPlaced) else onboarding.build()
    inbound = Inbound(f"evt-{uuid.uuid4()}", event, correlation_id, source="urn:test")
    decision = decide(definition, None, inbound, at)
    instance = decision.instance
    assert instance is not None and instance.status is SagaStatus.RUNNING, decision.note
    history = [entry_in(inbound, str(decision.outcome), decision.note, at)]
    history += [
        HistoryEntry(
            direction=Direction.OUT,
            message_id=out.message_id,
            message_type=out.payload.message_type,
            correlation_id=out.correlation_id,
            causation_id=out.causation_id,
            outcome="sent",
            note="",
            payload={},
            at=at,
        )
        for out in decision.send
    ]
    committed = await store.commit(
        Change(
            consumer="test",
            message_id=inbound.message_id,
            saga_id=instance.saga_id,
            instance=instance,
            expected_version=None,
            history=tuple(history),
            source="urn:test",
        )
    )
    assert committed.result is CommitResult.COMMITTED
    return instance


async def start_order(
    store: PostgresSagaStore, order_id: str, at: datetime = T0, token: str | None = None
) -> SagaInstance:
    event = OrderPlaced.model_validate({**order(order_id).model_dump(), "payment_token": token})
    return await start(store, event, order_id, at)


def signup(signup_id: str, customer_id: str = "c-1") -> CustomerSignedUp:
    return CustomerSignedUp(
        signup_id=signup_id,
        customer_id=customer_id,
        name="Ada",
        email="ada@example.com",
        country="DE",
    )


def shown(instance: SagaInstance) -> dict[str, Any]:
    """What ``sagas show --json`` shows of a saga (its data through its definition)."""
    return app_saga_view(create_app(), instance)


# -- GET /sagas/{id} ---------------------------------------------------------------------


async def test_a_saga_by_id_by_correlation_id_and_by_type(api: Api) -> None:
    saga = await start_order(api.store, "o-1", token=SECRET)
    by_id = await api.ok(f"/sagas/{saga.saga_id}")
    assert await api.ok("/sagas/o-1") == by_id
    assert await api.ok("/sagas/order_to_cash/o-1") == by_id
    expected = shown(saga)
    expected["locks"] = {"keys": [], "waiting": False, "held": [], "awaited": []}
    assert by_id == expected
    assert by_id["status"] == "running"
    assert by_id["awaiting"] == {
        "kind": "steps",
        "until": saga.deadline.isoformat() if saga.deadline else None,
        "items": [
            {
                "step": "reserve_stock",
                "kind": "reply",
                "message_type": "inventory.reserve_stock.v1",
                "message_id": saga.pending_command_id,
                "until": saga.deadline.isoformat() if saga.deadline else None,
            }
        ],
    }
    assert by_id["repairs"] == ["retry", "skip", "abort"]
    assert by_id["in_flight"] == ["reserve_stock"]
    assert by_id["data"]["order"]["payment_token"] == "**********"


async def test_secrets_never_leave_through_any_route(api: Api) -> None:
    saga = await start_order(api.store, "o-secret", token=SECRET)
    assert SECRET in saga.model_dump_json()  # the saga keeps it, to charge the card
    for path in (
        f"/sagas/{saga.saga_id}",
        "/sagas/o-secret",
        "/sagas",
        f"/sagas/{saga.saga_id}/history",
        "/stats",
    ):
        response = await api.get(path)
        assert response.status_code == 200
        assert SECRET not in response.text, path


async def test_unknown_sagas_are_404(api: Api) -> None:
    await start_order(api.store, "o-1")
    for path in (
        "/sagas/nope",
        f"/sagas/{uuid.uuid4()}",
        "/sagas/order_to_cash/nope",
        "/sagas/onboarding/o-1",
        "/sagas/nope/history",
        "/sagas/order_to_cash/nope/history",
    ):
        response = await api.get(path)
        assert response.status_code == 404, path
        assert response.json()["error"] == "not_found"


async def test_another_apps_saga_is_not_found(api: Api, settings: Settings) -> None:
    foreign = (await start_order(api.store, "o-foreign")).model_copy(
        update={"saga_type": "someone_else", "saga_id": str(uuid.uuid4())}
    )
    conn = await asyncpg.connect(
        settings.database_url, server_settings={"search_path": settings.database_schema}
    )
    try:
        await conn.execute(
            "UPDATE saga SET saga_type = 'someone_else', state = $1::jsonb WHERE correlation_id"
            " = 'o-foreign'",
            foreign.model_dump_json(),
        )
    finally:
        await conn.close()
    assert (await api.get("/sagas/o-foreign")).status_code == 404
    assert (await api.ok("/sagas"))["items"] == []
    assert (await api.ok("/stats"))["counts"] == []


async def test_a_shared_correlation_id_is_409_with_the_candidates(api: Api) -> None:
    order_saga = await start_order(api.store, "same-1", T0)
    signup_saga = await start(api.store, signup("same-1"), "same-1", T0 + timedelta(seconds=1))
    for path in ("/sagas/same-1", "/sagas/same-1/history"):
        refused = await api.get(path)
        assert refused.status_code == 409
        body = refused.json()
        assert body["error"] == "ambiguous"
        assert [(c["saga_type"], c["saga_id"]) for c in body["candidates"]] == [
            ("onboarding", signup_saga.saga_id),
            ("order_to_cash", order_saga.saga_id),
        ]
    assert (await api.ok("/sagas/onboarding/same-1"))["saga_id"] == signup_saga.saga_id
    assert (await api.ok(f"/sagas/{order_saga.saga_id}"))["saga_type"] == "order_to_cash"


async def test_a_saga_shows_the_locks_it_holds_and_awaits(api: Api) -> None:
    first = await start(api.store, signup("s-1", "c-7"), "s-1", T0)
    second = await start(api.store, signup("s-2", "c-7"), "s-2", T0 + timedelta(seconds=1))
    await api.store.grant_locks(["customer:c-7"])
    holder = (await api.ok("/sagas/s-1"))["locks"]
    assert holder["keys"] == ["customer:c-7"]
    assert [h["key"] for h in holder["held"]] == ["customer:c-7"]
    waiter = (await api.ok(f"/sagas/{second.saga_id}"))["locks"]
    assert waiter["waiting"] is True
    assert waiter["held"] == []
    assert [(a["key"], a["place"], a["holder"]) for a in waiter["awaited"]] == [
        ("customer:c-7", 1, first.saga_id)
    ]


# -- GET /sagas ------------------------------------------------------------------------


async def test_the_list_filters_newest_first(api: Api) -> None:
    a = await start_order(api.store, "a", T0)
    b = await start_order(api.store, "b", T0 + timedelta(minutes=1))
    c = await start(api.store, signup("c"), "c", T0 + timedelta(minutes=2))

    async def ids(**params: Any) -> list[str]:
        return [s["correlation_id"] for s in (await api.ok("/sagas", **params))["items"]]

    assert await ids() == ["c", "b", "a"]
    assert await ids(type="order_to_cash") == ["b", "a"]
    assert await ids(status="running", type="onboarding") == ["c"]
    assert await ids(status="failed") == []
    assert await ids(correlation_id="b") == ["b"]
    assert await ids(created_after=(T0 + timedelta(seconds=30)).isoformat()) == ["c", "b"]
    assert await ids(created_before=(T0 + timedelta(seconds=90)).isoformat()) == ["b", "a"]
    assert await ids(updated_before=(T0 + timedelta(seconds=30)).isoformat()) == ["a"]
    assert await ids(limit=1) == ["c"]
    listed = (await api.ok("/sagas", type="order_to_cash"))["items"]
    assert listed == [shown(b), shown(a)]  # the objects of `sagas list --json`
    assert c.saga_type == "onboarding"


async def test_bad_list_queries_are_422(api: Api) -> None:
    for params in (
        {"limit": 501},
        {"limit": 0},
        {"status": "lost"},
        {"created_after": "yesterday"},
        {"created_after": "2025-01-01T00:00:00"},  # no offset
        {"cursor": "not-a-cursor"},
    ):
        refused = await api.get("/sagas", **params)
        assert refused.status_code == 422, params
        assert refused.json()["detail"][0]["loc"][0] == "query"
    assert (await api.get("/sagas", limit=500)).status_code == 200


async def test_pages_stay_stable_while_sagas_are_inserted(api: Api) -> None:
    # 7 sagas, some sharing a creation time: ties are broken by saga id
    originals = [
        await start_order(api.store, f"p-{n}", T0 + timedelta(seconds=n // 2)) for n in range(7)
    ]
    expected = [
        s.saga_id for s in sorted(originals, key=lambda s: (-s.created_at.timestamp(), s.saga_id))
    ]
    seen: list[str] = []
    cursor = None
    pages = 0
    while True:
        page = await api.ok("/sagas", limit=3, **({"cursor": cursor} if cursor else {}))
        seen += [s["saga_id"] for s in page["items"]]
        pages += 1
        # newer sagas arrive between two pages
        await start_order(api.store, f"new-{pages}", datetime.now(UTC))
        cursor = page["next"]
        if cursor is None:
            break
    assert seen == expected
    assert pages == 3
    everything = await api.ok("/sagas", limit=500)
    assert len(everything["items"]) == 7 + pages
    assert everything["next"] is None


async def test_a_full_last_page_has_no_next(api: Api) -> None:
    for n in range(4):
        await start_order(api.store, f"f-{n}", T0 + timedelta(seconds=n))
    first = await api.ok("/sagas", limit=2)
    assert first["next"] is not None
    second = await api.ok("/sagas", limit=2, cursor=first["next"])
    assert [s["correlation_id"] for s in second["items"]] == ["f-1", "f-0"]
    assert second["next"] is None


# -- history and stats -------------------------------------------------------------------


async def test_the_history_of_a_saga(api: Api) -> None:
    saga = await start_order(api.store, "h-1", T0)
    history = await api.ok(f"/sagas/{saga.saga_id}/history")
    assert await api.ok("/sagas/h-1/history") == history
    assert await api.ok("/sagas/order_to_cash/h-1/history") == history
    assert (history["saga_id"], history["saga_type"], history["correlation_id"]) == (
        saga.saga_id,
        "order_to_cash",
        "h-1",
    )
    inbound, outbound = history["entries"]
    assert (inbound["direction"], inbound["message_type"]) == ("in", "orders.order_placed.v1")
    assert inbound["at"] == T0.isoformat()
    assert (outbound["direction"], outbound["message_type"]) == (
        "out",
        "inventory.reserve_stock.v1",
    )
    assert outbound["causation_id"] == inbound["message_id"]
    assert outbound["message_id"] == saga.pending_command_id
    assert set(inbound) == {
        "at",
        "direction",
        "message_id",
        "message_type",
        "correlation_id",
        "causation_id",
        "outcome",
        "note",
        "trace_id",
        "payload",
    }
    assert inbound["payload"]["order_id"] == "h-1"
    assert inbound["trace_id"] is None  # written untraced


async def test_stats_count_by_type_and_status(api: Api, settings: Settings) -> None:
    await start_order(api.store, "s-1", T0)
    oldest = await start_order(api.store, "s-2", T0 - timedelta(hours=1))
    done = await start_order(api.store, "s-3", T0 - timedelta(hours=2))
    await start(api.store, signup("s-4"), "s-4", T0)
    finished = done.model_copy(update={"status": SagaStatus.COMPLETED, "version": 2})
    assert (
        await api.store.commit(Change("test", "finish-s-3", done.saga_id, finished, 1, history=()))
    ).result is CommitResult.COMMITTED
    stats = await api.ok("/stats")
    assert stats["counts"] == [
        {"saga_type": "onboarding", "status": "running", "count": 1},
        {"saga_type": "order_to_cash", "status": "completed", "count": 1},
        {"saga_type": "order_to_cash", "status": "running", "count": 2},
    ]
    assert [(o["saga_type"], o["correlation_id"]) for o in stats["oldest_running"]] == [
        ("onboarding", "s-4"),
        ("order_to_cash", "s-2"),
    ]
    assert stats["oldest_running"][1]["saga_id"] == oldest.saga_id


# -- access ------------------------------------------------------------------------------


async def test_tokens_on_the_real_store(api: Api) -> None:
    saga = await start_order(api.store, "t-1")
    for token in (None, "wrong", READER + "x"):
        refused = await api.get(f"/sagas/{saga.saga_id}", token=token)
        assert refused.status_code == 401
        assert READER not in refused.text and OPERATOR not in refused.text
    assert (await api.get("/sagas/t-1", token=OPERATOR)).status_code == 200
    assert (await api.get("/healthz", token=None)).status_code == 200


# -- readiness --------------------------------------------------------------------------


async def test_ready_when_everything_answers_and_not_ready_until_migrated(
    settings: Settings, db_schema: str
) -> None:
    insecure = settings.model_copy(update={"api_insecure": True})
    served = create_api(insecure, api_app())
    async with (
        served.router.lifespan_context(served),
        httpx.AsyncClient(transport=httpx.ASGITransport(served), base_url="http://api") as http,
    ):
        before = await http.get("/readyz")
        assert before.status_code == 503
        assert before.json()["status"] == "not ready"
        assert before.json()["checks"]["postgres"] == "ok"
        assert "bus-orchestrator migrate" in before.json()["checks"]["migrations"]
        await migrated(settings)
        after = await http.get("/readyz")  # recovers by itself
        assert after.status_code == 200
        assert after.json() == {
            "status": "ready",
            "checks": {"postgres": "ok", "migrations": "ok", "rabbitmq": "ok"},
        }


async def test_not_ready_while_a_dependency_is_unreachable(
    settings: Settings, db_schema: str
) -> None:
    await migrated(settings)
    nowhere = settings.model_copy(
        update={
            "api_insecure": True,
            "amqp_url": "amqp://guest:guest@127.0.0.1:1/",
            "database_url": "postgresql://root@127.0.0.1:1/test",
            "db_connect_timeout_seconds": 1.0,
        }
    )
    served = create_api(nowhere, api_app())
    async with (
        served.router.lifespan_context(served),
        httpx.AsyncClient(transport=httpx.ASGITransport(served), base_url="http://api") as http,
    ):
        response = await http.get("/readyz")
        assert response.status_code == 503
        checks = response.json()["checks"]
        assert checks["postgres"].startswith("unreachable")
        assert checks["rabbitmq"].startswith("unreachable")
        assert "guest" not in response.text
        assert (await http.get("/healthz")).status_code == 200
        refused = await http.get("/sagas")
        assert refused.status_code == 503
        assert refused.json()["error"] == "unavailable"


# -- a saga the coordinator runs ----------------------------------------------------------


async def test_a_saga_started_on_the_bus_is_seen_over_http(
    api: Api, settings: Settings, bus: TestBus
) -> None:
    # the API's own app: the API registered its saga types on start-up
    service = await start_coordinator(settings, app="api-test")
    bus.queues.append(service.queue_name)
    try:
        channel = await bus.channel()
        await publish(channel, bus.topology.events, order("bus-1"), correlation_id="bus-1")
        await wait_for_status(settings, ["bus-1"], {SagaStatus.RUNNING})
    finally:
        await service.stop()
    saga = await api.ok("/sagas/bus-1")
    assert saga["status"] == "running" and saga["in_flight"] == ["reserve_stock"]
    history = await api.ok("/sagas/bus-1/history")
    assert [(e["direction"], e["message_type"]) for e in history["entries"]] == [
        ("in", "orders.order_placed.v1"),
        ("out", "inventory.reserve_stock.v1"),
    ]


async def test_a_filter_given_twice_is_refused(api: Api) -> None:
    response = await api.http.get(
        "/sagas?status=failed&status=running", headers={"Authorization": f"Bearer {READER}"}
    )
    assert response.status_code == 422
    assert "given more than once" in response.text
