"""The dashboard's routes: one shell for every page under /ui, its assets, a strict
Content-Security-Policy, and /me for who the token names."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest

from bus_orchestrator.api import create_api
from bus_orchestrator.config import Settings
from bus_orchestrator.store.memory import InMemorySagaStore
from example import create_app


@pytest.fixture
async def client() -> AsyncIterator[httpx.AsyncClient]:
    settings = Settings(api_tokens="r-token=reader, o-token=operator:olga")
    api = create_api(settings, create_app(settings), store=InMemorySagaStore())
    async with (
        api.router.lifespan_context(api),
        httpx.AsyncClient(transport=httpx.ASGITransport(api), base_url="http://api") as http,
    ):
        yield http


@pytest.mark.parametrize("path", ["/ui", "/ui/", "/ui/sagas", "/ui/sagas/o-1?x=1", "/ui/dead"])
async def test_every_page_is_the_shell_with_a_strict_policy(
    client: httpx.AsyncClient, path: str
) -> None:
    response = await client.get(path)
    assert response.status_code == 200
    assert '<script type="module" src="/ui/static/app.js"></script>' in response.text
    policy = response.headers["content-security-policy"]
    assert "default-src 'self'" in policy and "unsafe-inline" not in policy


async def test_the_assets_are_served_and_the_root_leads_to_the_dashboard(
    client: httpx.AsyncClient,
) -> None:
    for asset, kind in (("app.js", "javascript"), ("style.css", "text/css")):
        response = await client.get(f"/ui/static/{asset}")
        assert response.status_code == 200 and kind in response.headers["content-type"]
    assert (await client.get("/ui/static/nope.js")).status_code == 404
    root = await client.get("/")
    assert root.status_code == 307 and root.headers["location"] == "/ui"


async def test_me_names_the_token_and_its_role(client: httpx.AsyncClient) -> None:
    me = await client.get("/me", headers={"Authorization": "Bearer o-token"})
    assert me.json() == {"name": "olga", "role": "operator"}
    me = await client.get("/me", headers={"Authorization": "Bearer r-token"})
    assert me.json() == {"name": "reader token 1", "role": "reader"}
    assert (await client.get("/me")).status_code == 401
