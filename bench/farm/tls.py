"""The bench CA and the farm's certificate, made at run time in the run's work directory:
an ECDSA P-256 CA, and a P-256 leaf for `*.farm.test` (and `*.hang.farm.test`, never
reached) that nginx and the slow server present. runstate trusts the CA through
`SSL_CERT_FILE`, the blackbox exporter through its module's `tls_config.ca_file`."""

from __future__ import annotations

import ssl
from dataclasses import dataclass
from pathlib import Path

import trustme

ZONE = "farm.test"


@dataclass(frozen=True)
class Pki:
    ca: Path  # the CA certificate (PEM): what a client trusts
    chain: Path  # the leaf and the CA (PEM): what a server presents
    key: Path  # the leaf's private key (PEM)

    def server_context(self) -> ssl.SSLContext:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(self.chain, self.key)
        return context

    def client_context(self) -> ssl.SSLContext:
        return ssl.create_default_context(cafile=str(self.ca))


def make_pki(directory: Path) -> Pki:
    directory.mkdir(parents=True, exist_ok=True)
    ca = trustme.CA(organization_name="runstate bench CA")
    leaf = ca.issue_cert(f"*.{ZONE}", ZONE, f"*.hang.{ZONE}")
    pki = Pki(directory / "ca.pem", directory / "farm-chain.pem", directory / "farm-key.pem")
    ca.cert_pem.write_to_path(str(pki.ca))
    leaf.private_key_pem.write_to_path(str(pki.key))
    pki.chain.write_bytes(b"".join(blob.bytes() for blob in leaf.cert_chain_pems))
    for path in (directory, pki.ca, pki.chain):
        path.chmod(0o755 if path.is_dir() else 0o644)  # nginx's workers may run as another user
    return pki
