"""The `runstate` command: one sub-command per process (contract §1)."""

from __future__ import annotations

import logging
import sys
from collections.abc import Coroutine
from typing import Any, NoReturn

import typer
import uvicorn

from runstate.settings import Settings, SettingsError, load_settings
from runstate.storage.urls import redacted

app = typer.Typer(
    help="runstate: uptime monitoring. Each sub-command runs one process of the system.",
    no_args_is_help=True,
    add_completion=False,
)
worker_app = typer.Typer(help="Run one pipeline worker.", no_args_is_help=True)
app.add_typer(worker_app, name="worker")

log = logging.getLogger("runstate")

EXIT_CONFIG = 2
EXIT_UNAVAILABLE = 1


def fail(message: str, code: int = EXIT_CONFIG) -> NoReturn:
    """Stop with one line on stderr: what is wrong and which setting to change."""
    print(f"runstate: {message}", file=sys.stderr)
    raise typer.Exit(code)


def _settings(process: str) -> Settings:
    from runstate.logs import configure_logging

    try:
        settings = load_settings()
        configure_logging(process, settings.LOG_LEVEL)
        return settings
    except SettingsError as exc:
        fail(str(exc))


def _run(coroutine: Coroutine[Any, Any, None]) -> None:
    import uvloop

    uvloop.run(coroutine)


async def _prepare_database(settings: Settings, *, migrate: bool) -> None:
    """Reach the database (failing fast with one line), migrate or check the schema, and
    seed the admin when ADMIN_EMAIL and ADMIN_PASSWORD are set."""
    from runstate.storage.db import create_engine
    from runstate.storage.migrate import ensure_admin, schema_is_current, upgrade_schema

    engine = create_engine(settings.database_url)
    try:
        if migrate:
            await upgrade_schema(engine)
        elif not await schema_is_current(engine):
            fail("the database schema is not up to date: run `runstate migrate` first")
        if settings.ADMIN_EMAIL and settings.ADMIN_PASSWORD:
            await ensure_admin(engine, settings.ADMIN_EMAIL, settings.ADMIN_PASSWORD)
    except (OSError, TimeoutError) as exc:
        where = redacted(settings.database_url)
        fail(f"DATABASE_URL: cannot reach the database at {where}: {exc}", EXIT_UNAVAILABLE)
    except Exception as exc:
        if type(exc).__module__.startswith(("sqlalchemy", "asyncpg", "sqlite3")):
            where = redacted(settings.database_url)
            fail(f"DATABASE_URL: database error at {where}: {exc}", EXIT_UNAVAILABLE)
        raise
    finally:
        await engine.dispose()


async def _serve_api(settings: Settings) -> None:
    from runstate.api.app import create_app

    config = uvicorn.Config(
        create_app(settings),
        host=settings.HOST,
        port=settings.PORT,
        loop="none",  # already running on uvloop
        http="httptools",
        log_config=None,
        access_log=False,
        timeout_graceful_shutdown=int(settings.SHUTDOWN_TIMEOUT_SECONDS),
    )
    log.info("api listening", extra={"host": settings.HOST, "port": settings.PORT})
    await uvicorn.Server(config).serve()


@app.command()
def up() -> None:
    """Everything in one process, on a SQLite file in RUNSTATE_DATA_DIR unless DATABASE_URL
    is set. Migrates its database by itself."""
    settings = _settings("up")
    settings.jwt_secret()  # generate and keep it now, not on the first request

    async def main() -> None:
        await _prepare_database(settings, migrate=True)
        await _serve_api(settings)

    log.info("starting", extra={"database": redacted(settings.database_url)})
    _run(main())


@app.command()
def api() -> None:
    """The HTTP API. Needs DATABASE_URL, migrated with `runstate migrate`."""
    settings = _settings("api")
    if settings.DATABASE_URL is None:
        fail("DATABASE_URL: must be set for `runstate api` (`runstate up` needs none)")

    async def main() -> None:
        await _prepare_database(settings, migrate=False)
        await _serve_api(settings)

    _run(main())


@app.command()
def migrate() -> None:
    """Apply the database migrations (idempotent) and seed the regions and the admin.

    Without DATABASE_URL, migrates the SQLite file `runstate up` uses."""
    settings = _settings("migrate")
    _run(_prepare_database(settings, migrate=True))
    log.info("database migrated", extra={"database": redacted(settings.database_url)})


PIPELINE_NOT_YET = (
    "the monitoring pipeline (scheduler and workers) is not in this release yet; "
    "`runstate up` and `runstate api` serve the API"
)


@app.command()
def scheduler() -> None:
    """The monitoring pusher: enqueues due checks into MONITORING_STREAM."""
    fail(PIPELINE_NOT_YET)


@worker_app.command("monitoring")
def worker_monitoring() -> None:
    """Runs checks, records results, detects status changes."""
    fail(PIPELINE_NOT_YET)


@worker_app.command("status-change")
def worker_status_change() -> None:
    """Turns status changes into incidents and forwards them to notifications."""
    fail(PIPELINE_NOT_YET)


@worker_app.command("notification")
def worker_notification() -> None:
    """Delivers alerts (e-mail, webhook) with retries and a dead-letter stream."""
    fail(PIPELINE_NOT_YET)


def main() -> None:
    app()


if __name__ == "__main__":
    main()
