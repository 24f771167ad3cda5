"""Serving the HTTP API with uvicorn, alone (``bus-orchestrator api``) or beside the
coordinator in its process and event loop (``bus-orchestrator run --api``).

The listening socket is bound first, before anything else starts, so a port in use is
one line and exit 2 rather than a trace from inside uvicorn.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Iterator
from contextlib import contextmanager

import uvicorn
from fastapi import FastAPI

from bus_orchestrator.config import Settings


class ApiAddressError(Exception):
    """The API's address cannot be bound; ``str()`` is the one line naming the settings."""


def bind(settings: Settings) -> socket.socket:
    """A socket bound to ``BUS_API_HOST:BUS_API_PORT``, for ``ApiServer.serve``.

    Raises ``ApiAddressError`` (port in use, address not of this host, ...)."""
    family = socket.AF_INET6 if ":" in settings.api_host else socket.AF_INET
    # IPPROTO_TCP named, not 0: asyncio sets TCP_NODELAY only on sockets whose proto says
    # TCP, and without it each response (headers, then body: two writes) waits ~40 ms for
    # the client's delayed ACK (Nagle).
    listener = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    # Lets a restart bind while the last run's connections linger in TIME_WAIT; a socket
    # still listening there keeps refusing the bind.
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        listener.bind((settings.api_host, settings.api_port))
    except OSError as exc:
        listener.close()
        raise ApiAddressError(
            f"cannot serve the HTTP API on {settings.api_host}:{settings.api_port} "
            f"({exc.strerror}): set BUS_API_HOST / BUS_API_PORT to a free address"
        ) from exc
    return listener


class ApiServer(uvicorn.Server):
    """uvicorn's server without its own signal handling: SIGTERM and SIGINT stop it as
    they stop the rest of the process (exit 0), not by raising the signal again."""

    def __init__(self, api: FastAPI) -> None:
        super().__init__(uvicorn.Config(api, log_config=None, lifespan="on", server_header=False))

    @contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield

    async def serve_until(self, listener: socket.socket, stop: asyncio.Event) -> None:
        """Serve on ``listener`` until ``stop`` is set, then shut down gracefully (requests
        in flight finish). A server that ends by itself (its start-up failed) sets
        ``stop``, so the rest of the process stops with it."""
        serving = asyncio.create_task(self.serve(sockets=[listener]))
        stopping = asyncio.create_task(stop.wait())
        try:
            await asyncio.wait((serving, stopping), return_when=asyncio.FIRST_COMPLETED)
            self.should_exit = True
            await serving
        finally:
            stopping.cancel()
            stop.set()
