"""``bus-orchestrator schedules``: the app's schedules.

It uses the command line's helpers and adds its verbs to its ``app``; ``cli`` imports it
once those are defined, so either module may be imported first."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import typer

from bus_orchestrator.cli import (
    AppOption,
    JsonOption,
    Output,
    OutputOption,
    _app,
    _output,
    _print_table,
    _run,
    _settings,
    _when,
    app,
)

schedules_app = typer.Typer(help="The app's schedules: events published by the clock.")

TSV_COLUMNS = (
    "name",
    "cron",
    "timezone",
    "catch_up",
    "publishes",
    "next_firing",
    "last_slot",
    "last_fired_at",
    "last_event_id",
)


@schedules_app.command("list")
def schedules_list(
    output: OutputOption = None, as_json: JsonOption = False, app_ref: AppOption = None
) -> None:
    """List the app's schedules: cron expression, time zone, whether a missed slot is
    caught up, the next slot and the last one fired (by any coordinator; times in UTC),
    and the event each publishes.

    With --output json, always a list (of the objects GET /schedules lists)."""
    from bus_orchestrator.store.migrate import require_migrated
    from bus_orchestrator.store.postgres import create_pool
    from bus_orchestrator.store.schedules import PostgresScheduleStore
    from bus_orchestrator.views import schedule_views

    settings = _settings()
    shape = _output(output, as_json)
    application = _app(app_ref, settings)

    async def main() -> list[dict[str, Any]]:
        pool = await create_pool(settings.model_copy(update={"db_pool_size": 1}))
        try:
            await require_migrated(pool, settings.database_schema)
            store = PostgresScheduleStore(pool, timedelta(0))
            states = await store.schedule_states(application.name)
        finally:
            await pool.close()
        return schedule_views(application.schedules, states, datetime.now(UTC))

    views = _run(main())
    if shape is Output.JSON:
        print(json.dumps(views, indent=2))
    elif shape is Output.TSV:
        print("\t".join(TSV_COLUMNS))
        for view in views:
            last = view["last_firing"] or {}
            cells = [
                *(str(view[c]).lower() if c == "catch_up" else view[c] for c in TSV_COLUMNS[:6]),
                last.get("slot"),
                last.get("fired_at"),
                last.get("event_id"),
            ]
            print("\t".join("" if cell is None else str(cell) for cell in cells))
    else:
        _print_table(
            ("NAME", "CRON", "ZONE", "CATCH-UP", "NEXT", "LAST", "EVENT"),
            [
                (
                    v["name"],
                    v["cron"],
                    v["timezone"],
                    "yes" if v["catch_up"] else "no",
                    _when(v["next_firing"]) if v["next_firing"] else "never",
                    _when(v["last_firing"]["slot"]) if v["last_firing"] else "-",
                    v["publishes"],
                )
                for v in views
            ],
            shrink=(6, 2, 1, 0),
        )


app.add_typer(schedules_app, name="schedules")
