"""The HTTP API's access control and its document, in process over the in-memory store.

The routes on the real Postgres store are in ``tests/integration/test_api_*.py``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI

from bus_orchestrator.api import ApiConfigError, ApiTokens, Role, create_api, load_tokens
from bus_orchestrator.api.auth import Caller, parse_tokens
from bus_orchestrator.api.guard import OPERATOR, require
from bus_orchestrator.config import Settings
from bus_orchestrator.store.memory import InMemorySagaStore
from example import create_app

TOKENS = "r-token=reader, o-token=operator"


@pytest.fixture
async def client() -> AsyncIterator[httpx.AsyncClient]:
    settings = Settings(api_tokens=TOKENS)
    api = create_api(settings, create_app(settings), store=InMemorySagaStore())
    # a route of the kind the repair verbs will add: an operator's only
    api.get("/operate", dependencies=OPERATOR)(lambda: {"done": True})
    async with (
        api.router.lifespan_context(api),
        httpx.AsyncClient(transport=httpx.ASGITransport(api), base_url="http://api") as http,
    ):
        yield http


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def test_tokens_parse_from_pairs_lines_and_comments(tmp_path: Path) -> None:
    assert parse_tokens("a=reader,b=operator", "X") == [
        ("a", Role.READER, "reader token 1"),
        ("b", Role.OPERATOR, "operator token 2"),
    ]
    assert parse_tokens("# ops\n b64==operator \n\n", "X") == [
        ("b64=", Role.OPERATOR, "operator token 1")
    ]

    tokens_file = tmp_path / "tokens"
    tokens_file.write_text("# the team\nfile-token=reader\n")
    tokens = load_tokens(
        Settings(api_tokens="env-token=operator", api_tokens_file=str(tokens_file))
    )
    assert tokens.role_of("env-token") is Role.OPERATOR
    assert tokens.role_of("file-token") is Role.READER
    assert tokens.role_of("file-token ") is None
    assert "token" not in repr(tokens).replace("tokens)", "")


def test_an_entry_may_name_who_holds_the_token() -> None:
    tokens = ApiTokens(parse_tokens("t1=operator:alice,t2=reader", "X"))
    assert tokens.caller_of("t1") == Caller(Role.OPERATOR, "alice")
    assert tokens.caller_of("t2") == Caller(Role.READER, "reader token 2")
    with pytest.raises(ApiConfigError, match="entry 1 has a bad name") as refused:
        parse_tokens("secret-token=operator:bad name!", "X")
    assert "secret-token" not in str(refused.value)


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("s3cret=admin", "BUS_API_TOKENS: entry 1 has an unknown role"),
        ("ok=reader,s3cret", "BUS_API_TOKENS: entry 2 is not token=role"),
        ("=reader", "BUS_API_TOKENS: entry 1 is not token=role"),
    ],
)
def test_a_malformed_token_list_is_refused_without_showing_a_token(text: str, reason: str) -> None:
    with pytest.raises(ApiConfigError) as refused:
        load_tokens(Settings(api_tokens=text))
    assert str(refused.value).startswith(reason)
    assert "s3cret" not in str(refused.value)


def test_no_tokens_refuses_to_build_the_api_unless_insecure() -> None:
    settings = Settings()
    with pytest.raises(ApiConfigError, match="BUS_API_INSECURE=1"):
        create_api(settings, create_app(settings))
    insecure = Settings(api_insecure=True)
    assert isinstance(create_api(insecure, create_app(insecure)), FastAPI)


def test_an_operator_may_do_what_a_reader_may() -> None:
    assert Role.OPERATOR.allows(Role.READER) and Role.OPERATOR.allows(Role.OPERATOR)
    assert Role.READER.allows(Role.READER) and not Role.READER.allows(Role.OPERATOR)
    assert ApiTokens([("a", Role.READER)]).role_of("b") is None
    assert callable(require(Role.OPERATOR))


@pytest.mark.parametrize("path", ["/sagas", "/stats", "/sagas/x", "/sagas/x/history"])
async def test_every_saga_route_wants_a_known_token(client: httpx.AsyncClient, path: str) -> None:
    for headers in ({}, bearer("nope"), {"Authorization": "Basic r-token"}, bearer("r-toke")):
        refused = await client.get(path, headers=headers)
        assert refused.status_code == 401
        assert refused.json() == {
            "error": "unauthorized",
            "detail": "a valid bearer token is required",
        }
        assert refused.headers["WWW-Authenticate"] == "Bearer"
    assert (await client.get(path, headers=bearer("r-token"))).status_code in (200, 404)
    assert (await client.get(path, headers=bearer("o-token"))).status_code in (200, 404)


async def test_a_reader_is_refused_an_operators_route(client: httpx.AsyncClient) -> None:
    refused = await client.get("/operate", headers=bearer("r-token"))
    assert refused.status_code == 403
    assert refused.json()["error"] == "forbidden"
    assert (await client.get("/operate", headers=bearer("o-token"))).json() == {"done": True}


async def test_healthz_wants_no_token(client: httpx.AsyncClient) -> None:
    assert (await client.get("/healthz")).json() == {"status": "ok"}


async def test_a_route_without_filters_ignores_query_parameters(client: httpx.AsyncClient) -> None:
    # they declare no 422: only a route with filters refuses one it does not take
    assert (await client.get("/healthz?probe=1")).status_code == 200
    assert (await client.get("/stats?x=1", headers=bearer("r-token"))).status_code == 200
    assert (
        "422"
        not in (await client.get("/openapi.json")).json()["paths"]["/stats"]["get"]["responses"]
    )


async def test_the_document_declares_every_refusal(client: httpx.AsyncClient) -> None:
    document = (await client.get("/openapi.json")).json()
    paths = document["paths"]
    for path in ("/sagas", "/stats", "/sagas/{saga_id}", "/sagas/{saga_id}/history"):
        responses = paths[path]["get"]["responses"]
        for code in ("401", "403", "503"):
            assert responses[code]["content"]["application/json"]["schema"] == {
                "$ref": "#/components/schemas/ErrorBody"
            }, (path, code)
        assert paths[path]["get"]["security"] == [{"HTTPBearer": []}]
    for path in ("/sagas/{saga_id}", "/sagas/{saga_id}/history"):
        responses = paths[path]["get"]["responses"]
        assert "404" in responses
        assert responses["409"]["content"]["application/json"]["schema"] == {
            "$ref": "#/components/schemas/AmbiguousBody"
        }
    assert "422" in paths["/sagas"]["get"]["responses"]
    assert set(paths["/readyz"]["get"]["responses"]) == {"200", "503"}
    assert "security" not in paths["/healthz"]["get"]
    assert "security" not in paths["/readyz"]["get"]


async def test_bad_queries_are_422(client: httpx.AsyncClient) -> None:
    for query in (
        "limit=501",
        "limit=0",
        "cursor=not-one",
        "status=lost",
        "created_after=2024-01-01T00:00:00",
    ):
        refused = await client.get(f"/sagas?{query}", headers=bearer("r-token"))
        assert refused.status_code == 422, query
        assert refused.json()["detail"][0]["loc"][0] == "query"
