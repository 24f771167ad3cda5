"""``bus-orchestrator sagas retry|skip|abort|resume ID --reason ...``: the HTTP API's repairs,
for an operator at a shell with the database's credentials.

Each goes through a coordinator of the app, as ``POST /sagas/{id}/<repair>`` does: the
saga's new state, its history entry (``--by``, default the OS user; ``--reason``) and what
it sends are committed together, and what it sends is published before the command exits
(or, with RabbitMQ away, by the coordinator's relay once it is back). Exit 1 when the saga
is not found or its status refuses the repair, with the reason; 2 for configuration.
"""

from __future__ import annotations

import getpass
import json
import socket
from typing import Annotated, Any

import typer

from bus_orchestrator.cli import AppOption, _app, _fail, _run, _settings, errors, sagas_app
from bus_orchestrator.core.repair import (
    Repair,
    Repaired,
    RepairInvalidError,
    RepairRefusedError,
    RepairRequest,
    action_id,
)
from bus_orchestrator.core.state import SagaInstance
from bus_orchestrator.errors import ConcurrencyConflictError, SagaNotFoundError

Reason = Annotated[
    str, typer.Option("--reason", help="why: recorded in the saga's history with --by")
]
By = Annotated[
    str | None, typer.Option("--by", help="who: recorded in the history (default: user@host)")
]
Key = Annotated[
    str | None,
    typer.Option("--idempotency-key", help="the same key again applies the repair once"),
]
Step = Annotated[str | None, typer.Option("--step", help="the step meant, when several wait")]
SagaRef = Annotated[
    str, typer.Argument(metavar="ID", help="saga id, correlation id, or TYPE/CORRELATION_ID")
]


def _repair(
    repair: Repair,
    saga: str,
    reason: str,
    by: str | None,
    key: str | None,
    app_ref: str | None,
    as_json: bool,
    *,
    step: str | None = None,
    data: str | None = None,
    reply_type: str | None = None,
) -> None:
    if not reason.strip():
        _fail("--reason is required: say why, it is recorded with the repair")
    parsed: dict[str, Any] | None = None
    if data is not None:
        try:
            parsed = json.loads(data)
        except json.JSONDecodeError as exc:
            _fail(f"--data is not JSON: {exc}")
        if not isinstance(parsed, dict):
            _fail("--data must be a JSON object: the reply's fields")
    settings = _settings()
    application = _app(app_ref, settings)
    who = by or f"{getpass.getuser()}@{socket.gethostname()}"

    async def main() -> Repaired | list[SagaInstance]:
        from bus_orchestrator.api.outlet import PostgresOutlet
        from bus_orchestrator.api.repairs import coordinator_repairer
        from bus_orchestrator.store.migrate import require_migrated
        from bus_orchestrator.store.postgres import create_pool
        from bus_orchestrator.views import find_saga

        pool = await create_pool(settings.model_copy(update={"db_pool_size": 2}))
        try:
            await require_migrated(pool, settings.database_schema)
            outlet = PostgresOutlet(settings, application, pool)
            try:
                store = await outlet.store()
                scope = sorted({d.name for d in application.sagas})
                found = await find_saga(store.find, saga, scope)
                if len(found) != 1:
                    return found
                saga_id = found[0].saga_id
                message_id = action_id(saga_id, repair, key or None)
                ask = RepairRequest(
                    repair, saga_id, message_id, who, reason.strip(), step, parsed, reply_type
                )
                return await coordinator_repairer(application, settings, lambda: outlet)(ask)
            finally:
                await outlet.stop()  # publishes what the repair sends first
        finally:
            await pool.close()

    try:
        result = _run(main())
    except (RepairRefusedError, RepairInvalidError, SagaNotFoundError) as exc:
        errors.print(f"{repair} refused: {exc}")
        raise typer.Exit(1) from exc
    except ConcurrencyConflictError as exc:
        errors.print(f"{repair} refused: the saga kept changing; try again")
        raise typer.Exit(1) from exc
    if isinstance(result, list):
        if not result:
            errors.print(f"no saga of this app with id or correlation id {saga!r}")
            raise typer.Exit(1)
        names = ", ".join(f"{i.saga_type}/{i.correlation_id} ({i.saga_id})" for i in result)
        _fail(f"{saga!r} names {len(result)} sagas: {names}; name one by its saga id")
    instance = result.instance
    if as_json:
        from bus_orchestrator.views import app_saga_view

        shown = {
            "saga": app_saga_view(application, instance, settings.jaeger_ui_url),
            "repeated": result.repeated,
            "note": result.note,
        }
        print(json.dumps(shown, indent=2))
        return
    done = "already applied" if result.repeated else str(repair)
    print(f"{instance.saga_type}/{instance.correlation_id}: {done}; now {instance.status}")
    print(f"  {result.note}")


JsonFlag = Annotated[bool, typer.Option("--json", help="the saga after the repair, as JSON")]


@sagas_app.command("retry")
def retry(
    saga: SagaRef,
    reason: Reason,
    step: Step = None,
    by: By = None,
    key: Key = None,
    as_json: JsonFlag = False,
    app_ref: AppOption = None,
) -> None:
    """Send again what the saga waits for.

    A suspended saga's step goes out again (timed out: with its command id; refused by its
    adapter: as a new attempt); else the command or compensation in flight, now."""
    _repair(Repair.RETRY, saga, reason, by, key, app_ref, as_json, step=step)


@sagas_app.command("skip")
def skip(
    saga: SagaRef,
    reason: Reason,
    data: Annotated[
        str | None, typer.Option("--data", help="the reply the step should have had (JSON)")
    ] = None,
    reply_type: Annotated[
        str | None, typer.Option("--reply-type", help="when the step takes several")
    ] = None,
    step: Step = None,
    by: By = None,
    key: Key = None,
    as_json: JsonFlag = False,
    app_ref: AppOption = None,
) -> None:
    """Mark a stuck step done by hand; the saga goes on.

    --data is the reply it should have had, validated against the step's contract (none
    for a child saga's step); for a compensating saga, its compensation in flight."""
    _repair(
        Repair.SKIP,
        saga,
        reason,
        by,
        key,
        app_ref,
        as_json,
        step=step,
        data=data,
        reply_type=reply_type,
    )


@sagas_app.command("abort")
def abort(
    saga: SagaRef,
    reason: Reason,
    by: By = None,
    key: Key = None,
    as_json: JsonFlag = False,
    app_ref: AppOption = None,
) -> None:
    """Stop a running or suspended saga and compensate what it did."""
    _repair(Repair.ABORT, saga, reason, by, key, app_ref, as_json)


@sagas_app.command("resume")
def resume(
    saga: SagaRef,
    reason: Reason,
    by: By = None,
    key: Key = None,
    as_json: JsonFlag = False,
    app_ref: AppOption = None,
) -> None:
    """Compensate a failed saga once the cause is fixed.

    The compensation that gave up is sent again (with a new id), then the rest."""
    _repair(Repair.RESUME, saga, reason, by, key, app_ref, as_json)
