"""The exported contracts: deterministic, committed up to date, and saying who sends what."""

from __future__ import annotations

import difflib
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import create_model

import bus_orchestrator
from adapters import example_adapters
from bus_orchestrator.adapters import Adapter
from bus_orchestrator.core import SagaDefinition, Step
from bus_orchestrator.core.messages import EXCHANGES, ContractRegistry, Event
from bus_orchestrator.errors import DefinitionError
from bus_orchestrator.schema.asyncapi import asyncapi_document, channel_id, component_schemas
from bus_orchestrator.schema.export import export_contracts
from bus_orchestrator.schema.participants import Participant, participants_from
from contracts import (
    REGISTRY,
    OrderPlaced,
    ReleaseStock,
    ReserveStock,
    StockReleased,
    StockReserved,
)
from example import NAME, TITLE, create_app
from sagas import all_sagas

ROOT = Path(__file__).resolve().parents[2]
COMMITTED = ROOT / "contracts"


def example_participants() -> list[Participant]:
    return participants_from(all_sagas(), example_adapters())


def export(out_dir: Path) -> list[Path]:
    return export_contracts(
        REGISTRY,
        example_participants(),
        out_dir,
        title=TITLE,
        version=bus_orchestrator.__version__,
        app_id=NAME,
    )


def files_under(folder: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(folder)): p.read_bytes()
        for p in sorted([folder / "asyncapi.yaml", *(folder / "schemas").glob("*.json")])
        if p.is_file()
    }


@pytest.fixture(scope="module")
def document() -> dict[str, Any]:
    return asyncapi_document(
        REGISTRY,
        example_participants(),
        title=TITLE,
        version=bus_orchestrator.__version__,
        app_id=NAME,
    )


def test_export_is_byte_for_byte_deterministic(tmp_path: Path) -> None:
    first = export(tmp_path / "a")
    export(tmp_path / "b")
    a, b = files_under(tmp_path / "a"), files_under(tmp_path / "b")
    assert a == b
    assert len(a) == 1 + len(list(REGISTRY)) == len(first)
    assert first[0] == tmp_path / "a" / "asyncapi.yaml"
    assert yaml.safe_load(a["asyncapi.yaml"])["asyncapi"] == "3.0.0"


def test_committed_contracts_are_up_to_date(tmp_path: Path) -> None:
    export(tmp_path)
    fresh, committed = files_under(tmp_path), files_under(COMMITTED)
    hint = (
        "contracts/ is stale: run `bus-orchestrator contracts export --app example:create_app` "
        "and commit "
        "contracts/asyncapi.yaml and contracts/schemas/"
    )
    assert sorted(committed) == sorted(fresh), hint
    for name, data in fresh.items():
        if committed[name] != data:
            diff = "".join(
                list(
                    difflib.unified_diff(
                        committed[name].decode().splitlines(keepends=True),
                        data.decode().splitlines(keepends=True),
                        f"committed/{name}",
                        f"fresh/{name}",
                    )
                )[:40]
            )
            pytest.fail(f"{hint}\n{diff}")


def test_schema_files_of_removed_types_are_deleted(tmp_path: Path) -> None:
    stale = tmp_path / "schemas" / "orders.order_archived.v1.json"
    stale.parent.mkdir(parents=True)
    stale.write_text("{}\n")
    unrelated = tmp_path / "schemas" / "README.md"
    unrelated.write_text("kept\n")

    written = export(tmp_path)

    assert not stale.exists()
    assert unrelated.exists()
    assert sorted(p.name for p in (tmp_path / "schemas").glob("*.json")) == sorted(
        f"{c.message_type}.json" for c in REGISTRY
    )
    assert all(p.is_file() for p in written)


def test_every_type_has_a_channel_on_its_exchange(document: dict[str, Any]) -> None:
    channels = document["channels"]
    assert len(channels) == len(list(REGISTRY))
    for contract in REGISTRY:
        channel = channels[channel_id(contract.message_type)]
        assert channel["address"] == contract.message_type
        amqp = channel["bindings"]["amqp"]
        assert amqp["is"] == "routingKey"
        assert amqp["exchange"]["name"] == EXCHANGES[contract.kind]
        assert amqp["exchange"]["type"] == "topic"
        assert amqp["exchange"]["durable"] is True
    assert channel_id("orders.order_placed.v1") == "ordersOrderPlacedV1"
    assert channels["paymentsChargePaymentV1"]["bindings"]["amqp"]["exchange"]["name"] == (
        "bus.commands"
    )


def operations_of(document: dict[str, Any], participant: str, action: str) -> set[str]:
    return {
        document["channels"][op["channel"]["$ref"].rsplit("/", 1)[-1]]["address"]
        for op_id, op in document["operations"].items()
        if op_id.startswith(f"{participant}.") and op["action"] == action
    }


def test_who_sends_and_receives_what(document: dict[str, Any]) -> None:
    assert "orders.order_placed.v1" in operations_of(document, "coordinator", "receive")
    assert "orders.order_cancelled.v1" in operations_of(document, "coordinator", "receive")
    assert "inventory.reserve_stock.v1" in operations_of(document, "coordinator", "send")
    assert "payments.refund_payment.v1" in operations_of(document, "coordinator", "send")
    assert operations_of(document, "payments", "receive") == {
        "payments.charge_payment.v1",
        "payments.refund_payment.v1",
    }
    assert "payments.payment_declined.v1" in operations_of(document, "payments", "send")
    assert "payments.payment_declined.v1" not in operations_of(document, "coordinator", "send")
    assert "coordinator.receive.ordersOrderPlacedV1" in document["operations"]
    # the engine's own events about the saga: it ends on the bus, and may be cancelled by one
    assert {
        "saga.order_to_cash.completed.v1",
        "saga.order_to_cash.compensated.v1",
        "saga.order_to_cash.failed.v1",
    } <= operations_of(document, "coordinator", "send")
    assert "saga.order_to_cash.cancel_requested.v1" in operations_of(
        document, "coordinator", "receive"
    )
    ended = document["channels"]["sagaOrderToCashCompletedV1"]["bindings"]["amqp"]
    assert ended["exchange"]["name"] == "bus.events"


def test_the_lifecycle_feed_is_declared_with_its_bounds_and_end_event_bindings(
    document: dict[str, Any],
) -> None:
    [lifecycle] = [q for q in document["x-topology"]["queues"] if q["name"] == "bus.lifecycle"]
    assert lifecycle["arguments"] == {
        "x-queue-type": "quorum",
        "x-max-length": 100_000,
        "x-overflow": "drop-head",
        "x-message-ttl": 7 * 24 * 3600 * 1000,
    }
    assert lifecycle["bindings"] == [
        {"exchange": "bus.events", "routingKey": f"saga.*.{status}.v1"}
        for status in ("completed", "compensated", "failed")
    ]
    description = document["info"]["description"]
    assert "## Saga end events" in description and "## Cancelling a saga" in description
    assert "| `bus.lifecycle` | queue, durable |" in description


def resolve(document: dict[str, Any], ref: str) -> Any:
    assert ref.startswith("#/"), ref
    node: Any = document
    for part in ref[2:].split("/"):
        assert part in node, f"dangling $ref {ref}"
        node = node[part]
    return node


def test_operations_reference_existing_channels_and_their_messages(
    document: dict[str, Any],
) -> None:
    # 28 for the domain's messages, 3 end events sent and 1 cancel request received
    assert len(document["operations"]) == 32
    for op_id, operation in document["operations"].items():
        channel = resolve(document, operation["channel"]["$ref"])
        for message in operation["messages"]:
            ref = message["$ref"]
            assert ref.startswith(operation["channel"]["$ref"] + "/messages/"), op_id
            resolve(document, resolve(document, ref)["$ref"])
        assert operation["action"] in ("send", "receive")
        assert channel["messages"]


def test_message_headers_pin_the_type(document: dict[str, Any]) -> None:
    for cid, message in document["components"]["messages"].items():
        message_type = document["channels"][cid]["address"]
        headers = message["headers"]
        assert headers["properties"]["ce-type"]["const"] == message_type
        assert headers["properties"]["ce-specversion"]["const"] == "1.0"
        required = {"ce-id", "ce-type", "ce-source", "ce-specversion"}
        if message["tags"] == [{"name": "reply"}]:
            required.add("ce-causationid")  # the engine finds a reply's saga by its command
        assert set(headers["required"]) == required
        assert message["correlationId"]["location"] == "$message.header#/ce-correlationid"
        assert message["bindings"]["amqp"]["messageType"] == message_type
        resolve(document, message["payload"]["$ref"])
    schemas = document["components"]["schemas"]
    assert {"OrderPlaced", "Address", "LineItem", "StockLine"} <= set(schemas)
    assert "$defs" not in schemas["OrderPlaced"]
    assert "#/components/schemas/Address" in yaml.safe_dump(schemas["OrderPlaced"])


def saga_with(step: Step[Any]) -> SagaDefinition[Any, Any]:
    return SagaDefinition(
        name="reserve_only",
        data_model=OrderPlaced,
        started_by=OrderPlaced,
        correlate=lambda e: e.order_id,
        initial_data=lambda e: e,
        steps=(step,),
    )


def test_a_step_that_does_not_declare_its_command_is_refused() -> None:
    step: Step[Any] = Step(
        name="reserve_stock",
        command=lambda d: ReserveStock(order_id=d.order_id, items=()),
        succeeds_on=(StockReserved,),
        timeout=timedelta(seconds=5),
    )
    with pytest.raises(DefinitionError, match=r"step 'reserve_stock'.*sends"):
        participants_from([saga_with(step)], [])


def test_a_compensation_that_does_not_declare_its_command_is_refused() -> None:
    step: Step[Any] = Step(
        name="reserve_stock",
        command=lambda d: ReserveStock(order_id=d.order_id, items=()),
        succeeds_on=(StockReserved,),
        compensation=lambda d: ReleaseStock(order_id=d.order_id),
        compensated_on=(StockReleased,),
        sends=ReserveStock,
    )
    with pytest.raises(DefinitionError, match=r"step 'reserve_stock'.*compensation_sends"):
        participants_from([saga_with(step)], [])


def test_an_adapter_without_declared_replies_is_refused() -> None:
    adapter = Adapter("inventory")

    @adapter.handles(ReserveStock)
    async def reserve(command: ReserveStock, ctx: object) -> StockReserved:
        raise AssertionError("never called: the adapter is refused before it runs")

    with pytest.raises(DefinitionError, match=r"'inventory'.*inventory\.reserve_stock\.v1"):
        participants_from([], [adapter])


def test_a_message_outside_the_registry_is_refused() -> None:
    partial = ContractRegistry([OrderPlaced])
    with pytest.raises(DefinitionError, match="not in the contract registry"):
        asyncapi_document(partial, example_participants(), title=TITLE, version="0", app_id=NAME)


def test_two_message_models_with_one_class_name_are_refused() -> None:
    def version_1() -> type[Event]:
        class OrderPlaced(Event):
            message_type = "orders.order_placed.v1"
            order_id: str

        return OrderPlaced

    def version_2() -> type[Event]:
        class OrderPlaced(Event):
            message_type = "orders.order_placed.v2"
            order_ref: str

        return OrderPlaced

    registry = ContractRegistry([version_1(), version_2()])
    with pytest.raises(DefinitionError, match="'OrderPlaced'"):
        component_schemas(list(registry))


def test_two_nested_models_with_one_class_name_are_refused() -> None:
    SkuLine = create_model("Line", sku=(str, ...))  # noqa: N806
    ParcelLine = create_model("Line", parcel=(str, ...))  # noqa: N806

    class Ordered(Event):
        message_type = "orders.ordered.v1"
        line: SkuLine

    class Shipped(Event):
        message_type = "orders.shipped.v1"
        line: ParcelLine

    with pytest.raises(DefinitionError, match="both named 'Line'"):
        component_schemas(list(ContractRegistry([Ordered, Shipped])))


def test_the_example_app_derives_the_example_registry() -> None:
    """Its registry comes from what its sagas and adapters declare: the very 19 types (15 of
    the domain, the saga's 3 end events and its cancel request)."""
    app = create_app()
    assert [c.message_type for c in app.registry] == [c.message_type for c in REGISTRY]
    assert all(app.registry.get(c.message_type).model is c.model for c in REGISTRY)  # type: ignore[union-attr]
    assert len(list(app.registry)) == 19
