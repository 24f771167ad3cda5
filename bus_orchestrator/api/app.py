"""The HTTP API's app factory: the read-only routes over whatever ``App`` the process runs.

``create_api(settings, app)`` builds a FastAPI application; ``bus-orchestrator api``
serves it with uvicorn. Every route a caller may be refused on declares the refusal and
its body (``ErrorBody``) in ``/openapi.json``. The API sees the sagas of the app's saga
types only: another app's saga on the same database is not found.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import timedelta
from typing import Annotated, Any

from fastapi import Depends, FastAPI, Query, Request, Response
from fastapi.dependencies.models import Dependant
from fastapi.exception_handlers import http_exception_handler
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute
from prometheus_client import CollectorRegistry
from pydantic import AwareDatetime, BeforeValidator
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match

from bus_orchestrator.api.auth import NO_TOKENS, ApiConfigError, ApiTokens, load_tokens
from bus_orchestrator.api.cursor import decode_cursor, encode_cursor
from bus_orchestrator.api.dead import add_dead_routes, dead_letter_archive
from bus_orchestrator.api.errors import (
    AMBIGUOUS,
    GUARDED,
    NOT_FOUND,
    ApiError,
    Responses,
)
from bus_orchestrator.api.events import add_event_routes
from bus_orchestrator.api.guard import READER, caller
from bus_orchestrator.api.metrics import add_metrics_route
from bus_orchestrator.api.models import (
    AmbiguousBody,
    Caller,
    ErrorBody,
    Health,
    HistoryEntryView,
    OldestRunningView,
    Readiness,
    SagaDetail,
    SagaHistory,
    SagaPage,
    SagaRef,
    Stats,
    StatusCount,
)
from bus_orchestrator.api.outlet import Outlet, install_refusals, memory_outlet, postgres_outlet
from bus_orchestrator.api.readiness import check_migrations, check_postgres, check_rabbitmq
from bus_orchestrator.api.repairs import add_repair_routes, coordinator_repairer
from bus_orchestrator.api.schedules import add_schedule_routes
from bus_orchestrator.api.webhooks import add_webhook_routes
from bus_orchestrator.app import App
from bus_orchestrator.config import Settings
from bus_orchestrator.core.state import SagaInstance, SagaStatus
from bus_orchestrator.errors import StoreUnavailableError
from bus_orchestrator.ports import SagaFilter, SagaLocks, SagaReader
from bus_orchestrator.telemetry.setup import Telemetry
from bus_orchestrator.telemetry.tracing import trace_id_of
from bus_orchestrator.ui import add_ui
from bus_orchestrator.views import app_saga_view, find_saga, history_view

log = logging.getLogger(__name__)

_RFC3339 = re.compile(r"^\d{4}-\d{2}-\d{2}[Tt]\d{2}:\d{2}:\d{2}(\.\d+)?([Zz]|[+-]\d{2}:\d{2})$")


def _rfc3339(value: Any) -> Any:
    """Only what the document says (an RFC 3339 date-time), not all pydantic takes (a
    number of seconds, a space for the T)."""
    if isinstance(value, str) and not _RFC3339.match(value):
        raise ValueError("a time such as 2025-01-31T12:00:00Z (RFC 3339, with an offset)")
    return value


Time = Annotated[AwareDatetime, BeforeValidator(_rfc3339)]


def _query_names(dependant: Dependant) -> set[str]:
    """The query parameters a route takes, its dependencies' included."""
    names = {param.alias for param in dependant.query_params}
    for dependency in dependant.dependencies:
        names |= _query_names(dependency)
    return names


async def known_query(request: Request) -> None:
    """Refuse a query parameter a route with filters does not take, or one given more than
    once (422): a mistyped filter (``?stauts=failed``) would otherwise list every saga. A
    route without query parameters (which declares no 422) ignores any, as a probe may."""
    route = request.scope.get("route")
    if not isinstance(route, APIRoute):
        return
    known = _query_names(route.dependant)
    if not known:
        return
    unknown = [name for name in request.query_params if name not in known]
    repeated = sorted(
        {name for name in request.query_params if len(request.query_params.getlist(name)) > 1}
    )
    if repeated:  # every filter takes one value: which of two was meant is not guessed
        raise RequestValidationError(
            [
                {
                    "type": "too_long",
                    "loc": ("query", name),
                    "msg": "given more than once: give one value",
                    "input": request.query_params.getlist(name),
                }
                for name in repeated
            ]
        )
    if unknown:
        raise RequestValidationError(
            [
                {
                    "type": "extra_forbidden",
                    "loc": ("query", name),
                    "msg": "Extra inputs are not permitted",
                    "input": request.query_params[name],
                }
                for name in unknown
            ]
        )


def allowed_methods(request: Request) -> list[str]:
    """The methods of the path the request names, as OpenAPI matches paths: of the routes
    whose template matches it, those with the most literal segments (``/sagas/{id}/retry``
    before ``/sagas/{type}/{correlation_id}``)."""
    found: dict[int, set[str]] = {}
    for route in request.app.routes:
        if isinstance(route, APIRoute):
            match, _ = route.matches({**request.scope, "method": "GET"})
            if match is not Match.NONE:
                literal = sum(1 for part in route.path.split("/") if not part.startswith("{"))
                found.setdefault(literal, set()).update(route.methods or ())
    return sorted(found[max(found)]) if found else []


def create_api(
    settings: Settings,
    app: App,
    *,
    tokens: ApiTokens | None = None,
    store: SagaReader | None = None,
    outlet: Outlet | None = None,
    telemetry: Telemetry | None = None,
    metrics: CollectorRegistry | None = None,
) -> FastAPI:
    """The HTTP API of ``app``.

    ``tokens`` default to those of the settings (``BUS_API_TOKENS``, ``_FILE``); without
    any, ``ApiConfigError`` unless ``BUS_API_INSECURE`` is set. The Postgres pool opens in
    the lifespan (lazily: the API starts while Postgres is down, and says so on /readyz);
    a ``store`` given instead is used as it is (tests). ``GET /metrics`` renders the
    ``metrics`` registry (the process's, see ``telemetry.prometheus``).

    Writes go through the ``outlet`` (``api.outlet``): by default one of its own on the
    Postgres pool, with its own relay; beside a given in-memory ``store``, one that leaves
    what it commits in that store's outbox.
    """
    tokens = load_tokens(settings) if tokens is None else tokens
    if not len(tokens) and not settings.api_insecure:
        raise ApiConfigError(NO_TOKENS)
    scope = tuple(sorted({definition.name for definition in app.sagas}))

    @asynccontextmanager
    async def lifespan(api: FastAPI) -> AsyncIterator[None]:
        if store is not None:  # given, and set below: nothing to open
            yield
            return
        from bus_orchestrator.store.postgres import PostgresSagaStore, create_pool

        pool = await create_pool(settings, min_size=0)
        api.state.pool = pool
        api.state.store = PostgresSagaStore(pool, timedelta(seconds=settings.outbox_lease_seconds))
        try:
            async with contextlib.AsyncExitStack() as stack:
                if outlet is None:
                    opened = postgres_outlet(settings, app, pool, telemetry)
                    api.state.outlet = await stack.enter_async_context(opened)
                else:
                    api.state.outlet = outlet
                await stack.enter_async_context(dead_letter_archive(api, settings, app, pool))
                yield
        finally:
            await pool.close()

    api = FastAPI(
        title=f"bus-orchestrator: {app.document_title}",
        version=app.version,
        description="HTTP API of the app's sagas. Every route but /healthz, /readyz, /metrics "
        "and /webhooks/{name} (signed instead) takes a bearer token (role reader or operator).",
        lifespan=lifespan,
        dependencies=[Depends(known_query)],
    )
    api.state.tokens = tokens if len(tokens) else None
    if store is not None:
        api.state.store, api.state.pool = store, None
        api.state.outlet = outlet or memory_outlet(settings, app, store, telemetry)
    install_refusals(api)

    add_event_routes(api, settings, app)
    add_webhook_routes(api, settings, app)

    @api.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> Response:
        if exc.status_code == 405:
            # ``Allow`` names the methods of the most specific route matching the path
            # (Starlette's names the first's: /sagas/{id}/retry is also /sagas/{type}/{cid})
            allowed = allowed_methods(request)
            headers = {**(exc.headers or {}), "Allow": ", ".join(allowed)}
            return JSONResponse({"detail": exc.detail}, 405, headers)
        if exc.status_code == 400:  # a body that is not JSON: a 422 as any bad body is
            error = {"type": "json_invalid", "loc": ["body"], "msg": str(exc.detail)}
            return JSONResponse({"detail": [error]}, 422)
        return await http_exception_handler(request, exc)

    @api.exception_handler(ApiError)
    async def refused(request: Request, exc: ApiError) -> JSONResponse:
        return JSONResponse(exc.body.model_dump(mode="json"), exc.status, exc.headers)

    @api.exception_handler(StoreUnavailableError)
    async def unavailable(request: Request, exc: StoreUnavailableError) -> JSONResponse:
        log.warning("request refused, Postgres unavailable: %s", exc)
        body = ErrorBody(error="unavailable", detail="Postgres is unavailable; try again")
        return JSONResponse(body.model_dump(mode="json"), 503, {"Retry-After": "1"})

    def reader(request: Request) -> SagaReader:
        found: SagaReader = request.app.state.store
        return found

    def shown(instance: SagaInstance, locks: SagaLocks | None = None) -> dict[str, Any]:
        return app_saga_view(app, instance, settings.jaeger_ui_url, locks)

    async def resolve(request: Request, id_or_correlation: str) -> SagaInstance:
        """The saga of this app with that id, else with that correlation id."""
        found = await find_saga(reader(request).find, id_or_correlation, scope)
        if not found:
            raise ApiError(
                404,
                ErrorBody(
                    error="not_found",
                    detail=f"no saga of app {app.name!r} has id or correlation id "
                    f"{id_or_correlation!r}",
                ),
            )
        if len(found) > 1:
            raise ApiError(
                409,
                AmbiguousBody(
                    error="ambiguous",
                    detail=f"{len(found)} sagas have correlation id {id_or_correlation!r}: "
                    "name one by its saga id, or as {saga_type}/{correlation_id}",
                    candidates=[
                        SagaRef(
                            saga_id=s.saga_id,
                            saga_type=s.saga_type,
                            correlation_id=s.correlation_id,
                            status=s.status,
                            created_at=s.created_at.isoformat(),
                        )
                        for s in found
                    ],
                ),
            )
        return found[0]

    async def by_type(request: Request, saga_type: str, correlation_id: str) -> SagaInstance:
        where = SagaFilter(saga_type=saga_type, saga_types=scope, correlation_id=correlation_id)
        found = await reader(request).page_sagas(where, None, 1)
        if not found:
            raise ApiError(
                404,
                ErrorBody(
                    error="not_found",
                    detail=f"no saga of type {saga_type!r} with correlation id "
                    f"{correlation_id!r} in app {app.name!r}",
                ),
            )
        return found[0]

    async def detail(request: Request, instance: SagaInstance) -> SagaDetail:
        locks = await reader(request).saga_locks(instance.saga_id) if instance.locks else None
        return SagaDetail.model_validate(shown(instance, locks or SagaLocks()))

    async def history(request: Request, instance: SagaInstance) -> SagaHistory:
        entries = await reader(request).history(instance.saga_id)
        return SagaHistory(
            saga_id=instance.saga_id,
            saga_type=instance.saga_type,
            correlation_id=instance.correlation_id,
            trace_id=trace_id_of(instance.trace_context),
            entries=[HistoryEntryView.model_validate(history_view(e)) for e in entries],
        )

    # -- routes: history before the saga routes, so /sagas/{id}/history is the history ---

    one_saga: Responses = {**GUARDED, **NOT_FOUND}
    by_id: Responses = {**one_saga, **AMBIGUOUS}

    @api.get(
        "/sagas/{saga_id}/history",
        dependencies=READER,
        responses=by_id,
        tags=["sagas"],
        summary="A saga's audit log, oldest first",
    )
    async def get_history(request: Request, saga_id: str) -> SagaHistory:
        """Every message in and out of the saga (by saga id or correlation id), with its
        id, type, causation id, time, outcome and note."""
        return await history(request, await resolve(request, saga_id))

    @api.get(
        "/sagas/{saga_type}/{correlation_id}/history",
        dependencies=READER,
        responses=one_saga,
        tags=["sagas"],
        summary="A saga's audit log, by type and correlation id",
    )
    async def get_history_by_type(
        request: Request, saga_type: str, correlation_id: str
    ) -> SagaHistory:
        return await history(request, await by_type(request, saga_type, correlation_id))

    @api.get(
        "/sagas/{saga_id}",
        dependencies=READER,
        responses=by_id,
        tags=["sagas"],
        summary="One saga, by saga id or correlation id",
    )
    async def get_saga(request: Request, saga_id: str) -> SagaDetail:
        """The saga as ``sagas show --json`` shows it, with its locks. A correlation id
        that several of the app's sagas share is refused (409) with the candidates: name
        one by saga id or as ``/sagas/{saga_type}/{correlation_id}``."""
        return await detail(request, await resolve(request, saga_id))

    @api.get(
        "/sagas/{saga_type}/{correlation_id}",
        dependencies=READER,
        responses=one_saga,
        tags=["sagas"],
        summary="One saga, by type and correlation id",
    )
    async def get_saga_by_type(request: Request, saga_type: str, correlation_id: str) -> SagaDetail:
        return await detail(request, await by_type(request, saga_type, correlation_id))

    @api.get(
        "/sagas",
        dependencies=READER,
        responses=GUARDED,
        tags=["sagas"],
        summary="Sagas, newest first, a page at a time",
        response_model=SagaPage,
    )
    async def list_sagas(
        request: Request,
        status: SagaStatus | None = None,
        saga_type: Annotated[str | None, Query(alias="type")] = None,
        correlation_id: str | None = None,
        created_after: Time | None = None,
        created_before: Time | None = None,
        updated_before: Annotated[Time | None, Query(description="finds stuck sagas")] = None,
        limit: Annotated[int, Query(ge=1, le=500)] = 50,
        cursor: Annotated[str | None, Query(description="the `next` of the previous page")] = None,
    ) -> Response:
        """Sagas matching every filter given (times are exclusive bounds, with an offset),
        newest first (by creation, then saga id). A page ends with ``next``, a cursor
        for the following page: stable while sagas are inserted, since new ones come
        before the first page."""
        where = SagaFilter(
            status=status,
            saga_type=saga_type,
            saga_types=scope,
            correlation_id=correlation_id,
            created_after=created_after,
            created_before=created_before,
            updated_before=updated_before,
        )
        after = None if cursor is None else decode_cursor(cursor)
        found = await reader(request).page_sagas(where, after, limit + 1)
        page = found[:limit]
        more = len(found) > limit
        # The views are written as they are: a page of 500 validated again against the
        # response model would cost the API more than Postgres (the views are the very
        # objects SagaSummary describes; tests check them against the document).
        body = {
            "items": [shown(s) for s in page],
            "next": encode_cursor(page[-1]) if more else None,
        }
        return JSONResponse(body)

    @api.get(
        "/stats",
        dependencies=READER,
        responses=GUARDED,
        tags=["sagas"],
        summary="Counts by type and status; the oldest unfinished saga per type",
    )
    async def stats(request: Request) -> Stats:
        found = await reader(request).saga_stats(scope)
        return Stats(
            counts=[
                StatusCount(saga_type=c.saga_type, status=c.status, count=c.count)
                for c in found.counts
            ],
            oldest_running=[
                OldestRunningView(
                    saga_type=o.saga_type,
                    saga_id=o.saga_id,
                    correlation_id=o.correlation_id,
                    status=o.status,
                    created_at=o.created_at.isoformat(),
                )
                for o in found.oldest_running
            ],
        )

    add_repair_routes(api, resolve, detail)
    api.state.repairer = coordinator_repairer(app, settings, lambda: api.state.outlet, telemetry)
    add_dead_routes(api, settings, app)

    @api.get(
        "/me",
        dependencies=READER,
        responses=GUARDED,
        tags=["access"],
        summary="Who the token names, and its role",
    )
    async def whoami(request: Request) -> Caller:
        """The name a repair is recorded by, and the role (what the dashboard offers)."""
        return Caller.model_validate(caller(request), from_attributes=True)

    add_ui(api)

    @api.get("/healthz", tags=["health"], summary="The process is up")
    async def healthz() -> Health:
        return Health(status="ok")

    @api.get(
        "/readyz",
        tags=["health"],
        summary="Postgres and RabbitMQ reachable, migrations applied",
        responses={503: {"model": Readiness, "description": "A dependency is not ready"}},
    )
    async def readyz(request: Request, response: Response) -> Readiness:
        """Ready (200) or not (503), with each check's result; asks again on each call,
        so it turns ready by itself once the dependency is back."""
        postgres, migrations, rabbitmq = await asyncio.gather(
            check_postgres(request.app.state.pool),
            check_migrations(request.app.state.pool, settings.database_schema),
            check_rabbitmq(settings.amqp_url),
        )
        checks = {"postgres": postgres, "migrations": migrations, "rabbitmq": rabbitmq}
        ready = all(v == "ok" for v in checks.values())
        response.status_code = 200 if ready else 503
        return Readiness(status="ready" if ready else "not ready", checks=checks)

    add_schedule_routes(api, app)
    add_metrics_route(api, metrics)
    return api
