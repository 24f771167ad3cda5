"""The dead-letter routes on the real archive and broker: filters and pages, one dead
letter whole, replay (as it was, corrected, under a new id) and purge, and each refusal:
401, 403, 404, 409, 422."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import aio_pika
import pytest

from bus_orchestrator.config import Settings
from bus_orchestrator.core.state import saga_id_for
from bus_orchestrator.transport.dead_letters import REPLAY_OF, replay_id
from bus_orchestrator.transport.publisher import dead_letter_reasons
from tests.conftest import TestBus
from tests.integration.dead_harness import READER, Served, rows, served_api, to_dead
from tests.integration.harness import migrated, order

pytestmark = pytest.mark.integration

T0 = datetime(2026, 11, 29, 20, 0, tzinfo=UTC)


def placed(order_id: str, **changes: Any) -> dict[str, Any]:
    return {**json.loads(order(order_id).model_dump_json()), **changes}


async def dead_event(
    bus: TestBus,
    data: Any,
    *,
    reason: str = "schema-violation",
    at: datetime = T0,
    message_id: str | None = None,
    correlation_id: str = "o-1",
    message_type: str = "orders.order_placed.v1",
) -> str:
    """An event as the coordinator dead-letters it (binary mode); returns its id."""
    message_id = message_id or str(uuid.uuid4())
    headers = {
        "ce-id": message_id,
        "ce-type": message_type,
        "ce-source": "urn:shop",
        "ce-specversion": "1.0",
        "ce-correlationid": correlation_id,
        **dead_letter_reasons(
            reason,  # type: ignore[arg-type]
            "refused",
            "coordinator",
            at,
            bus.topology.events,
            message_type,
        ),
    }
    await to_dead(
        bus,
        json.dumps(data).encode(),
        headers,
        message_id=message_id,
        correlation_id=correlation_id,
        type=message_type,
    )
    return message_id


async def test_list_filters_and_pages_newest_first(
    settings: Settings, db_schema: str, bus: TestBus
) -> None:
    await migrated(settings)
    async with served_api(settings) as api:
        for n in range(5):
            await dead_event(
                bus,
                {"n": n},
                reason="schema-violation" if n % 2 else "handler-error",
                at=T0 + timedelta(seconds=n),
                correlation_id=f"o-{n}",
            )
        await dead_event(bus, {}, message_type="payments.payment_charged.v1", at=T0)
        everything = await api.listed(6)
        assert [i["dead_lettered_at"] for i in everything[:5]] == [
            (T0 + timedelta(seconds=n)).isoformat() for n in (4, 3, 2, 1)
        ] + [T0.isoformat()]

        refused = (await api.ok("/dead", reason="schema-violation"))["items"]
        assert [i["correlation_id"] for i in refused] == ["o-3", "o-1", "o-1"]
        charged = (await api.ok("/dead", type="payments.payment_charged.v1"))["items"]
        assert len(charged) == 1
        one_saga = saga_id_for("order_to_cash", "o-2")
        by_saga = (await api.ok("/dead", saga_id=one_saga))["items"]
        assert [i["correlation_id"] for i in by_saga] == ["o-2"]
        assert (await api.ok("/dead", saga_id="not-a-uuid"))["items"] == []
        assert (await api.ok("/dead", status="replayed"))["items"] == []

        # Pages of two, stable while dead letters arrive (a newer one comes before them).
        seen: list[str] = []
        page = await api.ok("/dead", limit=2)
        seen += [i["id"] for i in page["items"]]
        await dead_event(bus, {"late": True}, at=T0 + timedelta(hours=1))
        await api.listed(7)
        while page["next"] is not None:
            page = await api.ok("/dead", limit=2, cursor=page["next"])
            seen += [i["id"] for i in page["items"]]
        assert seen == [i["id"] for i in everything]

        bad = await api.get("/dead", cursor="not-a-cursor")
        assert bad.status_code == 422
        assert (await api.get("/dead", limit=501)).status_code == 422
        assert (await api.get("/dead", stauts="dead")).status_code == 422  # a typo


async def test_every_route_refuses_without_a_token_and_reader_cannot_change(
    settings: Settings, db_schema: str, bus: TestBus
) -> None:
    await migrated(settings)
    async with served_api(settings) as api:
        await dead_event(bus, {})
        [item] = await api.listed(1)
        path = f"/dead/{item['id']}"
        for response in (
            await api.get("/dead", token=None),
            await api.get(path, token="wrong"),
            await api.post(f"{path}/replay", {"reason": "r"}, token=None),
            await api.delete(path, token=None, reason="r"),
        ):
            assert response.status_code == 401, response.text
            assert response.json()["error"] == "unauthorized"
        for response in (
            await api.post(f"{path}/replay", {"reason": "r"}, token=READER),
            await api.delete(path, token=READER, reason="r"),
        ):
            assert response.status_code == 403, response.text
        assert (await api.ok(path))["status"] == "dead"  # the refusals changed nothing


async def test_unknown_ids_are_404(settings: Settings, db_schema: str, bus: TestBus) -> None:
    await migrated(settings)
    async with served_api(settings) as api:
        for dead_id in (str(uuid.uuid4()), "not-a-uuid"):
            assert (await api.get(f"/dead/{dead_id}")).status_code == 404
            replay = await api.post(f"/dead/{dead_id}/replay", {"reason": "r"})
            assert replay.status_code == 404 and replay.json()["error"] == "not_found"
            assert (await api.delete(f"/dead/{dead_id}", reason="r")).status_code == 404


async def tap(bus: TestBus) -> aio_pika.abc.AbstractQueue:
    return await bus.tap(bus.topology.events, "orders.#")


async def test_replay_as_it_was_then_409(settings: Settings, db_schema: str, bus: TestBus) -> None:
    await migrated(settings)
    events = await tap(bus)
    async with served_api(settings) as api:
        message_id = await dead_event(
            bus, placed("o-7"), reason="handler-error", correlation_id="o-7"
        )
        [item] = await api.listed(1)
        path = f"/dead/{item['id']}"
        before = await api.ok(path)

        done = await api.post(f"{path}/replay", {"reason": "the bug is fixed"})
        assert done.status_code == 200, done.text
        result = done.json()
        assert result["message_id"] == message_id
        assert result["exchange"] == bus.topology.events
        assert result["routing_key"] == "orders.order_placed.v1"
        assert result["dead_letter"]["status"] == "replayed"
        assert result["dead_letter"]["replayed_by"] == "olga"
        assert result["dead_letter"]["replay_reason"] == "the bug is fixed"

        [sent] = await bus.drain(events, 1)
        assert sent.body == json.dumps(placed("o-7")).encode()
        assert sent.message_id == message_id
        headers = sent.headers or {}
        assert headers["ce-id"] == message_id and headers["ce-correlationid"] == "o-7"
        assert headers[REPLAY_OF] == item["id"]
        assert not [k for k in headers if k.startswith(("x-dead-", "x-original-"))]

        again = await api.post(f"{path}/replay", {"reason": "twice"})
        assert again.status_code == 409
        assert again.json() == {
            "error": "conflict",
            "status": "replayed",
            "detail": again.json()["detail"],
        }
        assert (await api.ok("/dead", status="replayed"))["items"][0]["id"] == item["id"]
        assert (await api.ok("/dead"))["items"] == []  # no longer dead
        after = await api.ok(path)
        assert after["body"] == before["body"]  # kept: it was replayed, not purged
    assert await bus.drain(events, 0) == []


async def test_a_corrected_replay_is_checked_against_the_contract(
    settings: Settings, db_schema: str, bus: TestBus
) -> None:
    await migrated(settings)
    events = await tap(bus)
    async with served_api(settings) as api:
        message_id = await dead_event(bus, placed("o-8", currency="EURO"))
        [item] = await api.listed(1)
        replay = f"/dead/{item['id']}/replay"

        wrong = await api.post(replay, {"reason": "fix", "data": placed("o-8", currency="EURO")})
        assert wrong.status_code == 422
        [error] = wrong.json()["detail"]
        assert error["loc"] == ["body", "data"]
        assert "schema-violation" in error["msg"] and "currency" in error["msg"]
        both = await api.post(replay, {"reason": "fix", "data": {}, "body": {}})
        assert both.status_code == 422
        assert (await api.post(replay, {"data": placed("o-8")})).status_code == 422  # no reason
        assert (await api.post(replay, {"reason": ""})).status_code == 422
        assert (await api.ok(f"/dead/{item['id']}"))["status"] == "dead"  # nothing was sent

        fixed = await api.post(replay, {"reason": "currency fixed", "data": placed("o-8")})
        assert fixed.status_code == 200, fixed.text
        assert fixed.json()["message_id"] == message_id  # the inbox never saw it
        [sent] = await bus.drain(events, 1)
        assert json.loads(sent.body) == placed("o-8")
        assert (sent.headers or {})["ce-id"] == message_id


async def test_a_whole_body_and_a_new_id(settings: Settings, db_schema: str, bus: TestBus) -> None:
    """An expired event takes a new id by default (the park holds its id); any other
    only when asked. A whole body replaces the body as it is."""
    await migrated(settings)
    events = await tap(bus)
    async with served_api(settings) as api:
        expired = await dead_event(bus, {"order_id": "o-9"}, reason="expired", at=T0)
        other = await dead_event(
            bus, placed("o-10"), reason="handler-error", at=T0 + timedelta(seconds=1)
        )
        items = {i["message_id"]: i for i in await api.listed(2)}

        first = await api.post(f"/dead/{items[expired]['id']}/replay", {"reason": "saga is up"})
        assert first.status_code == 200, first.text
        assert first.json()["message_id"] == replay_id(items[expired]["id"]) != expired
        body = placed("o-10", currency="USD")
        second = await api.post(
            f"/dead/{items[other]['id']}/replay",
            {"reason": "in dollars", "body": body, "new_id": True},
        )
        assert second.status_code == 200, second.text
        assert second.json()["message_id"] == replay_id(items[other]["id"])
        sent = {m.message_id: m for m in await bus.drain(events, 2)}
        assert (sent[replay_id(items[expired]["id"])].headers or {})["ce-id"] == replay_id(
            items[expired]["id"]
        )
        assert json.loads(sent[replay_id(items[other]["id"])].body) == body


async def test_purge_drops_the_body_and_keeps_who_and_why(
    settings: Settings, db_schema: str, bus: TestBus
) -> None:
    await migrated(settings)
    async with served_api(settings) as api:
        await dead_event(bus, {"secret": "x"}, at=T0)
        await dead_event(bus, {"other": 1}, at=T0 + timedelta(seconds=1))
        newer, older = await api.listed(2)

        assert (await api.delete(f"/dead/{older['id']}")).status_code == 422  # no reason
        by_query = await api.delete(f"/dead/{older['id']}", reason="test data")
        assert by_query.status_code == 200, by_query.text
        assert (await api.delete(f"/dead/{newer['id']}", reason="")).status_code == 422
        assert (await api.delete(f"/dead/{newer['id']}", reason="a\x00b")).status_code == 422
        assert (await api.ok(f"/dead/{newer['id']}"))["status"] == "dead"

        purged = await api.ok(f"/dead/{older['id']}")
        assert purged["status"] == "purged" and purged["purged_by"] == "olga"
        assert purged["purge_reason"] == "test data"
        assert purged["body_encoding"] is None and purged["body"] is None
        assert purged["body_bytes"] == len(b'{"secret": "x"}')
        assert purged["message_type"] == "orders.order_placed.v1"  # what it was stays

        twice = await api.delete(f"/dead/{older['id']}", reason="again")
        assert twice.status_code == 409 and twice.json()["status"] == "purged"
        replay = await api.post(f"/dead/{older['id']}/replay", {"reason": "too late"})
        assert replay.status_code == 409
    stored = {str(r["id"]): r for r in await rows(settings)}
    assert stored[older["id"]]["body"] is None


async def test_the_document_declares_each_refusal(
    settings: Settings, db_schema: str, bus: TestBus
) -> None:
    await migrated(settings)
    served: Served
    async with served_api(settings) as served:
        document = (await served.http.get("/openapi.json")).json()
    paths = document["paths"]
    assert set(paths["/dead"]["get"]["responses"]) == {"200", "401", "403", "422", "503"}
    assert set(paths["/dead/{dead_id}"]["get"]["responses"]) == {
        "200",
        "401",
        "403",
        "404",
        "422",
        "503",
    }
    replay, purge = paths["/dead/{dead_id}/replay"]["post"], paths["/dead/{dead_id}"]["delete"]
    assert set(replay["responses"]) == {"200", "401", "403", "404", "409", "422", "503"}
    assert set(purge["responses"]) == {"200", "401", "403", "404", "409", "422", "503"}
    [reason] = purge["parameters"][1:]
    assert (reason["name"], reason["in"], reason["required"]) == ("reason", "query", True)
