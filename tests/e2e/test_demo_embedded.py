"""``demo --embedded`` and the demo's fallback, as processes: no broker, no database needed."""

from __future__ import annotations

from collections.abc import Sequence

from bus_orchestrator.app import App, DemoCase
from bus_orchestrator.config import Settings
from bus_orchestrator.core import SagaStatus
from example import create_app
from tests.conftest import TestBus
from tests.e2e.processes import cli, free_port
from tests.integration.harness import order


def closed() -> dict[str, str]:
    """URLs of ports nothing listens on."""
    return {
        "BUS_AMQP_URL": f"amqp://guest:guest@127.0.0.1:{free_port()}/",
        "BUS_DATABASE_URL": f"postgresql://root@127.0.0.1:{free_port()}/test",
    }


async def test_embedded_runs_the_demo_with_no_service_reachable(settings: Settings) -> None:
    code, out, err = await cli(settings, "demo", "--embedded", "--orders", "8", **closed())
    assert code == 0, out + err
    assert "all 8 sagas ended as expected" in out
    assert "completed x2" in out and "compensated x2" in out
    assert err.strip() == ""  # nothing was tried: not even a connection


async def test_plain_demo_falls_back_when_the_broker_is_unreachable(settings: Settings) -> None:
    port = closed()["BUS_AMQP_URL"]
    code, out, err = await cli(settings, "demo", "--orders", "4", BUS_AMQP_URL=port)
    assert code == 0, out + err
    [line] = err.strip().splitlines()
    assert line.startswith("RabbitMQ at 127.0.0.1:") and "connection refused" in line
    assert line.endswith("running the demo embedded, in memory")
    assert "all 4 sagas ended as expected" in out


async def test_plain_demo_falls_back_when_postgres_is_unreachable(settings: Settings) -> None:
    url = closed()["BUS_DATABASE_URL"]
    code, out, err = await cli(settings, "demo", "--orders", "4", BUS_DATABASE_URL=url)
    assert code == 0, out + err
    [line] = err.strip().splitlines()
    assert line.startswith("Postgres at 127.0.0.1:") and "embedded" in line


def mislabelled(count: int) -> Sequence[DemoCase]:
    """An out-of-stock order said to complete: the demo must report it and fail."""
    return [
        DemoCase("ok", order("m-1"), "m-1", SagaStatus.COMPLETED),
        DemoCase("mislabelled", order("m-2", sku="OOS-1"), "m-2", SagaStatus.COMPLETED),
    ]


def mislabelled_app() -> App:
    example = create_app()
    return App("mislabelled", sagas=example.sagas, adapters=example.adapters, demo=mislabelled)


async def test_embedded_fails_when_a_saga_ends_otherwise(settings: Settings) -> None:
    code, out, err = await cli(
        settings,
        "demo",
        "--embedded",
        "--orders",
        "4",
        "--app",
        "tests.e2e.test_demo_embedded:mislabelled_app",
        **closed(),
    )
    assert code == 1, out + err
    assert "1 sagas did not end as expected" in out
    assert "m-2: compensated" in out and "out of stock" in out


async def test_plain_demo_uses_the_services_when_they_answer(
    settings: Settings, db_schema: str, bus: TestBus
) -> None:
    code, out, err = await cli(settings, "demo", "--orders", "4", "--timeout", "60")
    assert code == 0, out + err
    assert "embedded" not in out + err
    assert f"starting 4 sagas on {settings.exchange_prefix}bus.events" in out
    assert "all 4 sagas ended as expected" in out
