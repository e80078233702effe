"""Refresh the JavaScript and CSS the web pages vendor (htmx, uPlot, axe-core) from the npm
registry, and rewrite src/runstate/web/static/vendor/VENDOR.md.

    python scripts/vendor_web.py           # download the pinned versions, verify, write
    python scripts/vendor_web.py --check   # only check the committed files against VENDOR.md

Each package's tarball is checked against the npm registry's published integrity (SHA-512)
and against the one pinned below, so a registry that served other bytes for a version is
refused. The files taken from it, and its licence, are written beside each other under
static/vendor/, and VENDOR.md lists each with its version, SHA-256 and licence. Nothing here
runs at build or run time: the files are committed, so a fresh clone needs no Node and no
network.

To move to a new version: change `version` and `integrity` (the registry's
`dist.integrity` of that version) below, run the script, and review the diff.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import io
import json
import re
import sys
import tarfile
from dataclasses import dataclass
from pathlib import Path

import httpx

REGISTRY = "https://registry.npmjs.org"
VENDOR_DIR = Path(__file__).resolve().parent.parent / "src/runstate/web/static/vendor"
MANIFEST = VENDOR_DIR / "VENDOR.md"
TIMEOUT_SECONDS = 60


@dataclass(frozen=True)
class Package:
    name: str
    version: str
    licence: str
    integrity: str  # the registry's dist.integrity of the tarball (SRI, sha512)
    files: dict[str, str]  # path inside the tarball -> file name under vendor/
    purpose: str


PACKAGES = (
    Package(
        name="htmx.org",
        # 2.x, not 4.x: 4 changed attribute inheritance and event names a month before this
        # was pinned; 2.0 is the line the dashboard's attributes are written for.
        version="2.0.11",
        licence="0BSD",
        integrity="sha512-Thx/WtpeOQqSrqBCw/A1cwGJGg4UrVa3+sW0GmrM3p4gJgO89ecH4qtbnyzDDWFvBTqjnIMCgELTNt636dtamA==",
        files={"package/dist/htmx.min.js": "htmx.min.js", "package/LICENSE": "htmx.LICENSE"},
        purpose="live fragments of the dashboard",
    ),
    Package(
        name="uplot",
        version="1.6.32",
        licence="MIT",
        integrity="sha512-KIMVnG68zvu5XXUbC4LQEPnhwOxBuLyW1AHtpm6IKTXImkbLgkMy+jabjLgSLMasNuGGzQm/ep3tOkyTxpiQIw==",
        files={
            "package/dist/uPlot.iife.min.js": "uPlot.iife.min.js",
            "package/dist/uPlot.min.css": "uPlot.min.css",
            "package/LICENSE": "uPlot.LICENSE",
        },
        purpose="response-time charts",
    ),
    Package(
        name="axe-core",
        version="4.14.1",
        licence="MPL-2.0",
        integrity="sha512-FHfa+lmNjQZfJz1q8wKqIDwC6DExcHt/pkjNQb09a3NPjCKg2rhu5qb2S4r76ASyFNNtuFooJpZe37OgudVGtQ==",
        files={
            "package/axe.min.js": "axe.min.js",
            "package/LICENSE": "axe-core.LICENSE",
            "package/LICENSE-3RD-PARTY.txt": "axe-core.LICENSE-3RD-PARTY.txt",
        },
        purpose="the accessibility check of the browser tests (never served to visitors' pages)",
    ),
)


def sha256_of(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _sri_sha512(data: bytes) -> str:
    return "sha512-" + base64.b64encode(hashlib.sha512(data).digest()).decode()


def _get(url: str) -> bytes:
    answer = httpx.get(url, timeout=TIMEOUT_SECONDS, headers={"User-Agent": "runstate-vendor-web"})
    answer.raise_for_status()
    return answer.content


def _download(package: Package) -> bytes:
    """The package's tarball, refused unless it matches both integrities."""
    meta = json.loads(_get(f"{REGISTRY}/{package.name}/{package.version}"))
    published = meta["dist"]["integrity"]
    if published != package.integrity:
        raise SystemExit(
            f"{package.name}@{package.version}: the registry publishes {published}, "
            f"the pin says {package.integrity}"
        )
    tarball = _get(meta["dist"]["tarball"])
    if _sri_sha512(tarball) != package.integrity:
        raise SystemExit(f"{package.name}@{package.version}: the tarball fails its integrity")
    return tarball


def _extract(package: Package, tarball: bytes) -> dict[str, bytes]:
    wanted: dict[str, bytes] = {}
    with tarfile.open(fileobj=io.BytesIO(tarball), mode="r:gz") as archive:
        for inside, name in package.files.items():
            member = archive.extractfile(inside)
            if member is None:
                raise SystemExit(f"{package.name}@{package.version}: no {inside} in the tarball")
            wanted[name] = member.read()
    return wanted


def manifest_text(rows: list[tuple[Package, str, str]]) -> str:
    lines = [
        "# Vendored web files",
        "",
        "Written by `scripts/vendor_web.py` (run it to refresh them; `--check` verifies them).",
        "Each comes from its package's tarball on the npm registry, checked against the",
        "registry's SHA-512 integrity; the SHA-256 below is the file's own.",
        "",
        "| package | version | file | sha256 | licence | used for |",
        "|---|---|---|---|---|---|",
    ]
    for package, name, digest in rows:
        lines.append(
            f"| {package.name} | {package.version} | {name} | {digest} | {package.licence} "
            f"| {package.purpose} |"
        )
    return "\n".join(lines) + "\n"


_ROW = re.compile(
    r"^\| (?P<package>[^|]+) \| (?P<version>[^|]+) \| (?P<file>[^|]+) \| (?P<sha>[0-9a-f]{64}) \|"
)


def manifest_entries(text: str) -> dict[str, str]:
    """File name -> SHA-256, as VENDOR.md lists them."""
    entries = {}
    for line in text.splitlines():
        found = _ROW.match(line)
        if found:
            entries[found["file"].strip()] = found["sha"]
    return entries


def check(vendor_dir: Path = VENDOR_DIR) -> list[str]:
    """What is wrong with the vendored files (empty when every file matches VENDOR.md)."""
    entries = manifest_entries((vendor_dir / "VENDOR.md").read_text(encoding="utf-8"))
    expected = {name for package in PACKAGES for name in package.files.values()}
    problems = [f"{name}: not listed in VENDOR.md" for name in sorted(expected - set(entries))]
    for name, digest in sorted(entries.items()):
        path = vendor_dir / name
        if not path.is_file():
            problems.append(f"{name}: listed in VENDOR.md but missing")
        elif sha256_of(path.read_bytes()) != digest:
            problems.append(f"{name}: sha256 differs from VENDOR.md")
    return problems


def refresh() -> None:
    rows: list[tuple[Package, str, str]] = []
    for package in PACKAGES:
        files = _extract(package, _download(package))
        for name, data in files.items():
            (VENDOR_DIR / name).write_bytes(data)
            rows.append((package, name, sha256_of(data)))
        print(f"{package.name}@{package.version}: {', '.join(files)}")
    MANIFEST.write_text(manifest_text(rows), encoding="utf-8")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true", help="verify only; no network")
    args = parser.parse_args()
    if args.check:
        problems = check()
        for problem in problems:
            print(problem, file=sys.stderr)
        return 1 if problems else 0
    VENDOR_DIR.mkdir(parents=True, exist_ok=True)
    refresh()
    problems = check()
    for problem in problems:
        print(problem, file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
