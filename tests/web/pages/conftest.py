"""The page tests use the API tests' `api` fixture: a real server on SQLite and PostgreSQL,
driven over HTTP by a client that keeps its cookies, as a browser does."""

from tests.api.conftest import api

__all__ = ["api"]
