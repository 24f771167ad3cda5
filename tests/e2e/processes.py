"""Running the ``bus-orchestrator`` command as separate processes, as a user would."""

from __future__ import annotations

import asyncio
import os
import socket
import sys
from pathlib import Path

import aio_pika

from bus_orchestrator.config import Settings

CLI = [sys.executable, "-m", "bus_orchestrator"]
WORK_QUEUES = tuple(
    f"order-to-cash.{name}"  # the example app's (BUS_APP below), after the prefix and "bus."
    for name in ("coordinator", "adapter.inventory", "adapter.payments", "adapter.shipping")
)


def env_for(settings: Settings, **extra: str) -> dict[str, str]:
    """The environment of a process using ``settings``; OTEL_* and BUS_* only as given."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("BUS_", "OTEL_"))}
    env.update(
        BUS_AMQP_URL=settings.amqp_url,
        BUS_DATABASE_URL=settings.database_url,
        BUS_DATABASE_SCHEMA=settings.database_schema,
        BUS_EXCHANGE_PREFIX=settings.exchange_prefix,
        BUS_TIMER_POLL_SECONDS="0.1",
        BUS_APP="example:create_app",
    )
    env.update(extra)
    return env


async def cli(
    settings: Settings, *args: str, cwd: Path | None = None, **extra: str
) -> tuple[int, str, str]:
    """Run one command to its end (in ``cwd``); returns exit code, stdout and stderr."""
    process = await asyncio.create_subprocess_exec(
        *CLI,
        *args,
        cwd=cwd,
        env=env_for(settings, **extra),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(process.communicate(), 60)
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


async def consumers(connection: aio_pika.abc.AbstractConnection, queue: str) -> int:
    channel = await connection.channel()
    try:
        declared = await channel.declare_queue(queue, passive=True)
        return declared.declaration_result.consumer_count or 0
    except aio_pika.exceptions.ChannelClosed:
        return 0
    finally:
        if not channel.is_closed:
            await channel.close()


async def wait_for_consumers(
    connection: aio_pika.abc.AbstractConnection, settings: Settings, queues: tuple[str, ...]
) -> None:
    prefix = settings.exchange_prefix
    for _ in range(150):
        counts = [await consumers(connection, f"{prefix}bus.{q}") for q in queues]
        if all(counts):
            return
        await asyncio.sleep(0.2)
    raise AssertionError(f"no consumers on some of {queues}: {counts}")


class Processes:
    """Long-running commands started by a test; killed if the test leaves them running."""

    def __init__(self, log_dir: Path) -> None:
        self.running: list[asyncio.subprocess.Process] = []
        self.log_dir = log_dir
        self.logs: list[Path] = []

    async def start(
        self, settings: Settings, *args: str, cwd: Path | None = None, **extra: str
    ) -> asyncio.subprocess.Process:
        log = self.log_dir / f"{'-'.join(args)}-{len(self.logs)}.log"
        self.logs.append(log)
        with log.open("wb") as stderr:
            process = await asyncio.create_subprocess_exec(
                *CLI,
                *args,
                cwd=cwd,
                env=env_for(settings, **extra),
                stdout=asyncio.subprocess.DEVNULL,
                stderr=stderr,
            )
        self.running.append(process)
        return process

    async def stop(self, process: asyncio.subprocess.Process) -> int:
        """SIGTERM, and the exit code once it has shut down cleanly."""
        process.terminate()
        return await asyncio.wait_for(process.wait(), 30)

    def log_lines(self) -> list[str]:
        return [line for log in self.logs for line in log.read_text().splitlines()]

    async def kill_all(self) -> None:
        for process in self.running:
            if process.returncode is None:
                process.kill()
                await process.wait()
