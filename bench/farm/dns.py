"""The farm's DNS: dnsmasq (Debian's) as a child process, no daemon, answering for
`farm.test` from a hosts file the harness writes, and for nothing else.

- a monitor's name (`m<i>.farm.test`) answers its address with a TTL of DNS_TTL seconds;
- any other name under `farm.test` is NXDOMAIN (`local=/farm.test/`: never forwarded);
- names under `hang.farm.test` are forwarded to a UDP socket the harness binds and never
  reads: the kernel queues, then drops, and nothing ever answers (no ICMP port-unreachable,
  which a resolver would take for an answer).

runstate is given `DNS_SERVERS=127.0.0.1:<port>`. The blackbox exporter resolves with Go's
resolver, which reads /etc/resolv.conf and only asks port 53, so a second instance with
the same files can listen on a loopback address of the run's own, port 53 (bench/peers.py
runs the exporter in a mount namespace where /etc/resolv.conf names it).
"""

from __future__ import annotations

import random
import shutil
import socket
from pathlib import Path

from dnslib import QTYPE, RCODE, DNSRecord

from bench.procs import Child, Children, with_descendants

DNSMASQ_PATHS = ("/usr/sbin/dnsmasq",)
DNS_TTL = 300  # seconds: a common TTL for a web site's A record

_CONF = """\
no-resolv
no-hosts
bind-interfaces
addn-hosts={hosts}
local=/{zone}/
server=/hang.{zone}/127.0.0.1#{silent_port}
local-ttl={ttl}
dns-forward-max=10000
cache-size=10000
log-facility=-
"""


def find_dnsmasq() -> str | None:
    found = shutil.which("dnsmasq")
    if found:
        return found
    return next((p for p in DNSMASQ_PATHS if Path(p).is_file()), None)


def free_udp_tcp_port(address: str = "127.0.0.1") -> int:
    """A port free for both UDP and TCP on ``address`` (dnsmasq listens on both)."""
    while True:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
            udp.bind((address, 0))
            port = int(udp.getsockname()[1])
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as tcp:
                try:
                    tcp.bind((address, port))
                except OSError:
                    continue
                return port


def port_53_address() -> str | None:
    """A loopback address of this run's own where UDP and TCP port 53 can be bound (root
    only), or None."""
    for _ in range(5):
        address = f"127.53.{random.randint(1, 254)}.{random.randint(1, 254)}"  # noqa: S311
        try:
            with (
                socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp,
                socket.socket(socket.AF_INET, socket.SOCK_STREAM) as tcp,
            ):
                udp.bind((address, 53))
                tcp.bind((address, 53))
        except OSError:
            continue
        return address
    return None


class DnsConfig:
    """The files both instances read: the hosts file and the common options."""

    def __init__(self, directory: Path, zone: str, hosts: dict[str, str]) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        directory.chmod(0o755)  # dnsmasq drops root before it reads the hosts file
        # Bound and never read: queries forwarded here get no answer of any kind.
        self.silent = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.silent.bind(("127.0.0.1", 0))
        hosts_file = directory / "hosts"
        hosts_file.write_text("".join(f"{address} {name}\n" for name, address in hosts.items()))
        self.conf = directory / "dnsmasq.conf"
        self.conf.write_text(
            _CONF.format(
                hosts=hosts_file,
                zone=zone,
                silent_port=self.silent.getsockname()[1],
                ttl=DNS_TTL,
            )
        )
        for path in (hosts_file, self.conf):
            path.chmod(0o644)

    def close(self) -> None:
        self.silent.close()


class Dnsmasq:
    def __init__(
        self, children: Children, binary: str, config: DnsConfig, address: str, port: int, name: str
    ) -> None:
        self.address, self.port = address, port
        self.child: Child = children.start(
            "farm",
            name,
            [
                binary,
                f"--conf-file={config.conf}",
                "--keep-in-foreground",
                f"--listen-address={address}",
                f"--port={port}",
                "--pid-file=",
            ],
        )

    @property
    def server(self) -> str:
        return f"{self.address}:{self.port}"

    def pids(self) -> list[int]:
        return with_descendants(self.child.pid) if self.child.alive() else []


def query(server: tuple[str, int], name: str, timeout: float = 1.0) -> tuple[str, list[str]]:
    """Ask ``server`` for ``name``'s A records (blocking): (rcode name, addresses).
    Raises OSError (socket.timeout) when no answer comes."""
    request = DNSRecord.question(name, "A")
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.settimeout(timeout)
        sock.sendto(request.pack(), server)
        data, _ = sock.recvfrom(4096)
    reply = DNSRecord.parse(data)
    addresses = [str(rr.rdata) for rr in reply.rr if rr.rtype == QTYPE.A]
    return RCODE.get(reply.header.rcode), addresses
