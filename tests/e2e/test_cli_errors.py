"""Every configuration or connection mistake is one line naming the setting and the fix,
with exit code 2, for every command that touches the service.

Each mistake is made on loopback without touching the shared services: a closed port, a
user or password they do not know, a vhost or database that does not exist, a schema of
this test's own that is not migrated.
"""

from __future__ import annotations

import socket
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import pytest

from bus_orchestrator.config import Settings
from bus_orchestrator.store.migrate import ADAPTER_MIGRATIONS, available
from tests.conftest import TestBus
from tests.e2e.processes import cli, free_port
from tests.integration.harness import migrated

pytestmark = pytest.mark.e2e

POSTGRES_START = "pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql) main start"
PUBLISH = ("publish", "orders.order_cancelled.v1", "--data", '{"order_id": "o-1"}')
SEND = (
    "send",
    "inventory.release_stock.v1",
    "--data",
    '{"order_id": "o-1", "reservation_id": "r-1"}',
    "--correlation-id",
    "o-1",
)
SHOW = ("sagas", "show", "o-1")
LIST = ("sagas", "list")
RUN = ("run",)
ADAPTERS = ("adapters",)
API = ("api",)
MIGRATE = ("migrate",)


@dataclass(frozen=True)
class Mistake:
    """A setting made wrong (``env``, which may use ``{port}``, ``{schema}``, ``{name}``)
    and the line every command in ``commands`` must answer with (same placeholders)."""

    name: str
    env: dict[str, str]
    line: str
    commands: tuple[tuple[str, ...], ...]
    migrated: bool = True
    extra_args: tuple[str, ...] = field(default=())


CLOSED = "{port}"  # a port nothing listens on: a free one, released at once

MISTAKES = (
    Mistake(
        "postgres unreachable",
        {"BUS_DATABASE_URL": f"postgresql://root@127.0.0.1:{CLOSED}/test"},
        "Postgres is not reachable at 127.0.0.1:{port} (connection refused): start it "
        f"({POSTGRES_START}) or point BUS_DATABASE_URL at one",
        (MIGRATE, LIST, SHOW),
    ),
    Mistake(
        "postgres wrong user",
        {"BUS_DATABASE_URL": "postgresql://{name}:secret@127.0.0.1:5432/test"},
        "Postgres at 127.0.0.1:5432 refused user '{name}' (role \"{name}\" does not exist): "
        "wrong user or password in BUS_DATABASE_URL",
        (MIGRATE, LIST, SHOW, RUN, ADAPTERS),
    ),
    Mistake(
        "missing database",
        {"BUS_DATABASE_URL": "postgresql://root@127.0.0.1:5432/{name}"},
        "Postgres at 127.0.0.1:5432 has no database '{name}': create it (createdb {name}) "
        "or name an existing one in BUS_DATABASE_URL",
        (MIGRATE, LIST, SHOW, RUN, ADAPTERS),
    ),
    Mistake(
        "unmigrated schema",
        {},
        "schema '{schema}' (BUS_DATABASE_SCHEMA) lacks migrations {all}: "
        "run 'bus-orchestrator migrate'",
        (LIST, SHOW, RUN),
        migrated=False,
    ),
    Mistake(
        "unmigrated schema, adapters",
        {},
        "schema '{schema}' (BUS_DATABASE_SCHEMA) lacks migrations {adapters}: "
        "run 'bus-orchestrator migrate --adapters'",
        (ADAPTERS,),
        migrated=False,
    ),
    Mistake(
        "rabbitmq unreachable",
        {"BUS_AMQP_URL": f"amqp://guest:guest@127.0.0.1:{CLOSED}/"},
        "RabbitMQ is not reachable at 127.0.0.1:{port} (connection refused): start it "
        "(rabbitmq-server -detached) or point BUS_AMQP_URL at one",
        (PUBLISH, SEND),
    ),
    Mistake(
        "rabbitmq wrong password",
        {"BUS_AMQP_URL": "amqp://guest:{name}@127.0.0.1:5672/"},
        "RabbitMQ at 127.0.0.1:5672 refused the login: wrong user or password in BUS_AMQP_URL",
        (PUBLISH, SEND, RUN, ADAPTERS),
    ),
    Mistake(
        "unknown vhost",
        {"BUS_AMQP_URL": "amqp://guest:guest@127.0.0.1:5672/{name}"},
        "RabbitMQ at 127.0.0.1:5672 refused vhost '{name}' to user 'guest': it does not exist "
        "or the user may not use it; create it (rabbitmqctl add_vhost {name}) and grant "
        "access, or name another one in BUS_AMQP_URL",
        (PUBLISH, SEND, RUN, ADAPTERS),
    ),
    Mistake(
        "malformed database URL",
        {"BUS_DATABASE_URL": "postgresql://root:hunter2@127.0.0.1:notaport/test"},
        "BUS_DATABASE_URL='postgresql://root:***@127.0.0.1:notaport/test' is not valid (port "
        "could not be cast to integer value as 'notaport'; expected a URL like "
        "postgresql://user:password@host:5432/db): fix or unset it",
        (MIGRATE, LIST, RUN),
    ),
    Mistake(
        "not an AMQP URL",
        {"BUS_AMQP_URL": "http://guest:hunter2@127.0.0.1:5672/"},
        "BUS_AMQP_URL='http://guest:***@127.0.0.1:5672/' is not valid (expected a URL like "
        "amqp://user:password@host:5672/vhost): fix or unset it",
        (PUBLISH, SEND, RUN),
    ),
    Mistake(
        "invalid log format",
        {"BUS_LOG_FORMAT": "xml"},
        "BUS_LOG_FORMAT='xml' is not valid (input should be 'text' or 'json'): fix or unset it",
        (MIGRATE, LIST, SHOW, PUBLISH, SEND, RUN, ADAPTERS, API),
    ),
    Mistake(
        "invalid setting",
        {"BUS_PREFETCH": "0"},
        "BUS_PREFETCH='0' is not valid (input should be greater than or equal to 1): "
        "fix or unset it",
        (MIGRATE, LIST, RUN),
    ),
    Mistake(
        "invalid log level, option",
        {},
        "log level 'loud' (--log-level or BUS_LOG_LEVEL) is not valid: "
        "use debug, info, warning or error",
        (RUN, ADAPTERS, API),
        extra_args=("--log-level", "loud"),
    ),
    Mistake(
        "invalid log level, variable",
        {"BUS_LOG_LEVEL": "loud"},
        "log level 'loud' (--log-level or BUS_LOG_LEVEL) is not valid: "
        "use debug, info, warning or error",
        (RUN, ADAPTERS),
    ),
    Mistake(
        "metrics port in use",
        {"BUS_METRICS_PORT": "{busy}", "BUS_METRICS_HOST": "127.0.0.1"},
        "BUS_METRICS_PORT={busy} cannot be served on 127.0.0.1 (Address already in use): "
        "pick a free port, or unset BUS_METRICS_PORT",
        (RUN, ADAPTERS),
    ),
    Mistake(
        "API port in use",
        {"BUS_API_PORT": "{busy}", "BUS_API_HOST": "127.0.0.1", "BUS_API_TOKENS": "{name}=reader"},
        "cannot serve the HTTP API on 127.0.0.1:{busy} (Address already in use): "
        "set BUS_API_HOST / BUS_API_PORT to a free address",
        (API,),
    ),
)


def cases() -> Iterator[object]:
    for mistake in MISTAKES:
        for command in mistake.commands:
            yield pytest.param(mistake, command, id=f"{mistake.name}: {' '.join(command[:2])}")


@pytest.fixture
def busy_port() -> Iterator[int]:
    """A port this test listens on, so that nothing else can serve there."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        yield int(listener.getsockname()[1])


@pytest.mark.parametrize(("mistake", "command"), list(cases()))
async def test_each_mistake_is_one_line_naming_the_setting_and_the_fix(
    settings: Settings,
    db_schema: str,
    bus: TestBus,
    busy_port: int,
    unique_name: str,
    mistake: Mistake,
    command: tuple[str, ...],
) -> None:
    if mistake.migrated:
        await migrated(settings)
    values = {"port": str(free_port()), "schema": db_schema, "name": unique_name}
    values["busy"] = str(busy_port)
    values["all"] = str([version for version, _ in available()])
    values["adapters"] = str([version for version, _ in available(ADAPTER_MIGRATIONS)])
    fill: Callable[[str], str] = lambda text: text.format(**values)  # noqa: E731
    env = {key: fill(value) for key, value in mistake.env.items()}

    code, out, err = await cli(settings, *command, *mistake.extra_args, **env)

    lines = [line for line in err.splitlines() if line.strip()]
    assert (code, lines) == (2, [fill(mistake.line)]), err
    assert out == ""
