"""The `api` fixture: the same tests run against the API on SQLite and on PostgreSQL."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from runstate.settings import Settings
from tests.api.server import ApiServer, postgres_database, serve

TEST_JWT_SECRET = "test-secret-that-is-long-enough-for-hs256-0123456789"


def api_settings(database_url: str, data_dir: Path, **overrides: object) -> Settings:
    values: dict[str, object] = {
        "DATABASE_URL": database_url,
        "RUNSTATE_DATA_DIR": data_dir,
        "JWT_SECRET": TEST_JWT_SECRET,
        # High enough that the suite never trips them; the rate-limit tests set their own.
        "AUTH_RATE_LIMIT_PER_IP": 100_000,
        "AUTH_RATE_LIMIT_PER_ACCOUNT": 100_000,
        "REFRESH_RATE_LIMIT": 100_000,
        "MONITOR_CREATE_RATE_LIMIT": 100_000,
        **overrides,
    }
    return Settings(**values)  # type: ignore[arg-type]


@contextmanager
def serve_on(
    request: pytest.FixtureRequest,
    tmp_path_factory: pytest.TempPathFactory,
    backend: str,
    **overrides: object,
) -> Iterator[ApiServer]:
    """An API on a new database of ``backend`` ("sqlite" or "postgres"), with ``overrides``."""
    data_dir = tmp_path_factory.mktemp(f"api-{backend}")
    if backend == "sqlite":
        url = f"sqlite:///{data_dir / 'runstate.db'}"
        with serve(api_settings(url, data_dir, **overrides), backend) as server:
            yield server
        return
    admin_url = request.getfixturevalue("postgres_admin_url")
    with (
        postgres_database(admin_url) as url,
        serve(api_settings(url, data_dir, **overrides), backend) as server,
    ):
        yield server


@pytest.fixture(scope="session", params=["sqlite", "postgres"])
def api(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ApiServer]:
    with serve_on(request, tmp_path_factory, request.param) as server:
        yield server
