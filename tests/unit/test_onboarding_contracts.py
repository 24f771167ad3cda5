"""The onboarding app's exported contracts: committed up to date under
``contracts/onboarding/``, beside the order-to-cash ones, with no type of one in the other."""

from __future__ import annotations

import difflib
from pathlib import Path

import pytest

from bus_orchestrator.schema.export import export_contracts
from bus_orchestrator.schema.participants import participants_from
from example import create_app, create_onboarding_app

ROOT = Path(__file__).resolve().parents[2]
COMMITTED = ROOT / "contracts" / "onboarding"
HINT = (
    "contracts/onboarding/ is stale: run `bus-orchestrator contracts export "
    "--app example:create_onboarding_app --out contracts/onboarding` and commit "
    "contracts/onboarding/asyncapi.yaml and contracts/onboarding/schemas/"
)


def export(out_dir: Path) -> list[Path]:
    """What ``contracts export --app example:create_onboarding_app`` writes."""
    app = create_onboarding_app()
    return export_contracts(
        app.registry,
        participants_from(app.sagas, app.adapters),
        out_dir,
        title=app.document_title,
        version=app.version,
        app_id=app.name,
        description=app.description,
    )


def files_under(folder: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(folder)): p.read_bytes()
        for p in sorted([folder / "asyncapi.yaml", *(folder / "schemas").glob("*.json")])
        if p.is_file()
    }


def test_committed_onboarding_contracts_are_up_to_date(tmp_path: Path) -> None:
    written = export(tmp_path)
    fresh, committed = files_under(tmp_path), files_under(COMMITTED)
    assert len(written) == len(fresh) == 1 + len(list(create_onboarding_app().registry))
    assert sorted(committed) == sorted(fresh), HINT
    for name, data in fresh.items():
        if committed[name] != data:
            diff = difflib.unified_diff(
                committed[name].decode().splitlines(keepends=True),
                data.decode().splitlines(keepends=True),
                f"committed/{name}",
                f"fresh/{name}",
            )
            pytest.fail(f"{HINT}\n{''.join(list(diff)[:40])}")


def test_the_two_example_apps_share_no_message_type() -> None:
    order_to_cash = {c.message_type for c in create_app().registry}
    onboarding = {c.message_type for c in create_onboarding_app().registry}
    assert order_to_cash and onboarding
    assert order_to_cash.isdisjoint(onboarding)


def test_the_order_to_cash_export_does_not_take_the_onboarding_folder_for_its_own() -> None:
    """``contracts/schemas/`` is order-to-cash's; onboarding's live one folder down."""
    top = {p.name for p in (ROOT / "contracts" / "schemas").glob("*.json")}
    assert top and not any(name.startswith(("onboarding.", "crm.", "credit.")) for name in top)
