"""Database URLs as operators have them (libpq-style Postgres, SQLite paths) turned into what the
async drivers take, with TLS honoured; and the engines built from them, on the real servers."""

from __future__ import annotations

import ssl
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest
from sqlalchemy import text

from runstate.storage.db import create_engine
from runstate.storage.urls import database_url_for_driver, redacted

NEON_STYLE = "postgresql://u:p@host:5432/db?sslmode=require&channel_binding=require"
LIBPQ_PARAMS = {"sslmode", "sslrootcert", "sslcert", "sslkey", "channel_binding", "options"}


def test_a_libpq_url_becomes_an_asyncpg_url_with_tls_required() -> None:
    driver = database_url_for_driver(NEON_STYLE)
    assert driver.url == "postgresql+asyncpg://u:p@host:5432/db"
    assert driver.connect_args == {"ssl": "require"}
    assert not driver.is_sqlite


def test_no_libpq_parameter_is_left_in_the_driver_url() -> None:
    raw = (
        "postgresql://u:p@host/db?sslmode=require&channel_binding=require"
        "&options=endpoint%3Dep-abc&application_name=runstate"
    )
    query = parse_qs(urlsplit(database_url_for_driver(raw).url).query)
    assert not LIBPQ_PARAMS & set(query)
    assert query == {"application_name": ["runstate"]}  # what asyncpg understands is kept


def test_the_postgres_scheme_is_accepted() -> None:
    driver = database_url_for_driver("postgres://u:p@host:5432/db?sslmode=require")
    assert driver.url == "postgresql+asyncpg://u:p@host:5432/db"
    assert driver.connect_args["ssl"] == "require"


@pytest.mark.parametrize("mode", ["disable", "allow", "require"])
def test_a_plain_sslmode_is_passed_to_asyncpg_as_is(mode: str) -> None:
    driver = database_url_for_driver(f"postgresql://u@host/db?sslmode={mode}")
    assert driver.connect_args["ssl"] == mode


def test_without_sslmode_no_ssl_argument_is_given_so_asyncpg_prefers_tls() -> None:
    driver = database_url_for_driver("postgresql://u:p@host:5432/db")
    assert "ssl" not in driver.connect_args
    assert driver.url == "postgresql+asyncpg://u:p@host:5432/db"


def test_verify_full_checks_the_certificate_and_the_host_name() -> None:
    context = database_url_for_driver("postgresql://u@host/db?sslmode=verify-full").connect_args[
        "ssl"
    ]
    assert isinstance(context, ssl.SSLContext)
    assert context.check_hostname is True
    assert context.verify_mode == ssl.CERT_REQUIRED


def test_verify_ca_checks_the_certificate_but_not_the_host_name() -> None:
    context = database_url_for_driver("postgresql://u@host/db?sslmode=verify-ca").connect_args[
        "ssl"
    ]
    assert isinstance(context, ssl.SSLContext)
    assert context.check_hostname is False
    assert context.verify_mode == ssl.CERT_REQUIRED


def test_an_unknown_sslmode_is_refused_naming_sslmode() -> None:
    with pytest.raises(ValueError, match="sslmode"):
        database_url_for_driver("postgresql://u@host/db?sslmode=sometimes")


def test_libpq_options_are_sent_as_the_options_startup_parameter() -> None:
    driver = database_url_for_driver(
        "postgresql://u:p@ep-abc.eu-central-1.aws.neon.tech/db?sslmode=require"
        "&options=endpoint%3Dep-abc"
    )
    assert driver.connect_args["server_settings"] == {"options": "endpoint=ep-abc"}
    assert driver.connect_args["ssl"] == "require"


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("sqlite:///relative/runstate.db", "sqlite+aiosqlite:///relative/runstate.db"),
        (
            "sqlite:////var/lib/runstate/runstate.db",
            "sqlite+aiosqlite:////var/lib/runstate/runstate.db",
        ),
    ],
)
def test_a_sqlite_url_keeps_its_path_with_the_aiosqlite_driver(raw: str, expected: str) -> None:
    driver = database_url_for_driver(raw)
    assert driver.url == expected
    assert driver.is_sqlite
    assert driver.connect_args == {}


@pytest.mark.parametrize("raw", ["mysql://u:p@host/db", "http://host/db", "not a url"])
def test_a_url_of_another_database_is_refused(raw: str) -> None:
    with pytest.raises(ValueError, match=r"postgresql://"):
        database_url_for_driver(raw)


def test_redacted_hides_the_password_and_keeps_the_rest() -> None:
    shown = redacted("postgresql://runstate:s3cr3t-pw@db.example.com:5432/app?sslmode=require")
    assert "s3cr3t-pw" not in shown
    assert shown == "postgresql://runstate:***@db.example.com:5432/app?sslmode=require"


def test_redacted_leaves_a_url_without_password_alone() -> None:
    assert (
        redacted("postgresql://postgres@127.0.0.1:5432/x")
        == "postgresql://postgres@127.0.0.1:5432/x"
    )
    assert redacted("sqlite:///.runstate/runstate.db") == "sqlite:///.runstate/runstate.db"


def _with_query(admin_url: str, query: str) -> str:
    parts = urlsplit(admin_url)
    return f"postgresql://{parts.netloc}{parts.path}?{query}"


async def _scalar(url: str, statement: str) -> object:
    engine = create_engine(url)
    try:
        async with engine.connect() as connection:
            return await connection.scalar(text(statement))
    finally:
        await engine.dispose()


async def test_a_libpq_url_with_sslmode_disable_and_channel_binding_connects(
    postgres_admin_url: str,
) -> None:
    url = _with_query(postgres_admin_url, "sslmode=disable&channel_binding=prefer")
    assert await _scalar(url, "SELECT 1") == 1
    assert await _scalar(url, "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()") is False


async def test_sslmode_require_never_connects_without_tls(postgres_admin_url: str) -> None:
    plain = _with_query(postgres_admin_url, "sslmode=disable")
    required = _with_query(postgres_admin_url, "sslmode=require")
    if await _scalar(plain, "SHOW ssl") == "on":
        in_use = "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()"
        assert await _scalar(required, in_use) is True
    else:
        # The server cannot speak TLS: connecting in the clear would ignore sslmode.
        with pytest.raises(OSError, match="SSL"):
            await _scalar(required, "SELECT 1")


async def test_a_sqlite_engine_uses_wal_and_enforces_foreign_keys(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'nested' / 'runstate.db'}"
    assert await _scalar(url, "PRAGMA journal_mode") == "wal"
    assert await _scalar(url, "PRAGMA foreign_keys") == 1
    assert (tmp_path / "nested" / "runstate.db").exists()
