"""One typed settings object, read from the environment (contract §2).

Every value is validated when the process starts; a wrong one stops it with a single line
that names the setting (see :func:`load_settings`). Secrets may be given as ``<NAME>_FILE``,
the path of a file that holds the value, as container orchestrators mount them.
"""

from __future__ import annotations

import os
import secrets
import tempfile
from enum import StrEnum
from ipaddress import IPv4Address, IPv6Address
from pathlib import Path
from typing import Annotated, Any

from pydantic import Field, ValidationError, field_validator, model_validator
from pydantic.fields import FieldInfo
from pydantic_settings import (
    BaseSettings,
    EnvSettingsSource,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
)

# Settings that may come from a file named by `<NAME>_FILE`.
SECRET_SETTINGS = (
    "DATABASE_URL",
    "REDIS_URL",
    "JWT_SECRET",
    "ADMIN_PASSWORD",
    "SMTP_PASSWORD",
)

JWT_SECRET_MIN_LENGTH = 32
JWT_SECRET_FILE_NAME = "jwt-secret"


class AppEnv(StrEnum):
    DEV = "dev"
    PRODUCTION = "production"


class SettingsError(Exception):
    """A setting is missing or wrong; ``str(error)`` is one line that names it."""


class _FileSecretsSource(PydanticBaseSettingsSource):
    """Reads `<NAME>_FILE` for the secret settings; a directly set `<NAME>` still wins."""

    def get_field_value(self, field: FieldInfo, field_name: str) -> tuple[Any, str, bool]:
        return None, field_name, False

    def __call__(self) -> dict[str, Any]:
        values: dict[str, Any] = {}
        for name in SECRET_SETTINGS:
            path = os.environ.get(f"{name}_FILE")
            if not path or os.environ.get(name):
                continue
            try:
                values[name] = Path(path).read_text(encoding="utf-8").strip()
            except OSError as exc:
                raise SettingsError(f"{name}_FILE: cannot read {path}: {exc.strerror}") from exc
        return values


PositiveSeconds = Annotated[float, Field(gt=0, le=86_400)]


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        case_sensitive=True,
        extra="ignore",
        env_ignore_empty=True,
        validate_default=True,
    )

    APP_ENV: AppEnv = AppEnv.DEV
    DATABASE_URL: str | None = None
    REDIS_URL: str | None = None
    REDIS_ADDR: str | None = None
    RUNSTATE_DATA_DIR: Path = Path(".runstate")
    HOST: str = "127.0.0.1"
    PORT: int = Field(default=3001, ge=1, le=65_535)
    LOG_LEVEL: str = "INFO"

    JWT_SECRET: str | None = None
    ACCESS_TOKEN_TTL_SECONDS: int = Field(default=900, ge=60, le=86_400)
    REFRESH_TOKEN_TTL_SECONDS: int = Field(default=30 * 86_400, ge=3_600, le=365 * 86_400)

    ADMIN_EMAIL: str | None = None
    ADMIN_PASSWORD: str | None = None
    SIGNUP_ENABLED: bool = True

    # Authentication attempts (signin, signup, refresh) allowed per minute.
    AUTH_RATE_LIMIT_PER_IP: int = Field(default=30, ge=1, le=1_000_000)
    AUTH_RATE_LIMIT_PER_ACCOUNT: int = Field(default=10, ge=1, le=1_000_000)  # failed sign-ins
    # Token refreshes allowed per minute, per refresh-token family and per IP (/64 for IPv6).
    REFRESH_RATE_LIMIT: int = Field(default=30, ge=1, le=1_000_000)

    # Quotas per account (ADMIN accounts are exempt), and request limits.
    MAX_MONITORS_PER_USER: int = Field(default=1_000, ge=0, le=10_000_000)
    MAX_CHANNELS_PER_USER: int = Field(default=50, ge=0, le=1_000_000)
    MAX_STATUS_PAGES_PER_USER: int = Field(default=20, ge=0, le=1_000_000)
    MONITOR_CREATE_RATE_LIMIT: int = Field(default=60, ge=1, le=1_000_000)  # per user per minute
    MAX_REQUEST_BODY_BYTES: int = Field(default=64 * 1024, ge=1_024, le=1 << 30)

    # Public status pages (runstate.web.status_cache): how long a rendered page is served
    # without asking the database (at most its max-age of 30 s), and after how many of its
    # monitors' check intervals without a check its data is shown as stale.
    STATUS_PAGE_REVALIDATE_SECONDS: Annotated[float, Field(gt=0, le=30)] = 10.0
    STATUS_PAGE_STALE_INTERVALS: Annotated[float, Field(ge=1, le=1_000)] = 3.0
    # A rendered page is rendered again after this long even when nothing moved its version:
    # its uptime figures and today's bar change with every check.
    STATUS_PAGE_MAX_RENDER_AGE_SECONDS: Annotated[float, Field(ge=1, le=86_400)] = 60.0

    MIN_CHECK_INTERVAL_SECONDS: int = Field(default=30, ge=1, le=86_400)
    ALLOW_PRIVATE_TARGETS: bool = False

    MONITORING_STREAM: str = "runstate:monitoring"
    STATUS_CHANGE_STREAM: str = "runstate:status-change"
    NOTIFICATION_STREAM: str = "runstate:notification"
    MONITORING_GROUP: str = "monitoring-group"
    STATUS_CHANGE_GROUP: str = "status-change-group"
    NOTIFICATION_GROUP: str = "notification-group"
    MONITORING_REGION_NAME: str = "local"

    SMTP_HOST: str | None = None
    SMTP_PORT: int = Field(default=587, ge=1, le=65_535)
    SMTP_USERNAME: str | None = None
    SMTP_PASSWORD: str | None = None
    SMTP_FROM: str | None = None
    SMTP_STARTTLS: bool = True

    HEARTBEAT_INTERVAL_SECONDS: PositiveSeconds = 30.0
    SHUTDOWN_TIMEOUT_SECONDS: PositiveSeconds = 10.0
    # Port of a worker's or scheduler's own /metrics; 0 turns it off. (The API and
    # `runstate up` expose theirs on the API port.)
    METRICS_PORT: int = Field(default=9100, ge=0, le=65_535)

    # The consume loop shared by the workers.
    CONSUMER_BATCH_SIZE: int = Field(default=100, ge=1, le=10_000)
    RECLAIM_IDLE_SECONDS: PositiveSeconds = 30.0
    # Deliveries of an entry whose handler failed on the entry itself (not on an outage of
    # runstate's own database, Redis or network: those are retried for as long as they last).
    MAX_DELIVERIES: int = Field(default=5, ge=1, le=1_000)
    # Each dead-letter stream keeps about this many of its newest entries.
    DEAD_LETTER_MAXLEN: int = Field(default=10_000, ge=10, le=100_000_000)
    # The longest pause between two tries of a dependency that is down (capped backoff).
    OUTAGE_RETRY_MAX_SECONDS: PositiveSeconds = 10.0
    # Checks a monitoring worker has in hand at once: running, or their result awaiting its
    # write. A check that hangs until its timeout holds one of these and nothing else.
    MONITORING_CONCURRENCY: int = Field(default=1000, ge=1, le=100_000)
    # Checks running at once against one host (as the URL names it), so that many monitors
    # on one slow or black-holed host cannot take the slots everyone else needs.
    CHECK_MAX_PER_HOST: int = Field(default=20, ge=1, le=100_000)
    # Results are written in groups: every MONITORING_FLUSH_RESULTS results, or when the
    # oldest has waited MONITORING_FLUSH_MS, whichever comes first.
    MONITORING_FLUSH_RESULTS: int = Field(default=500, ge=1, le=100_000)
    MONITORING_FLUSH_MS: int = Field(default=50, ge=1, le=10_000)
    STATUS_CHANGE_CONCURRENCY: int = Field(default=16, ge=1, le=10_000)
    NOTIFICATION_CONCURRENCY: int = Field(default=32, ge=1, le=10_000)
    CHECK_MAX_CONNECTIONS: int = Field(default=1000, ge=1, le=100_000)

    # The scheduler.
    MONITORING_STREAM_MAXLEN: int = Field(default=1_000_000, ge=1_000, le=1_000_000_000)
    SCHEDULER_LEASE_SECONDS: PositiveSeconds = 10.0
    SCHEDULER_POLL_SECONDS: PositiveSeconds = 2.0
    # Every this often the scheduler reloads every monitor (a full reconcile), whatever the
    # change polls found.
    SCHEDULER_RECONCILE_SECONDS: PositiveSeconds = 300.0

    # Alert delivery.
    NOTIFY_MAX_ATTEMPTS: int = Field(default=5, ge=1, le=100)
    NOTIFY_RETRY_BASE_SECONDS: PositiveSeconds = 2.0
    NOTIFY_RETRY_MAX_SECONDS: PositiveSeconds = 300.0
    WEBHOOK_TIMEOUT_SECONDS: PositiveSeconds = 10.0
    ALERT_FLAP_WINDOW_SECONDS: PositiveSeconds = 600.0
    ALERT_FLAP_MAX: int = Field(default=5, ge=1, le=10_000)
    # Deliveries under way at once to one channel, and to one account's channels, so that no
    # slow receiver holds another account's alerts.
    NOTIFY_MAX_PER_CHANNEL: int = Field(default=4, ge=1, le=10_000)
    NOTIFY_MAX_PER_USER: int = Field(default=8, ge=1, le=10_000)

    # Housekeeping: how often expired and revoked refresh tokens and aged-out history are
    # deleted, and how many rows one delete statement removes (there, and when a monitor's
    # or an account's history goes).
    PRUNE_INTERVAL_SECONDS: PositiveSeconds = 3_600.0
    DELETE_BATCH_ROWS: int = Field(default=5_000, ge=100, le=1_000_000)
    # Retention (runstate.history.retention), in UTC days: N keeps today and the N whole
    # days before it. Raw checks go first; the rollups that uptime figures read stay longer.
    CHECK_RETENTION_DAYS: int = Field(default=7, ge=1, le=36_500)
    HOURLY_ROLLUP_RETENTION_DAYS: int = Field(default=90, ge=1, le=36_500)
    DAILY_ROLLUP_RETENTION_DAYS: int = Field(default=0, ge=0, le=36_500)  # 0: kept forever

    # Name resolution for the checks and the channels (runstate.resolve): which servers, how
    # long one lookup may wait, and how long answers and failures are remembered.
    DNS_SERVERS: str | None = None  # "ip[:port],[ipv6][:port]"; unset: the system's resolvers
    DNS_TIMEOUT_SECONDS: Annotated[float, Field(gt=0, le=60)] = 5.0
    DNS_CACHE_SIZE: int = Field(default=200_000, ge=1, le=100_000_000)
    DNS_CACHE_MIN_TTL_SECONDS: Annotated[float, Field(ge=0, le=86_400)] = 5.0
    DNS_CACHE_MAX_TTL_SECONDS: Annotated[float, Field(ge=0, le=86_400)] = 300.0
    DNS_NEGATIVE_TTL_SECONDS: Annotated[float, Field(ge=0, le=3_600)] = 5.0

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        assert isinstance(env_settings, EnvSettingsSource)
        return (init_settings, env_settings, _FileSecretsSource(settings_cls))

    @field_validator("LOG_LEVEL")
    @classmethod
    def _known_log_level(cls, value: str) -> str:
        level = value.upper()
        if level not in {"DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"}:
            raise ValueError("must be one of DEBUG, INFO, WARNING, ERROR, CRITICAL")
        return level

    @field_validator("DATABASE_URL")
    @classmethod
    def _known_database_scheme(cls, value: str | None) -> str | None:
        if value is None:
            return None
        from runstate.storage.urls import database_url_for_driver

        database_url_for_driver(value)  # raises ValueError with the reason
        return value

    @field_validator("REDIS_URL")
    @classmethod
    def _known_redis_scheme(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith(("redis://", "rediss://", "unix://")):
            raise ValueError("must start with redis://, rediss:// or unix://")
        return value

    @field_validator("REDIS_ADDR")
    @classmethod
    def _host_and_port(cls, value: str | None) -> str | None:
        if value is None:
            return None
        host, sep, port = value.rpartition(":")
        if not sep or not host or not port.isdigit() or not 0 < int(port) < 65_536:
            raise ValueError("must be host:port, e.g. redis:6379")
        return value

    @field_validator("DNS_SERVERS")
    @classmethod
    def _dns_server_addresses(cls, value: str | None) -> str | None:
        if value is None:
            return None
        return ",".join(_dns_server(entry) for entry in value.split(","))

    @model_validator(mode="after")
    def _dns_ttl_floor_below_ceiling(self) -> Settings:
        if self.DNS_CACHE_MIN_TTL_SECONDS > self.DNS_CACHE_MAX_TTL_SECONDS:
            raise ValueError(
                "DNS_CACHE_MIN_TTL_SECONDS: must not exceed DNS_CACHE_MAX_TTL_SECONDS "
                f"({self.DNS_CACHE_MAX_TTL_SECONDS:g})"
            )
        return self

    @field_validator("JWT_SECRET")
    @classmethod
    def _long_enough(cls, value: str | None) -> str | None:
        if value is not None and len(value) < JWT_SECRET_MIN_LENGTH:
            raise ValueError(f"must be at least {JWT_SECRET_MIN_LENGTH} characters")
        return value

    @model_validator(mode="after")
    def _production_needs_explicit_secret(self) -> Settings:
        if self.APP_ENV is AppEnv.PRODUCTION and self.JWT_SECRET is None:
            raise ValueError("JWT_SECRET: must be set when APP_ENV=production")
        return self

    @property
    def redis_url(self) -> str | None:
        """The Redis to use: `REDIS_URL` wins over `REDIS_ADDR`; None when neither is set."""
        if self.REDIS_URL:
            return self.REDIS_URL
        if self.REDIS_ADDR:
            return f"redis://{self.REDIS_ADDR}/0"
        return None

    @property
    def dns_servers(self) -> tuple[str, ...] | None:
        """DNS_SERVERS as c-ares takes them ("ip:port", "[ipv6]:port"); None: the system's."""
        return tuple(self.DNS_SERVERS.split(",")) if self.DNS_SERVERS else None

    @property
    def sqlite_path(self) -> Path:
        return self.RUNSTATE_DATA_DIR / "runstate.db"

    @property
    def database_url(self) -> str:
        """`DATABASE_URL`, or the SQLite file in the data directory when it is unset."""
        return self.DATABASE_URL or f"sqlite:///{self.sqlite_path}"

    @property
    def dead_letter_stream(self) -> str:
        return f"{self.NOTIFICATION_STREAM}:dlq"

    def check_data_dir_writable(self) -> None:
        """Raise SettingsError unless files can be made in RUNSTATE_DATA_DIR (made if need be)."""
        directory = self.RUNSTATE_DATA_DIR
        try:
            directory.mkdir(parents=True, exist_ok=True)
            with tempfile.TemporaryFile(dir=directory):
                pass
        except OSError as exc:
            raise SettingsError(
                f"RUNSTATE_DATA_DIR: cannot write {directory}: {exc.strerror or exc}"
                f" (the directory must be writable by user {os.getuid()})"
            ) from exc

    def jwt_secret(self) -> str:
        """The key for access tokens: `JWT_SECRET`, or in dev one generated once and kept in
        `RUNSTATE_DATA_DIR` so tokens survive restarts."""
        if self.JWT_SECRET is not None:
            return self.JWT_SECRET
        if self.APP_ENV is AppEnv.PRODUCTION:  # pragma: no cover - refused by validation
            raise SettingsError("JWT_SECRET: must be set when APP_ENV=production")
        path = self.RUNSTATE_DATA_DIR / JWT_SECRET_FILE_NAME
        try:
            if not path.exists():
                _publish_once(path, secrets.token_urlsafe(48))
            kept = path.read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise SettingsError(
                f"RUNSTATE_DATA_DIR: cannot read {path}: {exc.strerror or exc}"
                f" (the directory must be writable by user {os.getuid()})"
            ) from exc
        if len(kept) < JWT_SECRET_MIN_LENGTH:
            raise SettingsError(f"RUNSTATE_DATA_DIR: {path} is damaged; delete it to make anew")
        return kept


def _dns_server(entry: str) -> str:
    """One DNS_SERVERS entry, ``ip[:port]`` or ``[ipv6][:port]``, as ``ip:port``; ValueError
    naming the entry otherwise. A server must be an address: naming one would need DNS."""
    text = entry.strip()
    parse: type[IPv4Address | IPv6Address]
    if text.startswith("["):
        host, bracket, rest = text[1:].partition("]")
        if not bracket or rest[:1] not in ("", ":"):
            raise ValueError(f"{text!r} is not [ipv6]:port")
        port, parse = rest[1:] if rest else "53", IPv6Address
    elif text.count(":") > 1:
        raise ValueError(f"{text!r}: write an IPv6 server in brackets, e.g. [{text}]:53")
    else:
        host, colon, port = text.partition(":")
        port, parse = port if colon else "53", IPv4Address
    try:
        address = parse(host)
    except ValueError:
        raise ValueError(f"{text!r} is not an IP address (with an optional :port)") from None
    if not port.isdigit() or not 0 < int(port) < 65_536:
        raise ValueError(f"{text!r}: the port must be within 1-65535")
    return f"[{address}]:{int(port)}" if parse is IPv6Address else f"{address}:{int(port)}"


def _publish_once(path: Path, content: str) -> None:
    """Write ``content`` to ``path`` unless it exists, atomically: a reader never sees a
    half-written file, and of two processes racing, the first one's content is kept."""
    staged = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(staged, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as file:
            file.write(content)
        os.link(staged, path)
    except FileExistsError:
        pass  # another process published first: its secret is the one
    except OSError as exc:
        raise SettingsError(
            f"RUNSTATE_DATA_DIR: cannot write {path}: {exc.strerror or exc}"
            f" (the directory must be writable by user {os.getuid()})"
        ) from exc
    finally:
        staged.unlink(missing_ok=True)


def load_settings(**overrides: Any) -> Settings:
    """Read the settings, turning the first validation error into one line naming the setting."""
    try:
        return Settings(**overrides)
    except ValidationError as exc:
        error = exc.errors()[0]
        name = ".".join(str(part) for part in error["loc"]) or "settings"
        message = str(error["msg"]).removeprefix("Value error, ")
        if name == "settings" and ":" in message:
            raise SettingsError(message) from None
        raise SettingsError(f"{name}: {message}") from None
