"""The vendored web files: each matches the SHA-256 VENDOR.md records, has its licence
beside it, and is served under /static as committed."""

from __future__ import annotations

import hashlib
import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import httpx

from runstate.web import STATIC_DIR
from tests.api.server import ApiServer

ROOT = Path(__file__).resolve().parents[3]
VENDOR = STATIC_DIR / "vendor"


def _vendor_script() -> ModuleType:
    spec = importlib.util.spec_from_file_location("vendor_web", ROOT / "scripts/vendor_web.py")
    assert spec
    assert spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault(spec.name, module)  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def test_every_vendored_file_matches_its_sha256_in_vendor_md() -> None:
    script = _vendor_script()
    entries = script.manifest_entries((VENDOR / "VENDOR.md").read_text(encoding="utf-8"))
    assert {"htmx.min.js", "uPlot.iife.min.js", "uPlot.min.css", "axe.min.js"} <= set(entries)
    for name, digest in entries.items():
        assert hashlib.sha256((VENDOR / name).read_bytes()).hexdigest() == digest, name
    assert script.check() == []


def test_the_check_notices_a_changed_file(tmp_path: Path) -> None:
    script = _vendor_script()
    for path in VENDOR.iterdir():
        (tmp_path / path.name).write_bytes(path.read_bytes())
    (tmp_path / "htmx.min.js").write_bytes(b"alert('not htmx')")
    (tmp_path / "uPlot.min.css").unlink()
    assert script.check(tmp_path) == [
        "htmx.min.js: sha256 differs from VENDOR.md",
        "uPlot.min.css: listed in VENDOR.md but missing",
    ]


def test_each_package_has_its_licence_beside_it() -> None:
    script = _vendor_script()
    for package in script.PACKAGES:
        licences = [name for name in package.files.values() if "LICENSE" in name]
        assert licences, package.name
        for name in licences:
            assert (VENDOR / name).stat().st_size > 100, name
        assert f"| {package.name} | {package.version} |" in (VENDOR / "VENDOR.md").read_text()


def test_static_serves_the_committed_files(api: ApiServer) -> None:
    with httpx.Client(base_url=api.base_url) as client:
        for name, kind in (("htmx.min.js", "javascript"), ("uPlot.min.css", "css")):
            answer = client.get(f"/static/vendor/{name}")
            assert answer.status_code == 200
            assert kind in answer.headers["content-type"]
            assert answer.content == (VENDOR / name).read_bytes()
        assert client.get("/static/css/app.css").status_code == 200
        assert client.get("/static/js/app.js").status_code == 200
