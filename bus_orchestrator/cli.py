"""The ``bus-orchestrator`` command: the composition root.

Settings are built here, once, and every piece is wired from them. Typer has no async
commands, so each command runs its coroutine with ``asyncio.run``.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import shutil
import signal
import socket
import sys
import uuid
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, NoReturn, TypeVar

import typer
from pydantic import ValidationError
from rich.console import Console
from rich.markup import escape

from bus_orchestrator.app import App, load_app
from bus_orchestrator.cli_webhooks import webhooks_app
from bus_orchestrator.config import Settings
from bus_orchestrator.core.messages import MessageKind
from bus_orchestrator.core.state import SagaInstance, SagaStatus
from bus_orchestrator.errors import (
    AppConflictError,
    AppLoadError,
    BrokerUnavailableError,
    DefinitionError,
    DefinitionVersionError,
    SchemaNotMigratedError,
    ServiceRefusedError,
    StoreUnavailableError,
    TopologyMismatchError,
)
from bus_orchestrator.startup import service_error_line
from bus_orchestrator.telemetry.logs import configure_logging
from bus_orchestrator.telemetry.metrics import Metrics
from bus_orchestrator.telemetry.setup import Telemetry, tracer_of, tracer_provider_from_env
from bus_orchestrator.views import app_saga_view, find_saga, history_view

if TYPE_CHECKING:
    from bus_orchestrator.api.serve import ApiServer
    from bus_orchestrator.telemetry.prometheus import PrometheusMetrics

T = TypeVar("T")

app = typer.Typer(help="Saga orchestration over RabbitMQ, with saga state in Postgres.")
sagas_app = typer.Typer(help="Query saga state.")
app.add_typer(sagas_app, name="sagas")
contracts_app = typer.Typer(help="The message contracts: AsyncAPI, JSON Schema, compatibility.")
app.add_typer(contracts_app, name="contracts")
app.add_typer(webhooks_app, name="webhooks")

EXAMPLE_APP = "example:create_app"
"""The example application of the source repository (order-to-cash)."""
EXAMPLE_APPS = (EXAMPLE_APP, "example:create_onboarding_app")
"""The example applications of the source repository, which ``demo`` runs by default."""
console = Console()
errors = Console(stderr=True, soft_wrap=True)  # never split a hint or a command


def _settings() -> Settings:
    """The settings from the ``BUS_*`` variables; one line naming each bad one, exit 2."""
    try:
        return Settings()
    except ValidationError as exc:
        problems = []
        for error in exc.errors():
            field = str(error["loc"][0]) if error["loc"] else "?"
            name = f"BUS_{field.upper()}"
            value = os.environ.get(name, "")
            if field.endswith("_url"):
                value = _without_password(value)
            elif "token" in field or "secret" in field:
                value = "***"  # never in an error line
            why = error["msg"].removeprefix("Value error, ")
            problems.append(f"{name}={value!r} is not valid ({why[:1].lower()}{why[1:]})")
        _fail("; ".join(problems) + ": fix or unset it")


AppOption = Annotated[
    str | None,
    typer.Option(
        "--app",
        envvar="BUS_APP",
        metavar="MODULE:ATTRIBUTE",
        help="the application: an App object or a factory of one, e.g. onboarding.app:app",
    ),
]


def _app(reference: str | None, settings: Settings) -> App:
    """The application named by ``--app`` (or ``BUS_APP``); one line and exit 2 otherwise."""
    if reference is None:
        errors.print(
            "[bold red]name an application:[/] --app module:attribute (or BUS_APP), "
            f"e.g. --app {EXAMPLE_APP} for the example in the source repository"
        )
        raise typer.Exit(2)
    try:
        return load_app(reference, settings)
    except (AppLoadError, DefinitionError) as exc:
        errors.print(f"[bold red]{escape(str(exc))}[/]")
        raise typer.Exit(2) from exc


def _without_password(url: str) -> str:
    """``url`` with its password, if any, as ``***``: error lines end up in logs."""
    scheme, at, rest = url.partition("://")
    credentials, sign, host = rest.rpartition("@")
    if not at or not sign or ":" not in credentials:
        return url
    return f"{scheme}://{credentials.split(':', 1)[0]}:***@{host}"


def _fail(line: str, code: int = 2) -> NoReturn:
    """One line on stderr, then exit (2: a configuration or usage mistake)."""
    errors.print(f"[bold red]{escape(line)}[/]")
    raise typer.Exit(code)


def _configure_logging(level: str, settings: Settings) -> None:
    try:
        configure_logging(level, settings.log_format, stream=sys.stderr)
    except ValueError:
        _fail(
            f"log level {level!r} (--log-level or BUS_LOG_LEVEL) is not valid: "
            "use debug, info, warning or error"
        )


@contextmanager
def _telemetry(
    settings: Settings,
    service_name: str,
    *,
    serve_metrics: bool = True,
    metrics: PrometheusMetrics | None = None,
) -> Iterator[Telemetry]:
    """Tracing from the ``OTEL_*`` variables, metrics on ``BUS_METRICS_PORT``; flushed on exit.

    ``metrics`` given (``run --api``, whose API serves them too) are recorded on whether
    or not ``BUS_METRICS_PORT`` serves them as well; shut down on exit."""
    from bus_orchestrator.telemetry.prometheus import MetricsServer, PrometheusMetrics

    provider = tracer_provider_from_env(service_name)
    server = None
    if settings.metrics_port is not None and serve_metrics:
        try:
            pipeline = metrics or PrometheusMetrics.create(service_name)
            server = MetricsServer.serve(pipeline, settings.metrics_port, settings.metrics_host)
        except OSError as exc:
            _fail(
                f"BUS_METRICS_PORT={settings.metrics_port} cannot be served on "
                f"{settings.metrics_host} ({exc.strerror or exc}): pick a free port, or unset "
                "BUS_METRICS_PORT"
            )
    if server is not None:
        logging.getLogger(__name__).info(
            "metrics on http://%s:%d/metrics", server.host, server.port
        )
    meter = server.meter if server else metrics.meter if metrics else None
    try:
        yield Telemetry(tracer_of(provider), Metrics(meter) if meter else Metrics.disabled())
    finally:
        if server is not None:
            server.shutdown()
        elif metrics is not None:
            metrics.shutdown()
        if provider is not None:
            provider.shutdown()


def _run(coro: Awaitable[T]) -> T:
    """Run a command's coroutine; a service that cannot be used as configured is one line
    naming the setting and the fix (exit 2), not a trace."""
    try:
        return asyncio.run(coro)  # type: ignore[arg-type]
    except (
        StoreUnavailableError,
        BrokerUnavailableError,
        ServiceRefusedError,
        AppConflictError,
        DefinitionVersionError,
        SchemaNotMigratedError,
        TopologyMismatchError,
    ) as exc:
        _fail(service_error_line(exc, Settings()) or str(exc))


async def _until_signalled(work: Callable[[asyncio.Event], Awaitable[None]]) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await work(stop)


LogLevel = Annotated[
    str, typer.Option("--log-level", envvar="BUS_LOG_LEVEL", help="debug, info, warning, error")
]


@app.command()
def migrate(
    adapters_only: Annotated[
        bool,
        typer.Option(
            "--adapters",
            help="only the adapters' command log, in BUS_ADAPTERS_DATABASE_URL (for an "
            "adapters process that does not reach the orchestrator's database)",
        ),
    ] = False,
) -> None:
    """Apply the database migrations (idempotent; safe to run concurrently).

    The orchestrator's database gets them all; an adapters database of its own
    (BUS_ADAPTERS_DATABASE_URL / _SCHEMA) gets those of the command log."""
    from bus_orchestrator.store.session import connect_once

    settings = _settings()

    async def apply_to(target: Settings, only: str | None) -> list[str]:
        from bus_orchestrator.store.migrate import migrate as apply

        conn = await connect_once(target)
        try:
            return await apply(conn, target.database_schema, only)
        finally:
            await conn.close()

    async def main() -> list[str]:
        from bus_orchestrator.store.migrate import ADAPTER_MIGRATIONS

        applied = [] if adapters_only else await apply_to(settings, None)
        if adapters_only or settings.adapters_apart:
            applied += await apply_to(settings.for_adapters(), ADAPTER_MIGRATIONS)
        return applied

    applied = _run(main())
    console.print(f"applied: {', '.join(applied)}" if applied else "schema is up to date")


@app.command()
def run(
    app_ref: AppOption = None,
    log_level: LogLevel = "info",
    with_api: Annotated[
        bool,
        typer.Option(
            "--api",
            help="serve the HTTP API from this process too, on BUS_API_HOST:BUS_API_PORT "
            "(as the api command does, tokens included)",
        ),
    ] = False,
) -> None:
    """Run the coordinator, its outbox relay and its timers for the app's sagas."""
    from bus_orchestrator.runtime.service import run_coordinator
    from bus_orchestrator.telemetry.prometheus import PrometheusMetrics

    settings = _settings()
    _configure_logging(log_level, settings)
    application = _app(app_ref, settings)
    metrics = PrometheusMetrics.create("bus-coordinator") if with_api else None
    served = _served_api(settings, application, metrics) if with_api else None
    with _telemetry(settings, "bus-coordinator", metrics=metrics) as telemetry:

        async def coordinate(stop: asyncio.Event) -> None:
            await run_coordinator(
                settings,
                application.sagas,
                application.registry,
                stop,
                telemetry,
                app=application.name,
                schedules=application.schedules,
            )

        async def both(stop: asyncio.Event) -> None:
            assert served is not None  # noqa: S101 - with --api only
            server, listener = served
            serving = asyncio.create_task(server.serve_until(listener, stop))
            try:
                await coordinate(stop)
            finally:
                stop.set()  # the coordinator may have stopped on its own (start-up error)
                await serving

        _run(_until_signalled(both if served else coordinate))
    if served is not None and not served[0].started:
        raise typer.Exit(1)


@app.command()
def adapters(app_ref: AppOption = None, log_level: LogLevel = "info") -> None:
    """Run the app's adapters."""
    from bus_orchestrator.adapters.runner import run_adapters

    settings = _settings()
    _configure_logging(log_level, settings)
    application = _app(app_ref, settings)
    if not application.adapters:
        errors.print(f"[bold red]app {application.name!r} has no adapters to run[/]")
        raise typer.Exit(2)
    with _telemetry(settings, "bus-adapters") as telemetry:
        _run(
            _until_signalled(
                lambda stop: run_adapters(
                    settings,
                    application.adapters,
                    stop,
                    telemetry=telemetry,
                    app=application.name,
                )
            )
        )


MessageTypeArg = Annotated[
    str,
    typer.Argument(metavar="TYPE", help="e.g. orders.order_placed.v1, inventory.reserve_stock.v1"),
]
DataOption = Annotated[str, typer.Option("--data", help="the message's data, as JSON")]
CorrelationOption = Annotated[str | None, typer.Option("--correlation-id")]
IdOption = Annotated[str | None, typer.Option("--id", help="default: a new UUID")]
SourceOption = Annotated[str, typer.Option("--source")]


@app.command()
def api(app_ref: AppOption = None, log_level: LogLevel = "info") -> None:
    """Serve the app's HTTP API (uvicorn) on BUS_API_HOST:BUS_API_PORT.

    Every route but /healthz, /readyz, /metrics and the signed /webhooks/{name} takes a
    bearer token of BUS_API_TOKENS or BUS_API_TOKENS_FILE; with none, it refuses to start
    unless BUS_API_INSECURE=1. Webhook secrets: BUS_WEBHOOK_SECRET_<NAME> (or its _FILE)."""
    from bus_orchestrator.telemetry.prometheus import PrometheusMetrics

    settings = _settings()
    _configure_logging(log_level, settings)
    application = _app(app_ref, settings)
    metrics = PrometheusMetrics.create("bus-api")
    # Tracing from the OTEL_* variables: an event published over HTTP starts a trace that
    # the saga it starts joins.
    provider = tracer_provider_from_env("bus-api")
    telemetry = Telemetry(tracer_of(provider), Metrics.disabled())
    server, listener = _served_api(settings, application, metrics, telemetry)
    try:
        _run(_until_signalled(lambda stop: server.serve_until(listener, stop)))
    finally:
        metrics.shutdown()
        if provider is not None:
            provider.shutdown()
    if not server.started:
        raise typer.Exit(1)


def _served_api(
    settings: Settings,
    application: App,
    metrics: PrometheusMetrics | None,
    telemetry: Telemetry | None = None,
) -> tuple[ApiServer, socket.socket]:
    """The app's API and the socket it will listen on, bound now; a missing token
    setting or an address in use is one line, exit 2."""
    from bus_orchestrator.api import ApiConfigError, create_api
    from bus_orchestrator.api.serve import ApiAddressError, ApiServer, bind

    try:
        served = create_api(
            settings,
            application,
            metrics=None if metrics is None else metrics.registry,
            telemetry=telemetry,
        )
        listener = bind(settings)
    except (ApiConfigError, ApiAddressError) as exc:
        errors.print(f"[bold red]{escape(str(exc))}[/]")
        raise typer.Exit(2) from exc
    if settings.api_insecure and served.state.tokens is None:
        logging.getLogger(__name__).warning(
            "BUS_API_INSECURE: the HTTP API is served without access control"
        )
    logging.getLogger(__name__).info(
        "HTTP API of app %r on http://%s:%d", application.name, *listener.getsockname()[:2]
    )
    return ApiServer(served), listener


@app.command()
def publish(
    message_type: MessageTypeArg,
    data: DataOption,
    correlation_id: CorrelationOption = None,
    message_id: IdOption = None,
    source: SourceOption = "urn:bus-orchestrator:cli",
    app_ref: AppOption = None,
) -> None:
    """Publish a business event to ``bus.events`` (validated against its contract first).

    A command type is refused: send it with ``send``."""
    _publish(MessageKind.EVENT, message_type, data, correlation_id, message_id, source, app_ref)


@app.command()
def send(
    message_type: MessageTypeArg,
    data: DataOption,
    correlation_id: CorrelationOption = None,
    message_id: IdOption = None,
    source: SourceOption = "urn:bus-orchestrator:cli",
    app_ref: AppOption = None,
) -> None:
    """Send a command to ``bus.commands`` (validated against its contract first), e.g. to
    drive an adapter by hand. Its reply goes to ``bus.replies`` as any other.

    An event type is refused: publish it with ``publish``."""
    _publish(MessageKind.COMMAND, message_type, data, correlation_id, message_id, source, app_ref)


def _publish(
    kind: MessageKind,
    message_type: str,
    data: str,
    correlation_id: str | None,
    message_id: str | None,
    source: str,
    app_ref: str | None,
) -> None:
    """Validate ``data`` as ``message_type``, which must be a ``kind``, then publish it once
    (prints its id). The wrong kind is refused with the verb that takes it, exit 2."""
    from bus_orchestrator.runtime.publishing import publish_once

    verb = {MessageKind.EVENT: "publish", MessageKind.COMMAND: "send"}
    settings = _settings()
    registry = _app(app_ref, settings).registry
    contract = registry.get(message_type)
    if contract is None:
        errors.print(f"[red]unknown message type[/] {message_type!r}; known {kind}s:")
        for known in registry:
            if known.kind is kind:
                errors.print(f"  {known.message_type}")
        raise typer.Exit(1)
    if contract.kind is MessageKind.REPLY:
        _fail(
            f"{message_type} is a reply: replies are sent by adapters, in answer to a "
            "command (send the command instead)"
        )
    if contract.kind is not kind:
        _fail(
            f"{message_type} is {'an' if contract.kind is MessageKind.EVENT else 'a'} "
            f"{contract.kind}: use `bus-orchestrator {verb[contract.kind]} {message_type}`"
        )
    try:
        payload = contract.model.model_validate(json.loads(data))
    except (json.JSONDecodeError, ValidationError) as exc:
        errors.print(f"[red]invalid data for {message_type}:[/] {exc}")
        raise typer.Exit(1) from exc
    message_id = message_id or str(uuid.uuid4())
    with _telemetry(settings, "bus-cli", serve_metrics=False) as telemetry:
        _run(publish_once(settings, payload, message_id, source, correlation_id, telemetry.tracer))
    console.print(message_id)


class Output(StrEnum):
    """How ``sagas show|list`` print: a table for people, JSON or TSV for scripts."""

    TABLE = "table"
    JSON = "json"
    TSV = "tsv"


OutputOption = Annotated[
    Output | None,
    typer.Option(
        "--output",
        "-o",
        help="table (default; fits the terminal, or 80 columns when not on one), json "
        "(one shape per command) or tsv (a header line, then one line per saga)",
    ),
]
JsonOption = Annotated[bool, typer.Option("--json", help="the same as --output json")]


def _output(output: Output | None, as_json: bool) -> Output:
    if as_json and output not in (None, Output.JSON):
        _fail(f"--json and --output {output} disagree: give one of them")
    return Output.JSON if as_json else output or Output.TABLE


@sagas_app.command("show")
def sagas_show(
    saga: Annotated[
        str,
        typer.Argument(
            metavar="ID", help="saga id, correlation id, or TYPE/CORRELATION_ID (always one)"
        ),
    ],
    output: OutputOption = None,
    as_json: JsonOption = False,
    history: Annotated[bool, typer.Option("--history", help="include the audit log")] = False,
    app_ref: AppOption = None,
) -> None:
    """Show one saga: its status, steps and entity locks held or awaited (and, with
    --history, every message in and out).

    With --output json, one object. A correlation id that several sagas share (of several
    types) is refused, exit 2, with the candidates: name one by its saga id or as
    TYPE/CORRELATION_ID."""
    from bus_orchestrator.store.session import open_store

    settings = _settings()
    shape = _output(output, as_json)
    application = _app(app_ref, settings)

    async def main() -> dict[str, Any] | list[SagaInstance]:
        async with open_store(settings) as store:
            found = await find_saga(store.find, saga)
            if len(found) != 1:
                return found
            [instance] = found
            locks = await store.saga_locks(instance.saga_id) if instance.locks else None
            view = app_saga_view(application, instance, settings.jaeger_ui_url, locks)
            if history:
                view["history"] = [history_view(h) for h in await store.history(instance.saga_id)]
            return view

    view = _run(main())
    if isinstance(view, list):
        if not view:
            errors.print(f"no saga with id or correlation id {saga!r}")
            raise typer.Exit(1)
        candidates = ", ".join(
            f"{i.saga_type}/{i.correlation_id} ({i.saga_id}, {i.status})" for i in view
        )
        _fail(
            f"{saga!r} is the correlation id of {len(view)} sagas: {candidates}; "
            "show one by its saga id or as TYPE/CORRELATION_ID"
        )
    if shape is Output.JSON:
        print(json.dumps(view, indent=2))
    elif shape is Output.TSV:
        _print_tsv([view])
    else:
        _print_saga(view)


@sagas_app.command("diagram")
def sagas_diagram(
    name: Annotated[str, typer.Argument(metavar="NAME", help="the saga's name")],
    version: Annotated[
        int | None, typer.Option("--version", min=1, help="default: the newest")
    ] = None,
    app_ref: AppOption = None,
) -> None:
    """Print a saga definition as a Mermaid flowchart (for a ```mermaid block in Markdown)."""
    from bus_orchestrator.diagram import diagram

    application = _app(app_ref, _settings())
    try:
        definition = application.saga(name, version)
    except DefinitionError as exc:
        errors.print(f"[bold red]{escape(str(exc))}[/]")
        raise typer.Exit(1) from exc
    print(diagram(definition), end="")


@sagas_app.command("list")
def sagas_list(
    status: Annotated[SagaStatus | None, typer.Option("--status")] = None,
    saga_type: Annotated[str | None, typer.Option("--type")] = None,
    limit: Annotated[int, typer.Option("--limit", min=1, max=10_000)] = 50,
    output: OutputOption = None,
    as_json: JsonOption = False,
    app_ref: AppOption = None,
) -> None:
    """List sagas, newest first (with --output json, always a list).

    The table names each saga as TYPE/CORRELATION_ID, which ``sagas show`` takes; the saga
    ids are in --output json and tsv."""
    from bus_orchestrator.store.session import open_store

    settings = _settings()
    shape = _output(output, as_json)
    application = _app(app_ref, settings)

    async def main() -> list[dict[str, Any]]:
        async with open_store(settings) as store:
            found = await store.list_sagas(status=status, saga_type=saga_type, limit=limit)
            return [app_saga_view(application, i, settings.jaeger_ui_url) for i in found]

    views = _run(main())
    if shape is Output.JSON:
        print(json.dumps(views, indent=2))
    elif shape is Output.TSV:
        _print_tsv(views)
    else:
        _print_table(
            ("SAGA", "STATUS", "UPDATED", "FAILURE"),
            [
                (
                    f"{v['saga_type']}/{v['correlation_id']}",
                    v["status"],
                    _when(v["updated_at"]),
                    v["failure"] or "",
                )
                for v in views
            ],
            shrink=(3, 0),
        )


TSV_COLUMNS = (
    "saga_id",
    "saga_type",
    "correlation_id",
    "status",
    "created_at",
    "updated_at",
    "failure",
)


def _print_tsv(views: list[dict[str, Any]]) -> None:
    """A header line, then one line per saga: tabs and line breaks in a value become spaces,
    a missing value is empty."""
    print("\t".join(TSV_COLUMNS))
    for view in views:
        cells = ("" if view[c] is None else str(view[c]) for c in TSV_COLUMNS)
        print("\t".join(" ".join(cell.split("\t")).replace("\n", " ") for cell in cells))


def _when(iso: str) -> str:
    """``2026-11-29 21:45:12Z``: to the second, in UTC."""
    return datetime.fromisoformat(iso).astimezone(UTC).strftime("%Y-%m-%d %H:%M:%SZ")


def _print_table(
    headers: tuple[str, ...], rows: list[tuple[str, ...]], *, shrink: tuple[int, ...]
) -> None:
    """Plain columns (no colour, no box) as wide as the terminal, or 80 columns when stdout
    is not one (``COLUMNS`` overrides). When too wide, the columns in ``shrink`` are cut,
    in that order, down to their header's width, with an ellipsis."""
    width = shutil.get_terminal_size().columns
    widths = [max([len(h), *(len(r[i]) for r in rows)]) for i, h in enumerate(headers)]
    excess = sum(widths) + 2 * (len(widths) - 1) - width
    for column in shrink:
        cut = max(0, min(excess, widths[column] - len(headers[column])))
        widths[column] -= cut
        excess -= cut

    def fit(cell: str, size: int) -> str:
        cell = " ".join(cell.split())
        return cell if len(cell) <= size else cell[: size - 1] + "\u2026"

    for row in (headers, *rows):
        print("  ".join(fit(c, w).ljust(w) for c, w in zip(row, widths, strict=True)).rstrip())


def _print_saga(view: dict[str, Any]) -> None:
    """One saga for people: plain lines, then its steps as a table that fits the terminal
    (80 columns when not on one); each step's error in full below it."""
    print(f"{view['saga_type']}/{view['correlation_id']}  {view['status']}")
    print(f"  saga id: {view['saga_id']}")
    print(f"  created: {_when(view['created_at'])}, updated: {_when(view['updated_at'])}")
    if view["failure"]:
        print(f"  reason: {view['failure']}")
    if view["trace_id"]:
        print(f"  trace: {view['jaeger_url'] or view['trace_id']}")
    if view["in_flight"]:
        print(f"  in flight: {', '.join(view['in_flight'])} (until {_when(view['deadline'])})")
    awaiting = view["awaiting"] or {}
    if awaiting.get("kind") == "operator":
        held = ", ".join(item["step"] for item in awaiting["items"])
        print(f"  suspended by {held}: an operator must retry, skip or abort")
    elif awaiting.get("kind") == "compensation":
        [item] = awaiting["items"]
        print(f"  compensating {item['step']} (until {_when(item['until'])})")
    if view["repairs"]:
        print(f"  repairs: {', '.join(view['repairs'])} (sagas <repair> ID --reason ...)")
    for early in view["early_events"]:
        print(f"  kept for a later wait: {early}")
    for held in view.get("locks", {}).get("held", []):
        print(f"  holds lock {held['key']} since {held['since']}")
    for awaited in view.get("locks", {}).get("awaited", []):
        holder = f"held by saga {awaited['holder']}" if awaited["holder"] else "free"
        print(
            f"  waits for lock {awaited['key']}: number {awaited['place']} in line, "
            f"{holder} (waiting since {awaited['since']})"
        )
    print()

    def name(step: dict[str, Any]) -> str:
        return f"{step['group']}: {step['name']}" if step["group"] else step["name"]

    def short(iso: str | None) -> str:
        return _when(iso)[5:-1] if iso else ""  # 11-29 21:45:12: the date is above

    _print_table(
        ("STEP", "STATUS", "ATTEMPTS", "TRY", "RETRY AT", "FINISHED"),
        [
            (
                name(step),
                step["status"],
                str(step["attempts"]),
                str(step["tries"]),
                short(step["retry_at"]),
                short(step["finished_at"]),
            )
            for step in view["steps"]
        ],
        shrink=(0,),
    )
    for step in view["steps"]:
        if step["error"]:
            print(f"  {name(step)}: {step['error']}")
    if "history" in view:
        print()
    for entry in view.get("history", []):
        print(
            f"  {_when(entry['at'])} {entry['direction']:>3} {entry['message_type']} "
            f"{entry['message_id']} {entry['outcome']} {entry['note']}".rstrip()
        )


ContractsDir = Annotated[
    Path,
    typer.Option("--out", help="the app's contracts folder: asyncapi.yaml and schemas/"),
]


@contracts_app.command("export")
def contracts_export(out: ContractsDir = Path("contracts"), app_ref: AppOption = None) -> None:
    """Write asyncapi.yaml and one JSON Schema per message type (deterministic)."""
    from bus_orchestrator.schema.export import export_contracts
    from bus_orchestrator.schema.participants import participants_from

    application = _app(app_ref, _settings())
    participants = participants_from(application.sagas, application.adapters)
    written = export_contracts(
        application.registry,
        participants,
        out,
        title=application.document_title,
        version=application.version,
        app_id=application.name,
        description=application.description,
    )
    console.print(f"wrote {len(written)} files to {out}")


@contracts_app.command("check")
def contracts_check(
    against: Annotated[
        str, typer.Option("--against", help="a git ref (e.g. origin/main, v0.1.0) or a folder")
    ],
    as_json: Annotated[bool, typer.Option("--json")] = False,
    out: ContractsDir = Path("contracts"),
    app_ref: AppOption = None,
) -> None:
    """Compare the contracts with those at a git ref or in a saved snapshot folder.

    Exits 1 when a message type changed incompatibly within its version (a removed field,
    a new required field, a changed type, a narrowed enum, ...); a new version is fine.
    """
    from bus_orchestrator.errors import ContractCheckError
    from bus_orchestrator.schema.compat import breaking, compare, load_baseline, report, report_json
    from bus_orchestrator.schema.jsonschema import registry_schemas

    application = _app(app_ref, _settings())
    try:
        baseline = load_baseline(against, repo=Path.cwd(), schemas_dir=f"{out}/schemas")
    except ContractCheckError as exc:
        _fail(str(exc))
    changes = compare(baseline, registry_schemas(application.registry, application.name))
    if as_json:
        print(json.dumps(report_json(changes), indent=2))
    else:
        console.print(report(changes), markup=False, highlight=False)
    raise typer.Exit(1 if breaking(changes) else 0)


@app.command()
def new(
    directory: Annotated[Path, typer.Argument(metavar="DIR", help="the project folder to create")],
) -> None:
    """Create a project for a new team: its own package with contracts, a saga, adapters
    and tests that run the saga in memory. Its tests pass at once."""
    from bus_orchestrator.scaffold import package_name, scaffold

    try:
        written = scaffold(directory)
    except DefinitionError as exc:
        errors.print(f"[bold red]{escape(str(exc))}[/]")
        raise typer.Exit(2) from exc
    package = package_name(directory)
    console.print(f"wrote {len(written)} files to {directory}; next:")
    console.print(f"  cd {directory} && python -m pytest")
    console.print(f"  bus-orchestrator run --app {package}.app:app")


@app.command()
def demo(
    orders: Annotated[
        int, typer.Option("--orders", min=4, help="how many sagas of each app (orders, signups)")
    ] = 24,
    timeout: Annotated[float, typer.Option("--timeout", help="seconds to wait")] = 120.0,
    embedded: Annotated[
        bool,
        typer.Option(
            "--embedded", help="in memory: no RabbitMQ, no Postgres (the test harness's bus)"
        ),
    ] = False,
    log_level: LogLevel = "warning",
    app_refs: Annotated[
        list[str] | None,
        typer.Option(
            "--app",
            envvar="BUS_APP",
            metavar="MODULE:ATTRIBUTE",
            help="an application with a demo plan; give it several times to run several "
            "side by side (default: the examples, order-to-cash and onboarding)",
        ),
    ] = None,
) -> None:
    """Migrate, run each app's coordinator and adapters in this process, start a mix of
    sagas (each app's demo plan), and show how each one ends, app by app. Exits 0 only if
    every saga reached its expected status. Without --app, the two examples of the source
    repository, side by side on one broker and one database. When RabbitMQ or Postgres is
    unreachable, it says so and runs embedded instead."""
    from bus_orchestrator.demo import run_demo, run_embedded_demo, unreachable

    settings = _settings()
    _configure_logging(log_level, settings)
    applications = [_app(ref, settings) for ref in app_refs or EXAMPLE_APPS]
    names = [a.name for a in applications]
    if len(set(names)) != len(names):
        errors.print(f"[bold red]the demo's apps must have different names: {names}[/]")
        raise typer.Exit(2)
    if not embedded and (reason := _run(unreachable(settings))) is not None:
        errors.print(f"[yellow]{escape(reason)}: running the demo embedded, in memory[/]")
        embedded = True
    if embedded:
        ok = _run(
            run_embedded_demo(settings, applications, orders, wait_seconds=timeout, console=console)
        )
        raise typer.Exit(0 if ok else 1)
    with _telemetry(settings, "bus-demo") as telemetry:
        ok = _run(
            run_demo(
                settings,
                applications,
                orders,
                wait_seconds=timeout,
                console=console,
                telemetry=telemetry,
            )
        )
    raise typer.Exit(0 if ok else 1)


from bus_orchestrator import (  # noqa: E402 - they use the helpers above
    cli_dead,  # noqa: F401 - adds dead list|show|replay|purge
    cli_repair,  # noqa: F401 - adds sagas retry|skip|abort|resume
)


def main() -> None:
    app()


import bus_orchestrator.cli_schedules  # noqa: E402, F401 - adds `schedules`, with the helpers above
