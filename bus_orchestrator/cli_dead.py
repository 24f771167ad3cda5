"""``bus-orchestrator dead list|show|replay|purge``: the dead-letter archive from the shell.

The commands read and write the archive in Postgres directly (as ``sagas show`` reads the
sagas) and a replay publishes, confirmed, on a connection of its own: the same service as
the HTTP API's routes (``runtime.dead_letters``). The archive is filled by the API process
(``bus-orchestrator api``, or ``run --api``), which consumes ``bus.dead``.
"""

from __future__ import annotations

import getpass
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer

from bus_orchestrator.cli import (
    AppOption,
    JsonOption,
    Output,
    OutputOption,
    _app,
    _fail,
    _output,
    _print_table,
    _run,
    _settings,
    _when,
    app,
    errors,
)
from bus_orchestrator.config import Settings
from bus_orchestrator.ports import DeadFilter, DeadStatus
from bus_orchestrator.runtime.dead_letters import (
    Correction,
    DeadLetterNotFoundError,
    DeadLetters,
    DeadLetterStateError,
    ReplayRefusedError,
    dead_letter_view,
)
from bus_orchestrator.transport.publisher import AmqpPublisher

T = TypeVar("T")

dead_app = typer.Typer(
    help="The dead-letter archive: list, show, replay or purge what reached bus.dead."
)

IdArgument = Annotated[str, typer.Argument(metavar="ID", help="the dead letter's id")]
ReasonOption = Annotated[str, typer.Option("--reason", help="why (recorded with it)")]
ByOption = Annotated[
    str | None, typer.Option("--by", help="who (recorded with it); default: the OS user")
]
TSV_COLUMNS = (
    "id",
    "dead_lettered_at",
    "status",
    "reason",
    "message_type",
    "message_id",
    "saga_id",
    "original_exchange",
    "original_routing_key",
    "detail",
)


@asynccontextmanager
async def _service(settings: Settings, app_ref: str | None) -> AsyncIterator[DeadLetters]:
    """The service on a pool of its own; its publisher connects on first use. The app,
    when one is named (``--app`` or ``BUS_APP``), checks corrected messages of its types."""
    from bus_orchestrator.store.dead_letters import PostgresDeadLetters
    from bus_orchestrator.store.migrate import require_migrated
    from bus_orchestrator.store.postgres import create_pool
    from bus_orchestrator.transport.topology import connect

    registry = None if app_ref is None else _app(app_ref, settings).registry
    connections: list[Any] = []

    async def publisher() -> AmqpPublisher:
        connection = await connect(settings.amqp_url, "bus-cli dead replay")
        connections.append(connection)
        return AmqpPublisher(await connection.channel(publisher_confirms=True))

    pool = await create_pool(settings.model_copy(update={"db_pool_size": 2}))
    try:
        await require_migrated(pool, settings.database_schema)
        yield DeadLetters(
            PostgresDeadLetters(pool), publisher, registry, settings.max_message_bytes
        )
    finally:
        for connection in connections:
            await connection.close()
        await pool.close()


def _act(settings: Settings, app_ref: str | None, work: Callable[[DeadLetters], Awaitable[T]]) -> T:
    """Run ``work`` with the service; an unknown id, or a fate that does not allow it, is
    one line and exit 1."""

    async def main() -> T:
        async with _service(settings, app_ref) as service:
            return await work(service)

    try:
        return _run(main())
    except (DeadLetterNotFoundError, DeadLetterStateError) as exc:
        _fail(str(exc), 1)
    except ReplayRefusedError as exc:
        _fail(f"the corrected message is refused ({exc.field}): {exc.detail}", 1)


@dead_app.command("list")
def dead_list(
    status: Annotated[
        str, typer.Option("--status", help="dead (default), replayed, purged or any")
    ] = "dead",
    reason: Annotated[str | None, typer.Option("--reason")] = None,
    message_type: Annotated[str | None, typer.Option("--type")] = None,
    saga_id: Annotated[str | None, typer.Option("--saga-id")] = None,
    limit: Annotated[int, typer.Option("--limit", min=1, max=10_000)] = 50,
    output: OutputOption = None,
    as_json: JsonOption = False,
) -> None:
    """List archived dead letters, newest first (with --output json, always a list)."""
    if status not in ("any", *DeadStatus):
        _fail(f"--status {status!r}: use dead, replayed, purged or any")
    shape = _output(output, as_json)
    settings = _settings()
    where = DeadFilter(
        status=None if status == "any" else DeadStatus(status),
        reason=reason,
        message_type=message_type,
        saga_id=saga_id,
    )

    async def page(service: DeadLetters) -> list[dict[str, Any]]:
        return [dead_letter_view(r) for r in await service.page(where, None, limit)]

    views = _act(settings, None, page)
    if shape is Output.JSON:
        print(json.dumps(views, indent=2))
    elif shape is Output.TSV:
        _print_tsv(views)
    else:
        with_status = status != DeadStatus.DEAD
        _print_table(
            ("ID", "DEAD-LETTERED", *(("STATUS",) if with_status else ()), "TYPE", "REASON"),
            [
                (
                    v["id"],
                    _when(v["dead_lettered_at"]),
                    *((v["status"],) if with_status else ()),
                    v["message_type"] or "?",
                    v["reason"],
                )
                for v in views
            ],
            shrink=(3 + with_status, 2 + with_status),
        )


def _print_tsv(views: list[dict[str, Any]]) -> None:
    print("\t".join(TSV_COLUMNS))
    for view in views:
        cells = ("" if view[c] is None else str(view[c]) for c in TSV_COLUMNS)
        print("\t".join(" ".join(cell.split()) for cell in cells))


@dead_app.command("show")
def dead_show(
    dead_id: IdArgument, output: OutputOption = None, as_json: JsonOption = False
) -> None:
    """Show one dead letter: why, where from, its headers and body."""
    shape = _output(output, as_json)
    settings = _settings()

    async def get(service: DeadLetters) -> dict[str, Any]:
        return dead_letter_view(await service.get(dead_id), whole=True)

    view = _act(settings, None, get)
    if shape is Output.JSON:
        print(json.dumps(view, indent=2))
    elif shape is Output.TSV:
        _print_tsv([view])
    else:
        _print_dead(view)


def _print_dead(view: dict[str, Any]) -> None:
    print(f"{view['id']}  {view['status']}")
    print(f"  reason: {view['reason']}: {view['detail']}")
    print(f"  type: {view['message_type'] or '?'}, id: {view['message_id'] or '?'}")
    print(f"  from: {view['original_exchange']} / {view['original_routing_key']}")
    if view["saga_id"]:
        print(f"  saga: {view['saga_id']}")
    print(f"  dead-lettered: {_when(view['dead_lettered_at'])} by {view['dead_lettered_by']}")
    if view["replayed_at"]:
        print(
            f"  replayed: {_when(view['replayed_at'])} by {view['replayed_by']} as "
            f"{view['replayed_as']}: {view['replay_reason']}"
        )
    if view["purged_at"]:
        print(
            f"  purged: {_when(view['purged_at'])} by {view['purged_by']}: {view['purge_reason']}"
        )
    print("  headers:")
    for key, value in view["headers"].items():
        print(f"    {key}: {json.dumps(value)}")
    print(f"  body ({view['body_bytes']} bytes, {view['content_type']}):")
    if view["body_encoding"] == "json":
        print(json.dumps(view["body"], indent=2))
    elif view["body_encoding"] == "base64":
        print(f"  base64: {view['body_base64']}")
    else:
        print("  (purged)")


@dead_app.command("replay")
def dead_replay(
    dead_id: IdArgument,
    reason: ReasonOption,
    data: Annotated[
        str | None, typer.Option("--data", help="the corrected CloudEvents data, as JSON")
    ] = None,
    body_file: Annotated[
        Path | None,
        typer.Option("--body-file", help="a file holding the whole corrected body", exists=True),
    ] = None,
    new_id: Annotated[
        bool | None,
        typer.Option(
            "--new-id/--same-id",
            help="publish under a new message id, or the same (default: new only for an "
            "expired event, whose id the park holds)",
        ),
    ] = None,
    by: ByOption = None,
    app_ref: AppOption = None,
) -> None:
    """Publish a dead letter again to its original exchange and routing key (confirmed),
    corrected with --data or --body-file; prints the message id it went out with.

    With an app (--app or BUS_APP), a corrected message of one of its types is checked
    against its contract first."""
    if data is not None and body_file is not None:
        _fail("give --data or --body-file, not both")
    correction = Correction()
    if data is not None:
        try:
            correction = Correction(data=json.loads(data), has_data=True)
        except json.JSONDecodeError as exc:
            _fail(f"--data is not JSON: {exc}")
    elif body_file is not None:
        correction = Correction(body=body_file.read_bytes())
    settings = _settings()
    who = by or getpass.getuser()

    async def replay(service: DeadLetters) -> str | None:
        done = await service.replay(
            dead_id, by=who, reason=reason, correction=correction, new_id=new_id
        )
        return done.message_id

    message_id = _act(settings, app_ref, replay)
    print(message_id or "")


@dead_app.command("purge")
def dead_purge(dead_id: IdArgument, reason: ReasonOption, by: ByOption = None) -> None:
    """Purge a dead letter: its body is dropped; who, when and why are kept."""
    settings = _settings()
    who = by or getpass.getuser()

    async def purge(service: DeadLetters) -> None:
        await service.purge(dead_id, by=who, reason=reason)

    _act(settings, None, purge)
    errors.print(f"purged {dead_id}")


app.add_typer(dead_app, name="dead")
