"""The HTTP API served in process (its lifespan runs the dead-letter archive) on this
test's Postgres schema and broker prefix, for the dead-letter tests."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import aio_pika
import httpx
from pydantic import SecretStr

from bus_orchestrator.api import create_api
from bus_orchestrator.app import App
from bus_orchestrator.config import Settings
from bus_orchestrator.runtime.dead_archive import DeadArchive
from sagas import order_to_cash
from tests.conftest import TestBus
from tests.integration.harness import sql

READER, OPERATOR = "dead-reader-token", "dead-operator-token"
TOKENS = f"{READER}=reader:rita,{OPERATOR}=operator:olga"


def example_app() -> App:
    return App("order-to-cash", sagas=[order_to_cash.build()])


@dataclass
class Served:
    http: httpx.AsyncClient
    archive: DeadArchive
    settings: Settings

    async def get(self, path: str, token: str | None = READER, **params: Any) -> httpx.Response:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        return await self.http.get(path, headers=headers, params=params)

    async def ok(self, path: str, **params: Any) -> Any:
        response = await self.get(path, **params)
        assert response.status_code == 200, response.text
        return response.json()

    async def post(self, path: str, body: Any, token: str | None = OPERATOR) -> httpx.Response:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        return await self.http.post(path, headers=headers, json=body)

    async def delete(
        self, path: str, token: str | None = OPERATOR, **params: Any
    ) -> httpx.Response:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        return await self.http.delete(path, headers=headers, params=params)

    async def listed(self, count: int, within: float = 20.0, **params: Any) -> list[Any]:
        """Wait until ``GET /dead`` (with ``params``) lists ``count`` dead letters."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + within
        while True:
            items: list[Any] = (await self.ok("/dead", **params))["items"]
            if len(items) >= count:
                return items
            if loop.time() > deadline:
                raise AssertionError(f"{len(items)} of {count} dead letters listed: {items}")
            await asyncio.sleep(0.05)


@asynccontextmanager
async def served_api(settings: Settings, app: App | None = None) -> AsyncIterator[Served]:
    """The API of ``app`` (the example's by default), consuming this test's ``bus.dead``."""
    configured = settings.model_copy(update={"api_tokens": SecretStr(TOKENS)})
    api = create_api(configured, app or example_app())
    async with (
        api.router.lifespan_context(api),
        httpx.AsyncClient(transport=httpx.ASGITransport(api), base_url="http://api") as http,
    ):
        archive: DeadArchive = api.state.dead_archive
        await asyncio.wait_for(archive.consuming(), 30)
        yield Served(http, archive, settings)


async def to_dead(
    bus: TestBus,
    body: bytes,
    headers: dict[str, Any] | None = None,
    content_type: str | None = "application/json",
    **properties: Any,
) -> None:
    """Publish a message straight to this test's ``bus.dead`` exchange (confirmed)."""
    channel = await bus.channel()
    exchange = await channel.get_exchange(bus.topology.dead, ensure=False)
    await exchange.publish(
        aio_pika.Message(
            body,
            headers=headers or {},
            content_type=content_type,
            delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
            **properties,
        ),
        routing_key="",
    )
    await channel.close()


async def queue_counts(bus: TestBus, name: str) -> tuple[int, int]:
    """Messages ready in queue ``name``, and its consumers."""
    channel = await bus.channel()
    try:
        queue = await channel.declare_queue(name, passive=True)
        result = queue.declaration_result
        return result.message_count or 0, result.consumer_count or 0
    finally:
        await channel.close()


async def rows(settings: Settings) -> list[Any]:
    return await sql(settings, "SELECT * FROM dead_letter ORDER BY dead_lettered_at")
