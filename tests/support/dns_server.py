"""A real DNS server for the sending domain tests: dnsmasq (Debian's dnsmasq-base, the binary alone) on a free
loopback port, answering from a throw-away configuration the test writes, and nothing else (no upstream, no
/etc/hosts). Names under the zones it is given that it has no record for answer NXDOMAIN, as a real
authoritative server's would.

Also a "black hole": a UDP port that receives queries and never answers, to make lookups time out.
"""

from __future__ import annotations

import asyncio
import getpass
import shutil
import socket
import time
from collections.abc import AsyncIterator, Iterator, Sequence
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import dns.asyncresolver
import dns.exception
import dns.nameserver
import dns.resolver
import pytest

# The longest string one TXT record string may hold (RFC 1035 3.3.14); longer values are split.
TXT_CHUNK = 255


@dataclass
class Zone:
    """What the server answers: TXT records (several per name allowed), CNAMEs, and A records of targets."""

    local: Sequence[str]
    txt: list[tuple[str, str]] = field(default_factory=list)
    cname: dict[str, str] = field(default_factory=dict)
    hosts: dict[str, str] = field(default_factory=dict)

    def config(self, port: int) -> str:
        lines = [
            f"port={port}",
            "listen-address=127.0.0.1",
            "bind-interfaces",
            "no-resolv",
            "no-hosts",
            f"user={getpass.getuser()}",
        ]
        lines += [f"local=/{name}/" for name in self.local]
        for name, value in self.txt:
            chunks = [value[i : i + TXT_CHUNK] for i in range(0, len(value), TXT_CHUNK)] or [""]
            lines.append(f"txt-record={name}," + ",".join(f'"{c}"' for c in chunks))
        lines += [f"host-record={name},{address}" for name, address in self.hosts.items()]
        lines += [f"cname={name},{target}" for name, target in self.cname.items()]
        return "\n".join(lines) + "\n"


def dnsmasq_binary() -> str:
    found = shutil.which("dnsmasq") or ("/usr/sbin/dnsmasq" if Path("/usr/sbin/dnsmasq").exists() else None)
    if found is None:
        pytest.fail("dnsmasq is not installed: apt-get install dnsmasq-base (.ci/run installs it)")
    return found


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
        udp.bind(("127.0.0.1", 0))
        port: int = udp.getsockname()[1]
    return port


async def _answers(port: int, probe: str) -> bool:
    resolver = dns.asyncresolver.Resolver(configure=False)
    resolver.nameservers = [dns.nameserver.Do53Nameserver("127.0.0.1", port)]
    resolver.lifetime = 0.5
    try:
        await resolver.resolve(probe, "TXT")
    except (dns.resolver.NXDOMAIN, dns.resolver.NoAnswer):
        return True
    except dns.exception.DNSException:
        return False
    return True


@asynccontextmanager
async def dns_server(zone: Zone, workdir: Path) -> AsyncIterator[int]:
    """dnsmasq serving `zone` on 127.0.0.1; yields its port once it answers."""
    binary = dnsmasq_binary()
    probe = f"probe.{zone.local[0]}"
    for _ in range(5):
        port = _free_port()
        conf = workdir / f"dnsmasq-{port}.conf"
        conf.write_text(zone.config(port))
        process = await asyncio.create_subprocess_exec(
            binary,
            "--keep-in-foreground",
            f"--conf-file={conf}",
            "--pid-file=",
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.PIPE,
        )
        try:
            deadline = time.monotonic() + 10
            while process.returncode is None and time.monotonic() < deadline:
                if await _answers(port, probe):
                    break
            if process.returncode is not None:
                assert process.stderr is not None
                error = (await process.stderr.read()).decode()
                if "in use" in error:
                    continue  # another process took the port in between: try another
                pytest.fail(f"dnsmasq did not start: {error}")
            if not await _answers(port, probe):
                pytest.fail("dnsmasq started but does not answer")
            yield port
            return
        finally:
            if process.returncode is None:
                process.terminate()
                await process.wait()
    pytest.fail("no free port for dnsmasq after 5 tries")


@contextmanager
def black_hole() -> Iterator[int]:
    """A UDP port that swallows queries: lookups sent there time out."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
        udp.bind(("127.0.0.1", 0))
        yield udp.getsockname()[1]


def closed_port() -> int:
    """A loopback port nobody listens on (queries there are refused by the kernel)."""
    return _free_port()
