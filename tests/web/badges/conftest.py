"""The badge tests use the API tests' `api` fixture: a real server on SQLite and PostgreSQL."""

from tests.api.conftest import api

__all__ = ["api"]
