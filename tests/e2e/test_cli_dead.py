"""``bus-orchestrator dead list|show|replay|purge`` as processes, on the archive the API
keeps of this test's ``bus.dead`` and on the real broker."""

from __future__ import annotations

import getpass
import json
from pathlib import Path

import pytest

from bus_orchestrator.config import Settings
from tests.conftest import TestBus
from tests.e2e.processes import cli
from tests.integration.dead_harness import served_api
from tests.integration.harness import migrated
from tests.integration.test_api_dead import dead_event, placed

pytestmark = pytest.mark.e2e


async def test_dead_verbs(settings: Settings, db_schema: str, bus: TestBus, tmp_path: Path) -> None:
    await migrated(settings)
    events = await bus.tap(bus.topology.events, "orders.#")
    async with served_api(settings) as api:
        refused = await dead_event(bus, placed("o-1", currency="EURO"), correlation_id="o-1")
        other = await dead_event(bus, placed("o-2"), reason="handler-error", correlation_id="o-2")
        items = {i["message_id"]: i for i in await api.listed(2)}
    first, second = items[refused]["id"], items[other]["id"]

    code, out, err = await cli(settings, "dead", "list", COLUMNS="80")
    assert code == 0, err
    lines = out.splitlines()
    assert lines[0].split() == ["ID", "DEAD-LETTERED", "TYPE", "REASON"]
    assert {line.split()[0] for line in lines[1:]} == {first, second}
    assert all(len(line) <= 80 for line in lines)
    code, out, err = await cli(settings, "dead", "list", "--reason", "handler-error", "-o", "json")
    assert code == 0, err
    [listed] = json.loads(out)
    assert listed["id"] == second and listed["status"] == "dead"
    code, out, _ = await cli(settings, "dead", "list", "--output", "tsv")
    header, *rows = out.splitlines()
    assert header.split("\t")[:4] == ["id", "dead_lettered_at", "status", "reason"]
    assert len(rows) == 2
    code, out, _ = await cli(settings, "dead", "list", "--status", "purged", "--json")
    assert (code, json.loads(out)) == (0, [])
    code, _, err = await cli(settings, "dead", "list", "--status", "gone")
    assert code == 2 and "--status" in err

    code, out, err = await cli(settings, "dead", "show", first, "--json")
    assert code == 0, err
    shown = json.loads(out)
    assert shown["body"]["currency"] == "EURO" and shown["headers"]["ce-id"] == refused
    code, out, err = await cli(settings, "dead", "show", first)
    assert code == 0 and "schema-violation" in out and '"currency": "EURO"' in out

    # A correction the contract refuses (the app is BUS_APP), then one it takes.
    code, _, err = await cli(
        settings,
        "dead",
        "replay",
        first,
        "--reason",
        "fix",
        "--data",
        json.dumps(placed("o-1", currency="EURO")),
    )
    assert code == 1 and "schema-violation" in err and "currency" in err
    code, out, err = await cli(
        settings,
        "dead",
        "replay",
        first,
        "--reason",
        "currency fixed",
        "--data",
        json.dumps(placed("o-1")),
    )
    assert code == 0, err
    assert out.strip() == refused
    [sent] = await bus.drain(events, 1)
    assert json.loads(sent.body) == placed("o-1") and sent.message_id == refused
    code, out, _ = await cli(settings, "dead", "show", first, "--json")
    replayed = json.loads(out)
    assert replayed["status"] == "replayed" and replayed["replayed_by"] == getpass.getuser()
    code, _, err = await cli(settings, "dead", "replay", first, "--reason", "again")
    assert code == 1 and "replayed already" in err

    # A whole body from a file, under a new id, by a named operator.
    body = tmp_path / "body.json"
    body.write_text(json.dumps(placed("o-2", currency="USD")))
    code, out, err = await cli(
        settings,
        "dead",
        "replay",
        second,
        "--reason",
        "resent",
        "--body-file",
        str(body),
        "--new-id",
        "--by",
        "ops-ann",
    )
    assert code == 0, err
    new_id = out.strip()
    assert new_id != other
    [sent] = await bus.drain(events, 1)
    assert sent.message_id == new_id and (sent.headers or {})["ce-id"] == new_id
    assert json.loads(sent.body)["currency"] == "USD"

    code, _, err = await cli(
        settings, "dead", "purge", second, "--reason", "done", "--by", "ops-ann"
    )
    assert code == 0, err
    code, out, _ = await cli(settings, "dead", "show", second, "--json")
    purged = json.loads(out)
    assert purged["status"] == "purged" and purged["purged_by"] == "ops-ann"
    assert purged["body_encoding"] is None
    code, _, err = await cli(settings, "dead", "purge", second, "--reason", "again")
    assert code == 1 and "purged already" in err

    code, _, err = await cli(settings, "dead", "show", "5f0c1b6e-3f5e-4a43-9b53-7e0f9d1e2a11")
    assert code == 1 and "no dead letter" in err
    code, _, err = await cli(settings, "dead", "replay", first, "--reason", "r", "--data", "{nope")
    assert code == 2 and "--data is not JSON" in err
    assert await bus.drain(events, 0) == []
