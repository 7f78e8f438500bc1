"""Hosts on one machine: network namespaces joined by veth pairs (iproute2 only), for tests of emailkit spread
over several hosts and of network partitions between them.

One `services` namespace holds two bridges, the "switches" of two private /24 networks:

* the backend network (PostgreSQL, Redis): the services host is .1, worker host n is .(10 + n);
* the mail network (the SMTP peer, standing for the outside world): the same numbering.

Each worker namespace has one link to each switch. `cut` takes the worker's backend switch port down, as if its
cable were pulled at the switch: the worker's own interface stays configured and its packets are silently lost
(no error tells it anything), while its mail link keeps working. `heal` plugs it back in.

Namespace names carry a random suffix, so a crashed run leaves nothing a later run trips on; `remove` deletes
them, and with them every interface and every address made here (nothing is changed in the machine's own
namespace).
"""

from __future__ import annotations

import os
import secrets
import shutil
import subprocess
from dataclasses import dataclass, field

BACKEND = "10.210.1"
MAIL = "10.210.2"


class NetworkUnavailable(AssertionError):
    """The machine cannot build the namespaces (not root, no iproute2, no veth or bridge support)."""


def missing_requirements() -> list[str]:
    """What this machine lacks to build hosts with a PostgreSQL and a Redis of their own (empty: nothing)."""
    from tests.support.pg_cluster import server_bin

    missing = []
    if os.geteuid() != 0:
        missing.append("root (network namespaces are made with `ip netns add`)")
    if shutil.which("ip") is None:
        missing.append("iproute2 (`ip`)")
    if server_bin() is None:
        missing.append("PostgreSQL's server programs (initdb, pg_ctl; or set EMAILKIT_TEST_PG_BIN)")
    if shutil.which("redis-server") is None:
        missing.append("redis-server")
    return missing


def ip(*args: str) -> str:
    done = subprocess.run(["ip", *args], capture_output=True, text=True, timeout=30, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"ip {' '.join(args)} failed: {done.stderr.strip()}")
    return done.stdout


@dataclass
class Hosts:
    """A services host and `workers` worker hosts, made by `build`, deleted by `remove`."""

    workers: int
    prefix: str = field(default_factory=lambda: f"ek{secrets.token_hex(3)}")
    made: list[str] = field(default_factory=list, init=False)

    @property
    def services(self) -> str:
        return f"{self.prefix}-svc"

    def worker(self, n: int) -> str:
        return f"{self.prefix}-w{n}"

    # Addresses, as the hosts see each other.
    services_ip = f"{BACKEND}.1"
    mail_ip = f"{MAIL}.1"

    @staticmethod
    def worker_ip(n: int) -> str:
        return f"{BACKEND}.{10 + n}"

    @staticmethod
    def worker_mail_ip(n: int) -> str:
        return f"{MAIL}.{10 + n}"

    def exec_in(self, namespace: str) -> list[str]:
        """The command prefix that runs a program on that host."""
        return ["ip", "netns", "exec", namespace]

    def build(self) -> None:
        if shutil.which("ip") is None:
            raise NetworkUnavailable("iproute2's `ip` is not installed (apt-get install iproute2)")
        try:
            self._add(self.services)
        except RuntimeError as exc:
            raise NetworkUnavailable(
                f"cannot create a network namespace (root and iproute2 are needed): {exc}"
            ) from exc
        svc = self.services
        ip("-n", svc, "link", "set", "lo", "up")
        for bridge, net in (("back", BACKEND), ("mail", MAIL)):
            ip("-n", svc, "link", "add", bridge, "type", "bridge")
            ip("-n", svc, "addr", "add", f"{net}.1/24", "dev", bridge)
            ip("-n", svc, "link", "set", bridge, "up")
        for n in range(1, self.workers + 1):
            ns = self.worker(n)
            self._add(ns)
            ip("-n", ns, "link", "set", "lo", "up")
            for bridge, net in (("back", BACKEND), ("mail", MAIL)):
                port = f"{bridge}{n}"
                # Made inside the services namespace, its other end inside the worker's: nothing in the
                # machine's own namespace, and no name that another run could clash with.
                ip("-n", svc, "link", "add", port, "type", "veth", "peer", "name", bridge, "netns", ns)
                ip("-n", svc, "link", "set", port, "master", bridge, "up")
                ip("-n", ns, "addr", "add", f"{net}.{10 + n}/24", "dev", bridge)
                ip("-n", ns, "link", "set", bridge, "up")

    def _add(self, namespace: str) -> None:
        ip("netns", "add", namespace)
        self.made.append(namespace)

    def cut(self, n: int) -> None:
        """Unplug worker host n from the backend network (PostgreSQL and Redis); its mail link stays up."""
        ip("-n", self.services, "link", "set", f"back{n}", "down")

    def heal(self, n: int) -> None:
        ip("-n", self.services, "link", "set", f"back{n}", "up")

    def remove(self) -> None:
        """Delete every namespace made (their interfaces go with them); the processes in them must be gone."""
        errors = []
        for namespace in reversed(self.made):
            try:
                ip("netns", "delete", namespace)
            except RuntimeError as exc:
                errors.append(str(exc))
        self.made.clear()
        if errors:
            raise RuntimeError("; ".join(errors))
