"""Where the test suite finds PostgreSQL and Redis, and what it does when they are absent.

On CI (``CI=true``) a missing service fails the run: a green run must have exercised the
real back ends. On a developer's machine the tests that need it are skipped with a hint.
"""

from __future__ import annotations

import os
import socket
from urllib.parse import urlsplit

import pytest

POSTGRES_URL = os.environ.get("TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
REDIS_URL = os.environ.get("TEST_REDIS_URL", "redis://127.0.0.1:6379/15")

_HINTS = {
    "PostgreSQL": "start PostgreSQL on 127.0.0.1:5432 (trust auth) or set TEST_POSTGRES_URL",
    "Redis": "start Redis on 127.0.0.1:6379 or set TEST_REDIS_URL",
}


def _answers(url: str) -> bool:
    parts = urlsplit(url)
    try:
        with socket.create_connection((parts.hostname or "127.0.0.1", parts.port or 0), 2):
            return True
    except OSError:
        return False


def require(service: str, url: str) -> str:
    """Return ``url`` when the service answers; otherwise fail on CI and skip elsewhere."""
    if _answers(url):
        return url
    message = f"{service} is unreachable at {url}: {_HINTS[service]}"
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(message)
    pytest.skip(message)
