"""A three-node RabbitMQ cluster on this machine, of the fault suite's own.

Nodes ``bus-fault-{a,b,c}@localhost`` on AMQP ports 5681-5683 (distribution ports
25681-25683), with their data, logs and config under a directory of the test session;
``b`` and ``c`` join ``a``. The directory must be one the ``rabbitmq`` user can enter
(pytest's basetemp is not). Run as root (``rabbitmq-server`` switches to the ``rabbitmq``
user, whose Erlang cookie the nodes share). A node is killed with SIGKILL to its Erlang VM
and started again by name.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from tests.faults.services import RABBITMQ_SERVER, RABBITMQCTL, run, wait_for_port

NODES = ("a", "b", "c")
AMQP_PORT = {n: 5681 + i for i, n in enumerate(NODES)}
DIST_PORT = {n: 25681 + i for i, n in enumerate(NODES)}


def node_name(node: str) -> str:
    return f"bus-fault-{node}@localhost"


@dataclass
class RabbitCluster:
    base: Path

    def url(self, node: str) -> str:
        return f"amqp://guest:guest@127.0.0.1:{AMQP_PORT[node]}/"

    def ctl(self, node: str, *args: str, timeout: float = 120) -> str:
        return run(RABBITMQCTL, "-n", node_name(node), *args, timeout=timeout)

    def _env(self, node: str) -> dict[str, str]:
        home = self.base / node
        return {
            **os.environ,
            "RABBITMQ_NODENAME": node_name(node),
            "RABBITMQ_NODE_PORT": str(AMQP_PORT[node]),
            "RABBITMQ_DIST_PORT": str(DIST_PORT[node]),
            "RABBITMQ_MNESIA_BASE": str(home / "mnesia"),
            "RABBITMQ_LOG_BASE": str(home / "log"),
            "RABBITMQ_PID_FILE": str(home / "pid"),
            "RABBITMQ_CONFIG_FILE": str(home / "rabbitmq.conf"),
        }

    def start_node(self, node: str) -> None:
        """Boot a node (detached) and wait until it accepts AMQP connections."""
        home = self.base / node
        for sub in ("mnesia", "log"):
            (home / sub).mkdir(parents=True, exist_ok=True)
        (home / "rabbitmq.conf").write_text(
            f"listeners.tcp.local = 127.0.0.1:{AMQP_PORT[node]}\nloopback_users = none\n"
        )
        run("/bin/chown", "-R", "rabbitmq:rabbitmq", str(self.base))
        subprocess.run(  # noqa: S603 - a fixed command
            [RABBITMQ_SERVER or "rabbitmq-server", "-detached"],
            env=self._env(node),
            check=True,
            timeout=60,
        )
        deadline = time.monotonic() + 120
        while True:  # -detached returns before the node has registered with epmd
            try:
                self.ctl(node, "await_startup", "--timeout", "60", timeout=90)
                break
            except subprocess.CalledProcessError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.5)
        wait_for_port("127.0.0.1", AMQP_PORT[node])

    def start(self) -> None:
        """Boot the three nodes and join ``b`` and ``c`` to ``a``; stops first what an
        earlier run may have left running under these names."""
        for node in NODES:
            with socket.socket() as probe:
                if probe.connect_ex(("127.0.0.1", AMQP_PORT[node])) == 0:
                    self.ctl(node, "stop", timeout=60)
        for node in NODES:
            self.start_node(node)
        for node in NODES[1:]:
            self.ctl(node, "stop_app")
            self.ctl(node, "join_cluster", node_name(NODES[0]))
            self.ctl(node, "start_app")
        running = self.ctl(NODES[0], "cluster_status")
        missing = [n for n in NODES if node_name(n) not in running]
        assert not missing, f"nodes {missing} did not join: {running}"

    def pid(self, node: str) -> int:
        return int((self.base / node / "pid").read_text().split()[0])

    def kill(self, node: str) -> None:
        """SIGKILL to the node's Erlang VM."""
        os.kill(self.pid(node), signal.SIGKILL)

    def leader(self, queue: str) -> str:
        """The node (``a``, ``b`` or ``c``) leading the quorum queue ``queue``."""
        listing = self.ctl(NODES[0], "list_queues", "name", "leader", "--no-table-headers", "-q")
        for line in listing.splitlines():
            fields = line.split()
            if len(fields) == 2 and fields[0] == queue:
                for node in NODES:
                    if fields[1] == node_name(node):
                        return node
        raise AssertionError(f"no leader for {queue} in {listing!r}")

    def stop(self) -> None:
        """Stop every node (killed if it will not stop)."""
        for node in NODES:
            try:
                self.ctl(node, "stop", timeout=60)
            except (subprocess.CalledProcessError, subprocess.TimeoutExpired):
                try:
                    self.kill(node)
                except (OSError, ValueError):
                    pass
