"""Where the test services are: the environment first, then testcontainers, then loopback.

``BUS_TEST_AMQP_URL`` and ``BUS_TEST_DATABASE_URL`` win. Without them, a container is
started when a Docker engine answers; otherwise the local services are used.
"""

from __future__ import annotations

import contextlib
import os
import socket
import warnings
from collections.abc import Iterator
from typing import Any

LOCAL_AMQP_URL = "amqp://guest:guest@127.0.0.1:5672/"
LOCAL_DATABASE_URL = "postgresql://root@127.0.0.1:5432/test"


def _docker_engine_answers() -> bool:
    """Ask the engine's socket directly: the docker client leaks a socket when it fails."""
    host = os.environ.get("DOCKER_HOST", "unix:///var/run/docker.sock")
    if not host.startswith("unix://"):
        return True  # a remote engine: let testcontainers try it
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
        probe.settimeout(2)
        try:
            probe.connect(host.removeprefix("unix://"))
        except OSError:
            return False
    return True


def _docker_container(kind: str) -> Any | None:
    """Start a container when a Docker engine is there; ``None`` when it is not."""
    if not _docker_engine_answers():
        return None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            from docker.errors import DockerException

            if kind == "rabbitmq":
                from testcontainers.community.rabbitmq import RabbitMqContainer

                container: Any = RabbitMqContainer("rabbitmq:3.13-management")
            else:
                from testcontainers.community.postgres import PostgresContainer

                container = PostgresContainer("postgres:15", driver=None)
        except (ImportError, DockerException):
            return None
        try:
            container.start()
        except DockerException:
            return None
    return container


@contextlib.contextmanager
def amqp_url() -> Iterator[str]:
    if url := os.environ.get("BUS_TEST_AMQP_URL"):
        yield url
        return
    container = _docker_container("rabbitmq")
    if container is None:
        yield LOCAL_AMQP_URL
        return
    try:
        host, port = container.get_container_host_ip(), container.get_exposed_port(5672)
        yield f"amqp://guest:guest@{host}:{port}/"
    finally:
        container.stop()


@contextlib.contextmanager
def database_url() -> Iterator[str]:
    if url := os.environ.get("BUS_TEST_DATABASE_URL"):
        yield url
        return
    container = _docker_container("postgres")
    if container is None:
        yield LOCAL_DATABASE_URL
        return
    try:
        yield container.get_connection_url()
    finally:
        container.stop()
