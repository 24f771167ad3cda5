"""The HTTP API of an app in process (its lifespan: pool, outlet, relay) on the real
services, for the tests of its write routes."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import httpx
from fastapi import FastAPI
from pydantic import SecretStr

from bus_orchestrator.api import create_api
from bus_orchestrator.api.outlet import PostgresOutlet
from bus_orchestrator.app import App
from bus_orchestrator.config import Settings
from bus_orchestrator.telemetry.setup import Telemetry

READER, OPERATOR = "reader-tok-7f3a", "operator-tok-91c2"


@dataclass
class Served:
    api: FastAPI
    http: httpx.AsyncClient

    @property
    def outlet(self) -> PostgresOutlet:
        found: PostgresOutlet = self.api.state.outlet
        return found

    async def post(
        self,
        path: str,
        body: Any = None,
        *,
        token: str | None = OPERATOR,
        content: bytes | None = None,
        headers: dict[str, str] | None = None,
    ) -> httpx.Response:
        sent = {"Authorization": f"Bearer {token}"} if token else {}
        sent.update(headers or {})
        if content is None:
            return await self.http.post(path, json=body, headers=sent)
        return await self.http.post(path, content=content, headers=sent)


@asynccontextmanager
async def serving(
    settings: Settings, app: App, telemetry: Telemetry | None = None
) -> AsyncIterator[Served]:
    tokens = SecretStr(f"{READER}=reader,{OPERATOR}=operator:ops-ada")
    configured = settings.model_copy(update={"api_tokens": tokens})
    api = create_api(configured, app, telemetry=telemetry)
    async with (
        api.router.lifespan_context(api),
        httpx.AsyncClient(transport=httpx.ASGITransport(api), base_url="http://api") as http,
    ):
        yield Served(api, http)
