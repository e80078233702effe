from __future__ import annotations

import pytest

from tests.services import POSTGRES_URL, REDIS_URL, require


@pytest.fixture(scope="session")
def redis_url() -> str:
    """The URL of a real Redis (database 15, flushed by the tests that use it)."""
    return require("Redis", REDIS_URL)


@pytest.fixture(scope="session")
def postgres_admin_url() -> str:
    """A URL of the real PostgreSQL server with the right to create databases."""
    return require("PostgreSQL", POSTGRES_URL)
