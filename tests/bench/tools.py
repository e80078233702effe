"""The system tools a bench test needs: on CI (CI=true) a missing one fails the test, so a
green run has exercised the realistic farm; elsewhere the test is skipped with a hint.
.ci/run installs them (Debian's nginx, dnsmasq-base, prometheus-blackbox-exporter)."""

from __future__ import annotations

import os

import pytest

from bench.farm.dns import find_dnsmasq
from bench.farm.nginx import find_nginx


def require_farm_tools() -> None:
    missing = [
        name
        for name, found in (("nginx", find_nginx()), ("dnsmasq", find_dnsmasq()))
        if found is None
    ]
    if not missing:
        return
    packages = " ".join("dnsmasq-base" if name == "dnsmasq" else name for name in missing)
    message = (
        f"the realistic farm needs {' and '.join(missing)}:"
        f" apt-get install -y --no-install-recommends {packages}"
    )
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(message)
    pytest.skip(message)
