from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from tests.dns_server import LocalDnsServer
from tests.services import POSTGRES_URL, REDIS_URL, require


@pytest.fixture(scope="session")
def redis_url() -> str:
    """The URL of a real Redis (database 15, flushed by the tests that use it)."""
    return require("Redis", REDIS_URL)


@pytest.fixture(scope="session")
def postgres_admin_url() -> str:
    """A URL of the real PostgreSQL server with the right to create databases."""
    return require("PostgreSQL", POSTGRES_URL)


@pytest.fixture
async def dns_server() -> AsyncIterator[LocalDnsServer]:
    """A real authoritative DNS server on 127.0.0.1 (UDP and TCP, a free port; its
    ``address`` is what DNS_SERVERS takes). No records yet: every name is NXDOMAIN until the
    test adds it with ``set_records``."""
    async with LocalDnsServer() as server:
        yield server
