"""The local services the fault tests break and mend, named by the test URLs.

The faults act on whatever local RabbitMQ and Postgres ``BUS_TEST_AMQP_URL`` and
``BUS_TEST_DATABASE_URL`` name (the local defaults without them):

- iptables rules on the ports of those URLs;
- ``rabbitmqctl -n $BUS_TEST_RABBITMQ_NODE`` (default: rabbitmqctl's own default node) to
  stop and start the broker;
- ``pg_ctlcluster <version> $BUS_TEST_PG_CLUSTER`` (default ``main``; the version from
  ``/etc/postgresql``) to restart Postgres, and its postmaster's pid for a kill -9.

Before acting, ``check()`` confirms that the node and the cluster named really listen on
the ports of the URLs, so a developer who points the URLs at private instances cannot
restart or firewall the shared ones by a forgotten variable.

Everything here is synchronous (``subprocess``), usable outside the event loop, in
teardowns and ``finally`` blocks.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

IPTABLES = shutil.which("iptables")
RABBITMQCTL = shutil.which("rabbitmqctl")
RABBITMQ_SERVER = shutil.which("rabbitmq-server")
PG_CTLCLUSTER = shutil.which("pg_ctlcluster")
PG_LSCLUSTERS = shutil.which("pg_lsclusters")

RULE_TAG = "bus-orchestrator-fault"
"""Comment on every iptables rule the fault tests insert, so teardown finds exactly those."""

LOCAL_HOSTS = ("127.0.0.1", "localhost", "::1")


def run(tool: str | None, *args: str, timeout: float = 120) -> str:
    """Run an installed tool and return its output; fails on an error."""
    assert tool is not None, "the tool is not installed"
    done = subprocess.run(  # noqa: S603 - the tests' own fixed commands
        [tool, *args], check=True, capture_output=True, text=True, timeout=timeout
    )
    return done.stdout


def missing_prerequisites() -> list[str]:
    """What the fault suite needs and this machine lacks, in words."""
    missing = []
    if os.geteuid() != 0:
        missing.append("root (iptables rules, rabbitmqctl, pg_ctlcluster)")
    for name, path in (
        ("iptables", IPTABLES),
        ("rabbitmqctl", RABBITMQCTL),
        ("rabbitmq-server", RABBITMQ_SERVER),
        ("pg_ctlcluster", PG_CTLCLUSTER),
        ("pg_lsclusters", PG_LSCLUSTERS),
    ):
        if path is None:
            missing.append(f"{name} is not installed")
    return missing


def wait_for_port(host: str, port: int, within: float = 60.0) -> None:
    deadline = time.monotonic() + within
    while True:
        try:
            socket.create_connection((host, port), timeout=2).close()
            return
        except OSError:
            if time.monotonic() > deadline:
                raise AssertionError(f"{host}:{port} does not accept connections") from None
            time.sleep(0.2)


def live_client_ports(server_port: int) -> set[int]:
    """Local ports of this host's established TCP connections to 127.0.0.1:``server_port``."""
    ports = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            local, remote, state = line.split()[1:4]
            address, port = remote.rsplit(":", 1)
            if state == "01" and address.endswith("0100007F") and int(port, 16) == server_port:
                ports.add(int(local.rsplit(":", 1)[1], 16))
    return ports


# -- iptables ------------------------------------------------------------------------------


def fault_rules() -> list[str]:
    """The iptables rules the fault tests inserted and did not remove (``iptables -S``)."""
    listing = run(IPTABLES, "-S").splitlines()
    return [line for line in listing if line.startswith("-A ") and RULE_TAG in line]


def remove_fault_rules() -> None:
    for line in fault_rules():
        run(IPTABLES, "-D", *shlex.split(line)[1:])


def cut_rule(port: int, *, silent: bool) -> list[str]:
    """An INPUT rule on packets to ``port``: dropped (``silent``) or answered with a reset."""
    return [
        "INPUT", "-p", "tcp", "--dport", str(port),
        "-m", "comment", "--comment", RULE_TAG,
        *(["-j", "DROP"] if silent else ["-j", "REJECT", "--reject-with", "tcp-reset"]),
    ]  # fmt: skip


# -- the services named by the URLs --------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Broker:
    """The RabbitMQ node behind the AMQP URL."""

    host: str
    port: int
    node: str | None
    """``rabbitmqctl -n`` argument; ``None``: rabbitmqctl's default node."""

    @classmethod
    def from_url(cls, url: str) -> Broker:
        parts = urlsplit(url)
        return cls(
            parts.hostname or "127.0.0.1",
            parts.port or 5672,
            os.environ.get("BUS_TEST_RABBITMQ_NODE") or None,
        )

    def ctl(self, *args: str, timeout: float = 120) -> str:
        node = ["-n", self.node] if self.node else []
        return run(RABBITMQCTL, *node, *args, timeout=timeout)

    def check(self) -> str | None:
        """Why the faults must not act on this node, or ``None`` when they may."""
        if self.host not in LOCAL_HOSTS:
            return f"the faults act on local services; RabbitMQ at {self.host} is not"
        try:
            status = self.ctl("status", timeout=60)
        except subprocess.CalledProcessError as exc:
            return f"rabbitmqctl cannot reach node {self.node or '(default)'}: {exc.stderr}"
        ports = {int(p) for p in re.findall(r"port: (\d+), protocol: amqp", status)}
        if self.port not in ports:
            return (
                f"RabbitMQ node {self.node or '(default)'} listens on {sorted(ports)}, not on "
                f"{self.port}: set BUS_TEST_RABBITMQ_NODE to the node of BUS_TEST_AMQP_URL"
            )
        return None

    def start_app(self) -> None:
        """Start the broker's app (a no-op when it runs); boot the node if it is down."""
        try:
            self.ctl("start_app")
        except subprocess.CalledProcessError:
            env = dict(os.environ)
            if self.node:
                env["RABBITMQ_NODENAME"] = self.node
            subprocess.run(  # noqa: S603 - a fixed command
                [RABBITMQ_SERVER or "rabbitmq-server", "-detached"],
                check=True,
                env=env,
                timeout=60,
            )
            self.ctl("await_startup", "--timeout", "120", timeout=150)
            self.ctl("start_app")

    def stop_app(self) -> None:
        self.ctl("stop_app")

    def mend(self) -> None:
        self.start_app()
        wait_for_port(self.host, self.port)


@dataclass(frozen=True, slots=True)
class PostgresCluster:
    """The Postgres cluster behind the database URL (Debian's ``pg_ctlcluster`` naming)."""

    host: str
    port: int
    version: str
    cluster: str

    @classmethod
    def from_url(cls, url: str) -> PostgresCluster:
        parts = urlsplit(url)
        cluster = os.environ.get("BUS_TEST_PG_CLUSTER") or "main"
        versions = sorted(p.name for p in Path("/etc/postgresql").glob("*") if p.is_dir())
        holding = [v for v in versions if Path("/etc/postgresql", v, cluster).is_dir()]
        version = (holding or versions or ["15"])[-1]
        return cls(parts.hostname or "127.0.0.1", parts.port or 5432, version, cluster)

    def _listing(self) -> list[str] | None:
        """This cluster's ``pg_lsclusters`` line: version, cluster, port, status, owner, ..."""
        for line in run(PG_LSCLUSTERS, "-h").splitlines():
            fields = line.split()
            if fields[:2] == [self.version, self.cluster]:
                return fields
        return None

    def check(self) -> str | None:
        if self.host not in LOCAL_HOSTS:
            return f"the faults act on local services; Postgres at {self.host} is not"
        fields = self._listing()
        if fields is None:
            return f"no Postgres cluster {self.version}/{self.cluster} (BUS_TEST_PG_CLUSTER)"
        if int(fields[2]) != self.port:
            return (
                f"Postgres cluster {self.version}/{self.cluster} is on port {fields[2]}, not "
                f"{self.port}: set BUS_TEST_PG_CLUSTER to the cluster of BUS_TEST_DATABASE_URL"
            )
        return None

    def ctl(self, action: str, *args: str) -> str:
        return run(
            PG_CTLCLUSTER, "--skip-systemctl-redirect", self.version, self.cluster, action, *args
        )

    def postmaster_pid(self) -> int:
        fields = self._listing()
        assert fields is not None
        return int(Path(fields[5], "postmaster.pid").read_text().split()[0])

    def kill_postmaster(self) -> None:
        """kill -9 of the postmaster: its backends notice and exit, as after a crash."""
        os.kill(self.postmaster_pid(), signal.SIGKILL)

    def start(self, attempts: int = 30) -> None:
        """Start the cluster (a no-op when it runs); retried: right after a kill -9 the
        backends of the dead postmaster may still hold its shared memory for a moment."""
        for attempt in range(attempts):
            fields = self._listing()
            if fields is not None and fields[3] == "online":
                break
            try:
                self.ctl("start")
                break
            except subprocess.CalledProcessError:
                if attempt == attempts - 1:
                    raise
                time.sleep(0.5)
        wait_for_port(self.host, self.port)

    def restart(self) -> None:
        self.ctl("restart")
        wait_for_port(self.host, self.port)

    def mend(self) -> None:
        self.start()


@dataclass(frozen=True, slots=True)
class LocalServices:
    broker: Broker
    postgres: PostgresCluster

    @classmethod
    def from_urls(cls, amqp_url: str, database_url: str) -> LocalServices:
        return cls(Broker.from_url(amqp_url), PostgresCluster.from_url(database_url))

    def check(self) -> str | None:
        """Why the faults must not act on these services, or ``None`` when they may."""
        return self.broker.check() or self.postgres.check()

    def mend(self) -> None:
        """Remove the fault rules and start whatever is down."""
        remove_fault_rules()
        self.broker.mend()
        self.postgres.mend()
