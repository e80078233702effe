"""The `runstate` command: one sub-command per process (contract §1)."""

from __future__ import annotations

import contextlib
import errno
import logging
import socket
import sys
from collections.abc import Coroutine, Iterator
from typing import TYPE_CHECKING, Annotated, Any, NoReturn

import typer
from prometheus_client import CollectorRegistry

from runstate.settings import Settings, SettingsError, load_settings
from runstate.storage.urls import redacted

if TYPE_CHECKING:
    from runstate.dlq import DeadLetters
    from runstate.processes import Pipeline
    from runstate.runtime import Component

app = typer.Typer(
    help="runstate: uptime monitoring. Each sub-command runs one process of the system.",
    no_args_is_help=True,
    add_completion=False,
    # An unexpected error is logged as one JSON line by `_run`, never drawn as a rich box.
    pretty_exceptions_enable=False,
)
worker_app = typer.Typer(
    help="Run one pipeline worker.", no_args_is_help=True, pretty_exceptions_enable=False
)
app.add_typer(worker_app, name="worker")
dlq_app = typer.Typer(
    help=(
        "List, replay and drop the dead letters of a stream (monitoring, status-change,"
        " notification, or a stream's full name). Needs REDIS_URL: `runstate up` with its"
        " in-process queue keeps dead letters in its own memory, out of reach."
    ),
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
app.add_typer(dlq_app, name="dlq")

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


def _raise_open_file_limit() -> None:
    """Every check opens a connection of its own, a thousand at once by default: let the
    process use as many file descriptors as the system allows it (the soft limit is often
    1,024, the hard one far higher)."""
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and soft < hard:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def _run(coroutine: Coroutine[Any, Any, None]) -> None:
    """Run the process's main coroutine. An error that escapes it ends the process with
    exit code 1 and a JSON log line (with the traceback): logs stay one object per line."""
    import uvloop

    from runstate.runtime import ComponentFailed

    _raise_open_file_limit()
    try:
        uvloop.run(coroutine)
    except typer.Exit:
        raise
    except ComponentFailed as exc:  # already logged with its traceback by run_components
        log.critical("stopped: a component failed", extra={"component": exc.component})
        raise typer.Exit(EXIT_UNAVAILABLE) from None
    except KeyboardInterrupt:  # Ctrl-C before the signal handlers were in place
        raise typer.Exit(130) from None
    except Exception as exc:
        log.critical(
            "stopped by an unexpected error",
            extra={"error": f"{type(exc).__name__}: {exc}"},
            exc_info=True,
        )
        raise typer.Exit(EXIT_UNAVAILABLE) from None


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


async def _check_redis(settings: Settings) -> None:
    """Fail fast, with one line naming the setting, when Redis does not answer."""
    from redis.asyncio import Redis

    url = settings.redis_url
    assert url is not None
    client = Redis.from_url(url, socket_connect_timeout=5, socket_timeout=5)
    setting = "REDIS_URL" if settings.REDIS_URL else "REDIS_ADDR"
    try:
        await client.ping()
    except Exception as exc:
        fail(f"{setting}: cannot reach Redis at {redacted(url)}: {exc}", EXIT_UNAVAILABLE)
    finally:
        await client.aclose()


def _listen(settings: Settings) -> socket.socket:
    """Bind the API's address now; one line naming HOST or PORT when it cannot be had."""
    from runstate.runtime import bind_api_socket

    try:
        return bind_api_socket(settings.HOST, settings.PORT)
    except socket.gaierror as exc:
        fail(f"HOST: cannot resolve {settings.HOST!r}: {exc.strerror}", EXIT_CONFIG)
    except OSError as exc:
        setting = "HOST" if exc.errno == errno.EADDRNOTAVAIL else "PORT"
        where = f"{settings.HOST}:{settings.PORT}"
        fail(f"{setting}: cannot listen on {where}: {exc.strerror or exc}", EXIT_UNAVAILABLE)


def _serve_metrics(settings: Settings, registry: CollectorRegistry) -> None:
    if settings.METRICS_PORT == 0:
        return
    from prometheus_client import start_http_server

    try:
        start_http_server(settings.METRICS_PORT, addr=settings.HOST, registry=registry)
    except OSError as exc:
        # Refuse to start: a process sharing its network namespace with another (a pod, host
        # networking) would otherwise run without metrics while its health check, probing
        # METRICS_PORT, is answered by the other process and passes.
        where = f"{settings.HOST}:{settings.METRICS_PORT}"
        fail(
            f"METRICS_PORT: cannot listen on {where}: {exc.strerror or exc}"
            " (another process has it; give each process its own port, or 0 for none)",
            EXIT_UNAVAILABLE,
        )


async def _run_pipeline_part(settings: Settings, process: str, parts: list[str]) -> None:
    """One process of the distributed system: the named parts of the pipeline, its
    heartbeat and its metrics port."""
    from runstate.processes import Pipeline
    from runstate.runtime import run_components

    registry = CollectorRegistry()
    _serve_metrics(settings, registry)  # first: a taken port stops the process at once
    await _check_redis(settings)
    await _prepare_database(settings, migrate=False)
    if settings.METRICS_PORT:  # logged only now: a failed start above says one line only
        log.info("metrics listening", extra={"host": settings.HOST, "port": settings.METRICS_PORT})
    pipeline = Pipeline.open(settings, registry)
    try:
        components = _pipeline_components(pipeline, parts)
        components["watch"] = pipeline.watch(process)
        log.info("starting", extra={"parts": parts})
        await run_components(components, settings.SHUTDOWN_TIMEOUT_SECONDS)
    finally:
        await pipeline.aclose()


def _pipeline_components(pipeline: Pipeline, parts: list[str]) -> dict[str, Component]:
    components: dict[str, Component] = {}
    if "scheduler" in parts:
        components["scheduler"] = pipeline.scheduler()
    if "monitoring" in parts:
        components["monitoring"] = pipeline.monitoring_worker()
    if "status-change" in parts:
        components["status-change"] = pipeline.status_change_worker()
    if "notification" in parts:
        components.update(pipeline.notification_worker())
    return components


def _needs_services(settings: Settings, command: str) -> None:
    if settings.DATABASE_URL is None:
        fail(f"DATABASE_URL: must be set for `runstate {command}` (`runstate up` needs none)")
    if settings.redis_url is None and command != "api":
        fail(f"REDIS_URL: must be set (or REDIS_ADDR) for `runstate {command}`")


@app.command()
def up() -> None:
    """Everything in one process: the API, the scheduler and the three workers. Uses a SQLite
    file in RUNSTATE_DATA_DIR and an in-process queue unless DATABASE_URL / REDIS_URL are
    set. Migrates its database by itself."""
    settings = _settings("up")
    try:
        settings.jwt_secret()  # generate and keep it now, not on the first request
        if settings.DATABASE_URL is None:
            settings.check_data_dir_writable()  # the SQLite file and its journal go there
    except SettingsError as exc:
        fail(str(exc))
    sock = _listen(settings)

    async def main() -> None:
        from runstate.api.app import create_app
        from runstate.processes import Pipeline
        from runstate.runtime import api_component, run_components

        if settings.redis_url is not None:
            await _check_redis(settings)
        await _prepare_database(settings, migrate=True)
        registry = CollectorRegistry()
        pipeline = Pipeline.open(settings, registry)
        try:
            components = _pipeline_components(pipeline, ALL_PARTS)
            components["api"] = api_component(
                create_app(settings, registry), sock, settings.SHUTDOWN_TIMEOUT_SECONDS
            )
            components["watch"] = pipeline.watch("up")
            log.info("api listening", extra={"host": settings.HOST, "port": settings.PORT})
            await run_components(components, settings.SHUTDOWN_TIMEOUT_SECONDS)
        finally:
            await pipeline.aclose()

    log.info(
        "starting",
        extra={
            "database": redacted(settings.database_url),
            "queue": "redis" if settings.redis_url else "in-process",
        },
    )
    _run(main())


@app.command()
def api() -> None:
    """The HTTP API. Needs DATABASE_URL, migrated with `runstate migrate`."""
    settings = _settings("api")
    _needs_services(settings, "api")
    sock = _listen(settings)

    async def main() -> None:
        from runstate.api.app import create_app
        from runstate.runtime import api_component, run_components

        if settings.redis_url is not None:
            await _check_redis(settings)
        await _prepare_database(settings, migrate=False)
        serve = api_component(create_app(settings), sock, settings.SHUTDOWN_TIMEOUT_SECONDS)
        log.info("api listening", extra={"host": settings.HOST, "port": settings.PORT})
        await run_components({"api": serve}, settings.SHUTDOWN_TIMEOUT_SECONDS)

    _run(main())


@app.command()
def migrate() -> None:
    """Apply the database migrations (idempotent) and seed the regions and the admin.

    Without DATABASE_URL, migrates the SQLite file `runstate up` uses."""
    settings = _settings("migrate")
    _run(_prepare_database(settings, migrate=True))
    log.info("database migrated", extra={"database": redacted(settings.database_url)})


ALL_PARTS = ["scheduler", "monitoring", "status-change", "notification"]


@app.command()
def scheduler() -> None:
    """The monitoring pusher: enqueues due checks into MONITORING_STREAM. Run two for
    failover: one holds the lease and works, the other stands by."""
    settings = _settings("scheduler")
    _needs_services(settings, "scheduler")
    _run(_run_pipeline_part(settings, "scheduler", ["scheduler"]))


@worker_app.command("monitoring")
def worker_monitoring() -> None:
    """Runs checks, records results, detects status changes."""
    settings = _settings("worker-monitoring")
    _needs_services(settings, "worker monitoring")
    _run(_run_pipeline_part(settings, "worker-monitoring", ["monitoring"]))


@worker_app.command("status-change")
def worker_status_change() -> None:
    """Turns status changes into incidents and forwards them to notifications."""
    settings = _settings("worker-status-change")
    _needs_services(settings, "worker status-change")
    _run(_run_pipeline_part(settings, "worker-status-change", ["status-change"]))


@worker_app.command("notification")
def worker_notification() -> None:
    """Delivers alerts (e-mail, webhook) with retries and a dead-letter stream."""
    settings = _settings("worker-notification")
    _needs_services(settings, "worker notification")
    _run(_run_pipeline_part(settings, "worker-notification", ["notification"]))


# --- dead letters ---------------------------------------------------------------------------

STREAM_ARGUMENT = typer.Argument(
    help="monitoring, status-change, notification, or the stream's full name"
)
IDS_ARGUMENT = typer.Argument(help="dead-letter ids, as `dlq list` shows them")
ALL_OPTION = typer.Option("--all", help="every dead letter of the stream")


def _dead_letters(stream: str) -> tuple[DeadLetters, Settings]:
    """The dead letters of ``stream`` in the configured Redis; one line and exit 2 when
    there is none to reach or the stream is unknown."""
    from redis import Redis

    from runstate.dlq import DeadLetterError, DeadLetters, resolve_stream

    settings = _settings("dlq")
    url = settings.redis_url
    if url is None:
        fail(
            "REDIS_URL: dead letters are kept in Redis: set REDIS_URL (or REDIS_ADDR) to the"
            " workers' Redis (`runstate up` without it keeps them in its own memory)"
        )
    try:
        name = resolve_stream(settings, stream)
    except DeadLetterError as exc:
        fail(str(exc))
    client = Redis.from_url(url, socket_connect_timeout=5, socket_timeout=30)
    return DeadLetters(client, name), settings


@contextlib.contextmanager
def _reaching_redis(settings: Settings) -> Iterator[None]:
    """One line for what cannot be done (exit 2) or a Redis that does not answer (exit 1)."""
    from redis.exceptions import RedisError

    from runstate.dlq import DeadLetterError

    try:
        yield
    except DeadLetterError as exc:
        fail(str(exc))
    except RedisError as exc:
        setting = "REDIS_URL" if settings.REDIS_URL else "REDIS_ADDR"
        where = redacted(settings.redis_url or "")
        fail(f"{setting}: cannot reach Redis at {where}: {exc}", EXIT_UNAVAILABLE)


@dlq_app.command("list")
def dlq_list(
    stream: Annotated[str, STREAM_ARGUMENT],
    as_json: Annotated[bool, typer.Option("--json", help="one JSON object per line")] = False,
) -> None:
    """Show each dead letter: id, time, deliveries, reason, and the entry's fields."""
    letters, settings = _dead_letters(stream)
    with _reaching_redis(settings), letters.redis:
        found = letters.all()
    for letter in found:
        print(letter.as_json() if as_json else letter.as_text())
    if not as_json:
        print(f"{len(found)} dead letter{'' if len(found) == 1 else 's'} in {letters.name}")


@dlq_app.command("replay")
def dlq_replay(
    stream: Annotated[str, STREAM_ARGUMENT],
    ids: Annotated[list[str] | None, IDS_ARGUMENT] = None,
    every: Annotated[bool, ALL_OPTION] = False,
) -> None:
    """Put dead letters back onto their stream, then remove them from the dead letters.

    Each goes back as it was first published and is handled again as a new entry."""
    letters, settings = _dead_letters(stream)
    with _reaching_redis(settings), letters.redis:
        replayed = letters.replay(letters.chosen(ids or [], every))
    print(f"replayed {replayed} dead letter{'' if replayed == 1 else 's'} onto {letters.stream}")


@dlq_app.command("drop")
def dlq_drop(
    stream: Annotated[str, STREAM_ARGUMENT],
    ids: Annotated[list[str] | None, IDS_ARGUMENT] = None,
    every: Annotated[bool, ALL_OPTION] = False,
) -> None:
    """Remove dead letters for good."""
    letters, settings = _dead_letters(stream)
    with _reaching_redis(settings), letters.redis:
        dropped = letters.drop(letters.chosen(ids or [], every))
    print(f"dropped {dropped} dead letter{'' if dropped == 1 else 's'} from {letters.name}")


def main() -> None:
    app()


if __name__ == "__main__":
    main()
