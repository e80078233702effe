"""The dashboard tests use the API tests' `api` fixture: a real server on SQLite and
PostgreSQL, driven over HTTP by clients that keep their cookies, as a browser does."""

from tests.api.conftest import api

__all__ = ["api"]
