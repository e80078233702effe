"""The realistic farm: targets that look like the internet's, on loopback.

- every monitor has its own name, `m<i>.farm.test`, served by dnsmasq (bench/farm/dns.py),
  which runstate is pointed at through `DNS_SERVERS`;
- healthy targets are on nginx, https (a P-256 certificate from a bench CA made for the
  run, bench/farm/tls.py) but for a few plain http ones, with keep-alive, session tickets
  and the session cache off: every check is a new connection and a full handshake;
  `/t/<i>` answers 200, or 503 while the file `down/t/<i>` exists (a flip);
- the failure mix (bench/farm/mix.py): slow and black-holed targets on their own server
  (bench/farm/slow.py), refused ones on a port nothing listens on, names that do not exist
  and names whose DNS server never answers.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import socket
import sys
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from bench.farm.base import Farm, PidGroups, flip_by_files
from bench.farm.dns import DnsConfig, Dnsmasq, find_dnsmasq, free_udp_tcp_port, query
from bench.farm.mix import Mix, Shares
from bench.farm.nginx import NGINX_WORKERS, find_nginx, start_https_nginx
from bench.farm.tls import ZONE, Pki, make_pki
from bench.procs import BenchError, Child, Children, free_port, with_descendants


def refused_port() -> int:
    """A port below the ephemeral range that nothing listens on: connecting is refused."""
    for _ in range(100):
        port = random.randint(20_000, 32_000)  # noqa: S311 - not security
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise BenchError("no free port below 32,000 for the refused targets")


def find_tools() -> dict[str, str]:
    """nginx and dnsmasq, or BenchError naming what to install."""
    tools = {"nginx": find_nginx(), "dnsmasq": find_dnsmasq()}
    missing = [name for name, path in tools.items() if path is None]
    if missing:
        packages = " ".join("dnsmasq-base" if name == "dnsmasq" else name for name in missing)
        raise BenchError(
            f"the realistic farm needs {' and '.join(missing)}:"
            f" apt-get install {packages} (or run the lab farm: --farm lab)"
        )
    return {name: path for name, path in tools.items() if path is not None}


class RealisticFarm(Farm):
    name = "realistic"
    kind = "nginx (https, no keep-alive), dnsmasq, slow and silent targets"

    def __init__(
        self, children: Children, work_dir: Path, monitors: int, shares: Shares, seed: int
    ) -> None:
        tools = find_tools()
        self.children = children
        self.dnsmasq_binary = tools["dnsmasq"]
        self.monitors = monitors
        self.shares = shares
        self.mix = Mix.draw(monitors, shares, seed)
        self.dir = work_dir / "farm"
        (self.dir / "tmp").mkdir(parents=True)
        (self.dir / "down" / "t").mkdir(parents=True)
        for path in (work_dir, self.dir, self.dir / "down", self.dir / "down" / "t"):
            path.chmod(0o755)  # nginx's workers and dnsmasq drop root before reading
        self.pki: Pki = make_pki(self.dir / "tls")
        self.ports = {
            "https": free_port(),
            "http": free_port(),
            "slow": free_port(),
            "blackhole": free_port(),
            "refused": refused_port(),
        }
        self.dns_config = DnsConfig(self.dir / "dns", ZONE, self._hosts())
        self.dns = [
            Dnsmasq(
                children,
                self.dnsmasq_binary,
                self.dns_config,
                "127.0.0.1",
                free_udp_tcp_port(),
                "farm-dnsmasq",
            )
        ]
        self.nginx = start_https_nginx(
            children, tools["nginx"], self.dir, self.ports["https"], self.ports["http"], self.pki
        )
        self.slow = children.start(
            "farm",
            "farm-slow",
            [
                sys.executable,
                "-m",
                "bench.farm.slow",
                f"--chain={self.pki.chain}",
                f"--key={self.pki.key}",
                f"--slow-port={self.ports['slow']}",
                f"--silent-port={self.ports['blackhole']}",
            ],
        )

    # --- names and URLs -----------------------------------------------------------------

    def host(self, i: int) -> str:
        if self.mix.kinds[i] == "dns_hang":
            return f"m{i}.hang.{ZONE}"
        return f"m{i}.{ZONE}"

    def _hosts(self) -> dict[str, str]:
        """Every name that resolves: all but the nonexistent and the unanswered ones."""
        return {
            self.host(i): "127.0.0.1"
            for i, kind in enumerate(self.mix.kinds)
            if kind not in ("nxdomain", "dns_hang")
        }

    def url(self, i: int) -> str:
        kind = self.mix.kinds[i]
        scheme = "http" if kind == "http" else "https"
        port = self.ports.get(kind, self.ports["https"])
        return f"{scheme}://{self.host(i)}:{port}/t/{i}"

    def category(self, i: int) -> str:
        kind = self.mix.kinds[i]
        return "up" if kind in ("https", "http") else kind

    def healthy(self) -> list[int]:
        return self.mix.healthy()

    def runstate_env(self) -> dict[str, str]:
        return {"DNS_SERVERS": self.dns[0].server, "SSL_CERT_FILE": str(self.pki.ca)}

    def describe(self) -> dict[str, Any]:
        return {
            "farm": self.name,
            "served_by": self.kind,
            "targets": self.mix.counts(),
            "https_share": round(self.mix.https_share(), 4),
            "shares": self.shares.as_dict(),
            "dns_server": self.dns[0].server,
            "nginx_workers": NGINX_WORKERS,
        }

    # --- processes ------------------------------------------------------------------------

    def start_dns(self, address: str, port: int) -> Dnsmasq:
        """Another dnsmasq on the same files (the blackbox exporter's, on port 53)."""
        dns = Dnsmasq(
            self.children, self.dnsmasq_binary, self.dns_config, address, port, "farm-dnsmasq-53"
        )
        self.dns.append(dns)
        return dns

    def pid_groups(self) -> PidGroups:
        def alive(child: Child) -> list[int]:
            return with_descendants(child.pid) if child.alive() else []

        return {
            "farm: nginx": lambda: alive(self.nginx),
            "farm: dns (dnsmasq)": lambda: [pid for dns in self.dns for pid in dns.pids()],
            "farm: slow and silent targets": lambda: alive(self.slow),
        }

    def ensure_alive(self) -> None:
        for child in (self.nginx, self.slow, self.dns[0].child):
            if not child.alive():
                raise BenchError(f"{child.name} exited:\n{child.log_tail()}")

    # --- flips and probes -----------------------------------------------------------------

    async def set_down(self, ids: Iterable[int], down: bool) -> dict[int, float]:
        return flip_by_files(self.dir / "down" / "t", ids, down)

    async def probe(self, i: int) -> bool:
        """Resolve target ``i``'s name with the farm's DNS, connect (TLS verified against the
        bench CA for https), GET its path: whether it answered 200."""
        kind, host = self.mix.kinds[i], self.host(i)
        server = (self.dns[0].address, self.dns[0].port)
        try:
            rcode, addresses = await asyncio.to_thread(query, server, host, 0.5)
        except OSError:
            return False
        if rcode != "NOERROR" or not addresses:
            return False
        port = self.ports.get(kind, self.ports["https"])
        tls = None if kind == "http" else self.pki.client_context()
        try:
            async with asyncio.timeout(2):
                reader, writer = await asyncio.open_connection(
                    addresses[0], port, ssl=tls, server_hostname=host if tls else None
                )
                writer.write(f"GET /t/{i} HTTP/1.1\r\nHost: {host}\r\n\r\n".encode())
                status_line = await reader.readline()
                writer.close()
                with contextlib.suppress(OSError):
                    await writer.wait_closed()
        except (OSError, TimeoutError):
            return False
        return status_line.startswith(b"HTTP/1.1 200")

    async def wait_ready(self, deadline_seconds: float = 20.0) -> None:
        """Until nginx answers a healthy target and the slow server accepts on both ports."""
        await super().wait_ready(deadline_seconds)
        deadline = time.monotonic() + deadline_seconds
        for port in (self.ports["slow"], self.ports["blackhole"]):
            while True:
                try:
                    _, writer = await asyncio.open_connection("127.0.0.1", port)
                except OSError:
                    self.ensure_alive()
                    if time.monotonic() > deadline:
                        raise BenchError(f"the slow server does not listen on {port}") from None
                    await asyncio.sleep(0.05)
                    continue
                writer.close()
                break

    def close(self) -> None:
        self.dns_config.close()
