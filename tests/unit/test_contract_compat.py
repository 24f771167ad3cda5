"""Contract compatibility: what compare() calls breaking, and where baselines come from."""

from __future__ import annotations

import copy
import json
import shutil
import subprocess
from decimal import Decimal
from enum import Enum
from pathlib import Path
from typing import Annotated, Any, Literal, Union

import pytest
from pydantic import BaseModel, ConfigDict, Field, create_model

from bus_orchestrator.core.messages import Command, ContractRegistry, Event, Message
from bus_orchestrator.errors import BusOrchestratorError, ContractCheckError
from bus_orchestrator.schema.compat import (
    Change,
    ChangeKind,
    breaking,
    compare,
    load_baseline,
    report,
    report_json,
)
from bus_orchestrator.schema.jsonschema import registry_schemas
from contracts import REGISTRY

TYPE = "shop.order_placed.v1"


def schemas(*models: type[Message]) -> dict[str, dict[str, Any]]:
    return registry_schemas(ContractRegistry(models), "test")


def event(message_type: str = TYPE, **fields: Any) -> type[Event]:
    """A tiny event with the given pydantic fields (``name=(type, default)``)."""
    model = create_model("Sample", __base__=Event, **fields)
    model.message_type = message_type
    return model


def part(name: str, extra: str = "forbid", **fields: Any) -> type[BaseModel]:
    """A nested model, as the example contracts write them."""
    config = ConfigDict(frozen=True, extra=extra)  # type: ignore[typeddict-item]
    return create_model(name, __config__=config, **fields)


def outcome(changes: list[Change]) -> list[tuple[str, str, ChangeKind, bool]]:
    return [(c.message_type, c.path, c.kind, c.breaking) for c in changes]


Colour = Enum("Colour", {"RED": "red", "GREEN": "green", "BLUE": "blue"}, type=str)
FewerColours = Enum("Colour", {"RED": "red", "GREEN": "green"}, type=str)

Address = part("Address", country=(str, ...), city=(str | None, None))
AddressWithNumericCountry = part("Address", country=(int, ...), city=(str | None, None))
AddressNeedingCity = part("Address", country=(str, ...), city=(str | None, ...))
Item = part("Item", sku=(str, ...), quantity=(int, ...))
ItemWithoutSku = part("Item", quantity=(int, ...))
ItemWithTextQuantity = part("Item", sku=(str, ...), quantity=(str, ...))
OpenMeta = part("Meta", extra="allow", source=(str, ...))
ClosedMeta = part("Meta", extra="forbid", source=(str, ...))

BREAKING_CASES = {
    "removed field": (
        {"order_id": (str, ...), "note": (str | None, None)},
        {"order_id": (str, ...)},
        "note",
        ChangeKind.FIELD_REMOVED,
    ),
    "new required field": (
        {"order_id": (str, ...)},
        {"order_id": (str, ...), "amount": (int, ...)},
        "amount",
        ChangeKind.REQUIRED_FIELD_ADDED,
    ),
    "optional field made required": (
        {"note": (str, "")},
        {"note": (str, ...)},
        "note",
        ChangeKind.FIELD_BECAME_REQUIRED,
    ),
    "string to integer": (
        {"quantity": (str, ...)},
        {"quantity": (int, ...)},
        "quantity",
        ChangeKind.TYPE_CHANGED,
    ),
    "object to array": (
        {"address": (Address, ...)},
        {"address": (list[str], ...)},
        "address",
        ChangeKind.TYPE_CHANGED,
    ),
    "decimal money to integer": (
        {"total": (Decimal, ...)},
        {"total": (int, ...)},
        "total",
        ChangeKind.TYPE_CHANGED,
    ),
    "no longer nullable": (
        {"note": (str | None, ...)},
        {"note": (str, ...)},
        "note",
        ChangeKind.TYPE_CHANGED,
    ),
    "enum value removed": (
        {"colour": (Colour, ...)},
        {"colour": (FewerColours, ...)},
        "colour",
        ChangeKind.ENUM_NARROWED,
    ),
    "const changed": (
        {"channel": (Literal["web"], ...)},
        {"channel": (Literal["shop"], ...)},
        "channel",
        ChangeKind.ENUM_NARROWED,
    ),
    "enum added to a free field": (
        {"channel": (str, ...)},
        {"channel": (Literal["web", "shop"], ...)},
        "channel",
        ChangeKind.ENUM_NARROWED,
    ),
    "unknown fields now forbidden": (
        {"meta": (OpenMeta, ...)},
        {"meta": (ClosedMeta, ...)},
        "meta",
        ChangeKind.EXTRA_FORBIDDEN,
    ),
    "nested model: field type changed": (
        {"shipping_address": (Address, ...)},
        {"shipping_address": (AddressWithNumericCountry, ...)},
        "shipping_address.country",
        ChangeKind.TYPE_CHANGED,
    ),
    "nested model: optional field made required": (
        {"shipping_address": (Address | None, None)},
        {"shipping_address": (AddressNeedingCity | None, None)},
        "shipping_address.city",
        ChangeKind.FIELD_BECAME_REQUIRED,
    ),
    "list of models: field removed": (
        {"items": (tuple[Item, ...], ...)},
        {"items": (tuple[ItemWithoutSku, ...], ...)},
        "items[].sku",
        ChangeKind.FIELD_REMOVED,
    ),
    "list of models: field type changed": (
        {"items": (list[Item], ...)},
        {"items": (list[ItemWithTextQuantity], ...)},
        "items[].quantity",
        ChangeKind.TYPE_CHANGED,
    ),
    "list item type changed": (
        {"skus": (tuple[str, ...], ())},
        {"skus": (tuple[int, ...], ())},
        "skus[]",
        ChangeKind.TYPE_CHANGED,
    ),
    "tuple position type changed": (
        {"pair": (tuple[int, str], ...)},
        {"pair": (tuple[int, int], ...)},
        "pair[1]",
        ChangeKind.TYPE_CHANGED,
    ),
    "map value type changed": (
        {"tags": (dict[str, str], ...)},
        {"tags": (dict[str, int], ...)},
        "tags{}",
        ChangeKind.TYPE_CHANGED,
    ),
    "maxLength lowered": (
        {"code": (Annotated[str, Field(max_length=200)], ...)},
        {"code": (Annotated[str, Field(max_length=100)], ...)},
        "code",
        ChangeKind.CONSTRAINT_NARROWED,
    ),
    "minimum made exclusive": (
        {"quantity": (Annotated[int, Field(ge=0)], ...)},
        {"quantity": (Annotated[int, Field(gt=0)], ...)},
        "quantity",
        ChangeKind.CONSTRAINT_NARROWED,
    ),
    "pattern added": (
        {"code": (str, ...)},
        {"code": (Annotated[str, Field(pattern=r"^[A-Z]+$")], ...)},
        "code",
        ChangeKind.CONSTRAINT_NARROWED,
    ),
    "minItems raised": (
        {"skus": (tuple[str, ...], ...)},
        {"skus": (Annotated[tuple[str, ...], Field(min_length=1)], ...)},
        "skus",
        ChangeKind.CONSTRAINT_NARROWED,
    ),
}


@pytest.mark.parametrize(
    ("before", "after", "path", "kind"), BREAKING_CASES.values(), ids=BREAKING_CASES.keys()
)
def test_a_breaking_change_is_reported_as_exactly_that(
    before: dict[str, Any], after: dict[str, Any], path: str, kind: ChangeKind
) -> None:
    changes = compare(schemas(event(**before)), schemas(event(**after)))

    assert outcome(breaking(changes)) == [(TYPE, path, kind, True)]
    assert changes[0].detail


COMPATIBLE_CASES = {
    "new optional field": (
        {"order_id": (str, ...)},
        {"order_id": (str, ...), "note": (str | None, None)},
        [("note", ChangeKind.FIELD_ADDED)],
    ),
    "enum value added": (
        {"colour": (FewerColours, ...)},
        {"colour": (Colour, ...)},
        [("colour", ChangeKind.ENUM_WIDENED)],
    ),
    "required field made optional": (
        {"note": (str, ...)},
        {"note": (str, "")},
        [("note", ChangeKind.FIELD_BECAME_OPTIONAL)],
    ),
    "now nullable": (
        {"note": (str, "")},
        {"note": (str | None, "")},
        [("note", ChangeKind.TYPE_WIDENED)],
    ),
    "integer to decimal": (
        {"total": (int, ...)},
        {"total": (Decimal, ...)},
        [("total", ChangeKind.TYPE_WIDENED)],
    ),
    "maxLength raised": (
        {"code": (Annotated[str, Field(max_length=100)], ...)},
        {"code": (Annotated[str, Field(max_length=200)], ...)},
        [("code", ChangeKind.CONSTRAINT_RELAXED)],
    ),
    "default changed": (
        {"quantity": (int, 1)},
        {"quantity": (int, 2)},
        [("quantity", ChangeKind.DEFAULT_CHANGED)],
    ),
    "unknown fields now allowed": (
        {"meta": (ClosedMeta, ...)},
        {"meta": (OpenMeta, ...)},
        [("meta", ChangeKind.EXTRA_ALLOWED)],
    ),
}


@pytest.mark.parametrize(
    ("before", "after", "expected"), COMPATIBLE_CASES.values(), ids=COMPATIBLE_CASES.keys()
)
def test_a_compatible_change_is_reported_but_not_breaking(
    before: dict[str, Any], after: dict[str, Any], expected: list[tuple[str, ChangeKind]]
) -> None:
    changes = compare(schemas(event(**before)), schemas(event(**after)))

    assert outcome(changes) == [(TYPE, path, kind, False) for path, kind in expected]


def test_secret_fields_compare_as_the_strings_they_accept() -> None:
    from bus_orchestrator.core.messages import Secret

    before = schemas(event(token=(str, ...)))
    after = schemas(event(token=(Secret, ...)))

    assert compare(before, after) == []


def test_a_new_message_type_and_a_new_version_are_compatible() -> None:
    v1 = event(TYPE, order_id=(str, ...))
    v2 = event("shop.order_placed.v2", order_id=(str, ...), amount=(int, ...))
    other = event("shop.order_cancelled.v1", order_id=(str, ...))

    changes = compare(schemas(v1), schemas(v1, v2, other))

    assert outcome(changes) == [
        ("shop.order_cancelled.v1", "", ChangeKind.MESSAGE_ADDED, False),
        ("shop.order_placed.v2", "", ChangeKind.VERSION_ADDED, False),
    ]


def test_a_removed_message_type_is_breaking() -> None:
    placed = event(TYPE, order_id=(str, ...))
    cancelled = event("shop.order_cancelled.v1", order_id=(str, ...))

    changes = compare(schemas(placed, cancelled), schemas(placed))

    assert outcome(changes) == [("shop.order_cancelled.v1", "", ChangeKind.MESSAGE_REMOVED, True)]


def test_a_type_string_moving_to_another_exchange_is_breaking() -> None:
    class AsEvent(Event):
        message_type = TYPE
        order_id: str

    class AsCommand(Command):
        message_type = TYPE
        order_id: str

    changes = compare(schemas(AsEvent), schemas(AsCommand))

    assert outcome(changes) == [(TYPE, "", ChangeKind.ROUTING_CHANGED, True)]
    assert "bus.commands" in changes[0].detail


def test_the_example_registry_has_no_changes_against_itself_or_its_files() -> None:
    current = registry_schemas(REGISTRY, "order-to-cash")
    as_files = json.loads(json.dumps(current, indent=2, sort_keys=True))

    assert compare(current, current) == []
    assert compare(as_files, current) == []


def test_a_change_deep_in_an_example_contract_is_found() -> None:
    baseline = registry_schemas(REGISTRY, "order-to-cash")
    current = copy.deepcopy(baseline)
    line_item = current["orders.order_placed.v1"]["$defs"]["LineItem"]
    line_item["properties"]["unit_price"]["type"] = "number"  # money no longer as a string

    changes = compare(baseline, current)

    assert outcome(changes) == [
        ("orders.order_placed.v1", "items[].unit_price", ChangeKind.TYPE_CHANGED, True)
    ]
    assert "no longer string" in changes[0].detail


def test_recursive_models_are_compared_without_looping() -> None:
    class Node(BaseModel):
        model_config = ConfigDict(frozen=True, extra="forbid")
        name: str
        children: tuple[Node, ...] = ()

    class Tree(Event):
        message_type = TYPE
        root: Node

    class NodeWithSize(BaseModel):
        model_config = ConfigDict(frozen=True, extra="forbid", title="Node")
        name: str
        size: int
        children: tuple[NodeWithSize, ...] = ()

    class SizedTree(Event):
        message_type = TYPE
        root: NodeWithSize

    assert compare(schemas(Tree), schemas(Tree)) == []
    assert outcome(compare(schemas(Tree), schemas(SizedTree))) == [
        (TYPE, "root.size", ChangeKind.REQUIRED_FIELD_ADDED, True)
    ]


Card = part("Card", kind=(Literal["card"], "card"), last4=(str, ...))
Bank = part("Bank", kind=(Literal["bank"], "bank"), iban=(str, ...))
BankWithNumericIban = part("Bank", kind=(Literal["bank"], "bank"), iban=(int, ...))
Wire = part("Wire", kind=(Literal["wire"], "wire"), reference=(str, ...))


def paid_by(*alternatives: type[BaseModel]) -> dict[str, dict[str, Any]]:
    method = Annotated[Union[alternatives], Field(discriminator="kind")]  # noqa: UP007
    return schemas(event(method=(method, ...)))


def test_alternatives_of_a_union_pair_up_by_title() -> None:
    changed = compare(paid_by(Card, Bank), paid_by(Card, BankWithNumericIban))
    swapped = compare(paid_by(Card, Bank), paid_by(Card, Wire))

    assert outcome(changed) == [(TYPE, "method<Bank>.iban", ChangeKind.TYPE_CHANGED, True)]
    assert outcome(swapped) == [
        (TYPE, "method", ChangeKind.TYPE_CHANGED, True),
        (TYPE, "method", ChangeKind.TYPE_WIDENED, False),
    ]
    assert [c.detail for c in swapped] == [
        "object alternative Bank removed",
        "object alternative Wire added",
    ]


def test_order_is_deterministic_and_report_puts_breaking_first() -> None:
    before = schemas(
        event(TYPE, order_id=(str, ...), note=(str, ...)),
        event("shop.order_cancelled.v1", reason=(str, ...)),
    )
    after = schemas(
        event(TYPE, order_id=(str, ...), note=(str, ""), extra=(int, 0)),
        event("shop.order_cancelled.v1", reason=(int, ...)),
    )

    changes = compare(before, after)
    text = report(changes)

    assert changes == compare(before, after)
    assert outcome(changes) == [
        ("shop.order_cancelled.v1", "reason", ChangeKind.TYPE_CHANGED, True),
        (TYPE, "extra", ChangeKind.FIELD_ADDED, False),
        (TYPE, "note", ChangeKind.FIELD_BECAME_OPTIONAL, False),
    ]
    assert text.index("shop.order_cancelled.v1") < text.index(TYPE)
    assert text.splitlines()[-1] == "1 breaking, 2 compatible in 2 message types."
    assert report([]) == "No contract changes."
    data = report_json(changes)
    assert json.loads(json.dumps(data)) == data
    assert (data["breaking"], data["compatible"], data["message_types"]) == (1, 2, 2)
    assert data["changes"][0]["kind"] == "type_changed"


# -- baselines -------------------------------------------------------------------------------


def write_schemas(folder: Path, current: dict[str, dict[str, Any]]) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for message_type, schema in current.items():
        text = json.dumps(schema, indent=2, sort_keys=True) + "\n"
        (folder / f"{message_type}.json").write_text(text)


def test_a_baseline_is_read_from_a_directory(tmp_path: Path) -> None:
    current = registry_schemas(REGISTRY, "order-to-cash")
    write_schemas(tmp_path, current)
    (tmp_path / "README.md").write_text("not a schema")
    anonymous = {"type": "object", "properties": {}}
    (tmp_path / "legacy.thing.v1.json").write_text(json.dumps(anonymous))

    baseline = load_baseline(str(tmp_path), repo=tmp_path)

    assert baseline.pop("legacy.thing.v1") == anonymous
    assert baseline == current


def test_a_directory_with_a_broken_file_is_a_clear_error(tmp_path: Path) -> None:
    (tmp_path / "orders.order_placed.v1.json").write_text("{not json")

    with pytest.raises(ContractCheckError, match=r"orders\.order_placed\.v1\.json"):
        load_baseline(str(tmp_path), repo=tmp_path)


GIT = shutil.which("git")
needs_git = pytest.mark.skipif(GIT is None, reason="git is not installed")


def git(repo: Path, *args: str) -> None:
    assert GIT is not None
    identity = ["-c", "user.name=Test", "-c", "user.email=test@example.invalid"]
    subprocess.run(  # noqa: S603 - the test's own fixed arguments
        [GIT, *identity, "-c", "commit.gpgsign=false", *args],
        cwd=repo,
        check=True,
        capture_output=True,
    )


@needs_git
def test_a_baseline_is_read_from_a_git_ref(tmp_path: Path) -> None:
    committed = schemas(event(TYPE, order_id=(str, ...), note=(str | None, None)))
    git(tmp_path, "init", "--quiet")
    (tmp_path / "README.md").write_text("before the contracts\n")
    git(tmp_path, "add", "README.md")
    git(tmp_path, "commit", "--quiet", "-m", "start")
    git(tmp_path, "tag", "before-contracts")
    write_schemas(tmp_path / "contracts" / "schemas", committed)
    git(tmp_path, "add", "contracts")
    git(tmp_path, "commit", "--quiet", "-m", "contracts")
    working_tree = schemas(event(TYPE, order_id=(str, ...)))
    write_schemas(tmp_path / "contracts" / "schemas", working_tree)

    at_head = load_baseline("HEAD", repo=tmp_path)
    on_disk = load_baseline(str(tmp_path / "contracts" / "schemas"), repo=tmp_path)

    assert at_head == committed
    assert outcome(compare(at_head, on_disk)) == [(TYPE, "note", ChangeKind.FIELD_REMOVED, True)]
    with pytest.raises(ContractCheckError, match="no-such-ref"):
        load_baseline("no-such-ref", repo=tmp_path)
    with pytest.raises(ContractCheckError, match="has no contracts/schemas/"):
        load_baseline("before-contracts", repo=tmp_path)
    with pytest.raises(ContractCheckError):
        load_baseline("--output=x", repo=tmp_path)


@needs_git
def test_a_ref_outside_a_git_repository_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(BusOrchestratorError, match="neither a directory nor a known git ref"):
        load_baseline("HEAD", repo=tmp_path)
