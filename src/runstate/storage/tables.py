"""The tables, shared by SQLite and PostgreSQL.

Every index here serves a query the API or the pipeline runs; the comment beside it names
the query. Times are stored as timezone-aware UTC.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Text,
    UniqueConstraint,
    Uuid,
    text,
    true,
)
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from sqlalchemy.types import TypeDecorator

# SQLite only auto-increments an INTEGER PRIMARY KEY; Postgres gets a 64-bit identity.
BigIntPK = BigInteger().with_variant(Integer(), "sqlite")

NAMING = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


def utcnow() -> datetime:
    return datetime.now(UTC)


class UtcDateTime(TypeDecorator[datetime]):
    """A timestamp that is always timezone-aware UTC in Python, whatever the database
    keeps (SQLite has no time zones and hands back naive values)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to a UTC column")
        return value.astimezone(UTC)

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None or value.tzinfo is not None:
            return value
        return value.replace(tzinfo=UTC)


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)
    type_annotation_map = {datetime: UtcDateTime()}


class User(Base):
    __tablename__ = "users"

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid.uuid4)
    email: Mapped[str] = mapped_column(String(320), unique=True)  # signin looks it up
    password_hash: Mapped[str] = mapped_column(String(255))
    role: Mapped[str] = mapped_column(String(16), default="USER")
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class RefreshToken(Base):
    """One issued refresh token. Only its SHA-256 is kept; `family_id` ties together every
    token descended from one sign-in, so the re-use of a rotated one can revoke them all."""

    __tablename__ = "refresh_tokens"

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid.uuid4)
    user_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    family_id: Mapped[uuid.UUID] = mapped_column(Uuid, index=True)  # revoke a family
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)  # refresh looks it up
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    expires_at: Mapped[datetime]
    revoked_at: Mapped[datetime | None]

    __table_args__ = (Index(None, "user_id"),)  # cascade on user deletion


class Region(Base):
    __tablename__ = "regions"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(String(64), unique=True)


class Website(Base):
    """A monitor: what to check, how often, and what it last looked like."""

    __tablename__ = "websites"

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid.uuid4)
    user_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    url: Mapped[str] = mapped_column(String(2048))
    name: Mapped[str | None] = mapped_column(String(200))
    interval_seconds: Mapped[int] = mapped_column(Integer, default=60)
    timeout_ms: Mapped[int] = mapped_column(Integer, default=10_000)
    method: Mapped[str] = mapped_column(String(8), default="GET")
    expected_status: Mapped[str] = mapped_column(String(64), default="200-399")
    keyword: Mapped[str | None] = mapped_column(String(200))
    confirmations: Mapped[int] = mapped_column(Integer, default=1)
    recovery_confirmations: Mapped[int] = mapped_column(Integer, default=1)
    paused: Mapped[bool] = mapped_column(Boolean, default=False)
    current_status: Mapped[str | None] = mapped_column(String(16))
    last_checked_at: Mapped[datetime | None]
    latest_response_time_ms: Mapped[int | None] = mapped_column(Integer)
    # The time of the check that set current_status; a status change older than this is stale.
    status_changed_at: Mapped[datetime | None]
    time_added: Mapped[datetime] = mapped_column(default=utcnow)
    # When the configuration last changed (set by the API, not by the pipeline's status
    # updates): the scheduler polls it to pick up new, changed and paused monitors.
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)

    __table_args__ = (
        UniqueConstraint("user_id", "url"),  # same URL twice for one user -> 409; list by owner
        Index(None, "time_added"),  # the ADMIN's list of every monitor, oldest first
        Index(None, "updated_at"),  # the scheduler's "what changed since" poll
    )


class WebsiteCheck(Base):
    """One check result (a tick), kept CHECK_RETENTION_DAYS.

    On PostgreSQL the table is range-partitioned by day on `created_at`
    (runstate.history.partitions): a day ages out by dropping its partition, never by
    DELETE. A row carries no surrogate id and no foreign key checked on every insert: the
    primary key is its one index, serves "a monitor's checks, newest first" and time ranges,
    and makes writing the same result twice (a write retried after its commit was lost) a
    no-op. The pipeline skips results of monitors that no longer exist; the deletion of a
    monitor deletes its checks (runstate.storage.deletion).
    """

    __tablename__ = "website_checks"

    website_id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True)
    created_at: Mapped[datetime] = mapped_column(primary_key=True, default=utcnow)
    region_id: Mapped[int] = mapped_column(Integer, primary_key=True)
    status: Mapped[str] = mapped_column(String(16))
    response_time_ms: Mapped[int | None] = mapped_column(Integer)
    status_code: Mapped[int | None] = mapped_column(Integer)
    error: Mapped[str | None] = mapped_column(Text)
    # The check's phases (runstate.checks.base.Phases); None where not reached or older rows.
    dns_ms: Mapped[int | None] = mapped_column(Integer)
    connect_ms: Mapped[int | None] = mapped_column(Integer)
    tls_ms: Mapped[int | None] = mapped_column(Integer)
    ttfb_ms: Mapped[int | None] = mapped_column(Integer)
    cert_expires_at: Mapped[datetime | None]

    __table_args__ = {"postgresql_partition_by": "RANGE (created_at)"}


class _Rollup:
    """The columns of a rollup: what one monitor's checks from one region added up to in one
    bucket of time (an hour, or a UTC day) starting at `bucket_start`.

    Counts are bounded by the bucket (checks are at least a second apart), so 32 bits never
    overflow; sums are 64 bits. `up_seconds` and `down_seconds` are the time the bucket's UP
    and DOWN checks stand for (each check its monitor's interval), capped together at the
    bucket's length: what is left of the bucket had no data. The histogram's columns are
    runstate.history.latency.LATENCY_COLUMNS.
    """

    website_id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True)
    bucket_start: Mapped[datetime] = mapped_column(primary_key=True)
    region_id: Mapped[int] = mapped_column(Integer, primary_key=True)
    checks: Mapped[int] = mapped_column(Integer, default=0)
    up_checks: Mapped[int] = mapped_column(Integer, default=0)
    up_seconds: Mapped[int] = mapped_column(Integer, default=0)
    down_seconds: Mapped[int] = mapped_column(Integer, default=0)
    # Checks that measured a response time, with their sum, minimum and maximum.
    timed_checks: Mapped[int] = mapped_column(Integer, default=0)
    response_time_sum_ms: Mapped[int] = mapped_column(BigInteger, default=0)
    response_time_min_ms: Mapped[int | None] = mapped_column(Integer)
    response_time_max_ms: Mapped[int | None] = mapped_column(Integer)
    rt_le_10: Mapped[int] = mapped_column(Integer, default=0)
    rt_le_25: Mapped[int] = mapped_column(Integer, default=0)
    rt_le_50: Mapped[int] = mapped_column(Integer, default=0)
    rt_le_75: Mapped[int] = mapped_column(Integer, default=0)
    rt_le_100: Mapped[int] = mapped_column(Integer, default=0)
    rt_le_150: Mapped[int] = mapped_column(Integer, default=0)
    rt_le_200: Mapped[int] = mapped_column(Integer, default=0)
    rt_le_300: Mapped[int] = mapped_column(Integer, default=0)
    rt_le_500: Mapped[int] = mapped_column(Integer, default=0)
    rt_le_750: Mapped[int] = mapped_column(Integer, default=0)
    rt_le_1000: Mapped[int] = mapped_column(Integer, default=0)
    rt_le_1500: Mapped[int] = mapped_column(Integer, default=0)
    rt_le_2500: Mapped[int] = mapped_column(Integer, default=0)
    rt_le_5000: Mapped[int] = mapped_column(Integer, default=0)
    rt_le_10000: Mapped[int] = mapped_column(Integer, default=0)
    rt_over: Mapped[int] = mapped_column(Integer, default=0)


class HourlyRollup(_Rollup, Base):
    """Hourly rollups, kept HOURLY_ROLLUP_RETENTION_DAYS (the primary key serves one monitor's
    range; `bucket_start` alone serves retention)."""

    __tablename__ = "check_rollups_hourly"
    __table_args__ = (Index(None, "bucket_start"),)


class DailyRollup(_Rollup, Base):
    """Daily (UTC) rollups, kept DAILY_ROLLUP_RETENTION_DAYS (0: forever).

    Each also carries running totals: `prior_*` is the sum of that column over every earlier
    daily rollup of the same monitor and region (those retention deleted included). A window
    of days then sums to (last row's prior + its own) - (first row's prior): two rows read per
    monitor whatever the window's length (runstate.history.rollups keeps them exact; null
    only inside the transaction that makes the row)."""

    __tablename__ = "check_rollups_daily"
    __table_args__ = (Index(None, "bucket_start"),)

    prior_checks: Mapped[int | None] = mapped_column(BigInteger)
    prior_up_checks: Mapped[int | None] = mapped_column(BigInteger)
    prior_up_seconds: Mapped[int | None] = mapped_column(BigInteger)
    prior_down_seconds: Mapped[int | None] = mapped_column(BigInteger)


class WebsitePause(Base):
    """A period a monitor was paused, from `paused_at` to `resumed_at` (null while it still
    is): time that uptime figures leave out and report apart, never as up or down."""

    __tablename__ = "website_pauses"

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True, autoincrement=True)
    website_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("websites.id", ondelete="CASCADE"))
    paused_at: Mapped[datetime]
    resumed_at: Mapped[datetime | None]

    __table_args__ = (
        Index(None, "website_id", "paused_at"),  # a monitor's pauses within a window
        # At most one open pause per monitor.
        Index(
            "uq_website_pauses_one_open_per_website",
            "website_id",
            unique=True,
            sqlite_where=text("resumed_at IS NULL"),
            postgresql_where=text("resumed_at IS NULL"),
        ),
    )


class Incident(Base):
    __tablename__ = "incidents"

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid.uuid4)
    website_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("websites.id", ondelete="CASCADE"))
    started_at: Mapped[datetime]
    resolved_at: Mapped[datetime | None]
    is_active: Mapped[bool] = mapped_column(Boolean, default=True)
    cause: Mapped[str | None] = mapped_column(Text)
    # The status-change events that opened and resolved it: a redelivered event is a no-op.
    opened_by_event_id: Mapped[str | None] = mapped_column(String(64), unique=True)
    resolved_by_event_id: Mapped[str | None] = mapped_column(String(64), unique=True)

    __table_args__ = (
        Index(None, "website_id", "started_at"),  # a monitor's incidents, newest first
        # At most one active incident per monitor, whatever the workers race to do.
        Index(
            "uq_incidents_one_active_per_website",
            "website_id",
            unique=True,
            sqlite_where=text("is_active"),
            postgresql_where=text("is_active"),
        ),
    )


class AlertChannel(Base):
    __tablename__ = "alert_channels"

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid.uuid4)
    user_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    type: Mapped[str] = mapped_column(String(16))
    target: Mapped[str] = mapped_column(String(2048))
    notify_on: Mapped[str] = mapped_column(String(16), default="BOTH")
    enabled: Mapped[bool] = mapped_column(Boolean, default=True)
    # The webhook signing key. It must be readable to sign, so it cannot be hashed; the API
    # shows it once, at creation, and never again.
    secret: Mapped[str | None] = mapped_column(String(128))
    disabled_reason: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    # The receiver answered 429 or 503 with Retry-After: nothing goes to this channel before
    # then (capped by NOTIFY_RETRY_MAX_SECONDS); other channels are not held back.
    retry_after_until: Mapped[datetime | None]

    __table_args__ = (
        UniqueConstraint("user_id", "type", "target"),  # duplicates -> 409; list by owner
    )


class NotificationLog(Base):
    """One alert delivery: a (incident, channel, event) is delivered at most once, which the
    unique constraint guarantees even when two workers race."""

    __tablename__ = "notification_logs"

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid.uuid4)
    incident_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("incidents.id", ondelete="CASCADE"))
    website_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("websites.id", ondelete="CASCADE"))
    channel_id: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("alert_channels.id", ondelete="SET NULL")
    )
    channel: Mapped[str] = mapped_column(String(16))
    recipient: Mapped[str] = mapped_column(String(2048))
    event: Mapped[str] = mapped_column(String(16))
    event_id: Mapped[str] = mapped_column(String(64))
    delivery_status: Mapped[str] = mapped_column(String(16), default="pending")
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    error: Mapped[str | None] = mapped_column(Text)
    sent_at: Mapped[datetime | None]
    # The alert as its stream entry carried it (JSON of its fields), so that a retry sends
    # exactly what the first attempt sent; null for a flapping summary (built when sent).
    alert: Mapped[str | None] = mapped_column(Text)
    # When the next attempt is due; null while the row is being recorded and once it is
    # settled. The notification workers' due loop picks rows whose time has come.
    next_attempt_at: Mapped[datetime | None]
    # Who is making an attempt, and since when: a token of one attempt by one worker, which
    # renews `claimed_at` while it works; `claimed_at` is null between attempts. A claim
    # that has lapsed was left by a worker that died, and may be taken over.
    claimed_by: Mapped[str | None] = mapped_column(String(64))
    claimed_at: Mapped[datetime | None]
    created_at: Mapped[datetime] = mapped_column(default=utcnow)

    __table_args__ = (
        UniqueConstraint("incident_id", "channel_id", "event"),
        Index(None, "website_id", "created_at"),  # a monitor's notifications, newest first
        Index(None, "channel_id"),  # SET NULL when a channel is deleted
        Index(None, "next_attempt_at"),  # the due loop: rows whose attempt is due
        # The due loop's order rule: a monitor's unsettled deliveries on a channel.
        Index(
            "ix_notification_logs_unsettled",
            "channel_id",
            "website_id",
            sqlite_where=text("delivery_status IN ('pending', 'failed')"),
            postgresql_where=text("delivery_status IN ('pending', 'failed')"),
        ),
        # Rows whose recording was cut short before their due time was decided.
        Index(
            "ix_notification_logs_undecided",
            "created_at",
            sqlite_where=text("delivery_status = 'pending' AND next_attempt_at IS NULL"),
            postgresql_where=text("delivery_status = 'pending' AND next_attempt_at IS NULL"),
        ),
    )


class StatusPage(Base):
    """A status page: a public (or private) view of some of one user's monitors.

    `version` moves whenever anything the page shows may have changed (a monitor's status,
    an incident, the page itself, the day's rollup), in the same transaction as the change:
    the public page is rendered once per version, and its ETag is the version."""

    __tablename__ = "status_pages"

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid.uuid4)
    user_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    slug: Mapped[str] = mapped_column(String(64), unique=True)  # /status/{slug} looks it up
    title: Mapped[str] = mapped_column(String(200))
    description: Mapped[str | None] = mapped_column(Text)
    is_public: Mapped[bool] = mapped_column(Boolean, default=True, server_default=true())
    version: Mapped[int] = mapped_column(BigInteger, default=1, server_default=text("1"))
    version_changed_at: Mapped[datetime] = mapped_column(default=utcnow)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)

    __table_args__ = (Index(None, "user_id"),)  # a user's pages; cascade on user deletion


class StatusPageMonitor(Base):
    """A monitor shown on a status page, in a group (or none: `group_name` empty) and at a
    position in the page's order."""

    __tablename__ = "status_page_monitors"

    status_page_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("status_pages.id", ondelete="CASCADE"), primary_key=True
    )
    website_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("websites.id", ondelete="CASCADE"), primary_key=True
    )
    group_name: Mapped[str] = mapped_column(String(100), default="", server_default="")
    position: Mapped[int] = mapped_column(Integer)

    # The pages of a monitor: badges, version bumps on a status change, cascade on deletion.
    __table_args__ = (Index(None, "website_id"),)


INCIDENT_IMPACTS = ("none", "minor", "major", "critical")
INCIDENT_STATUSES = ("investigating", "identified", "monitoring", "resolved")


def _one_of(column: str, values: tuple[str, ...]) -> str:
    return f"{column} IN ({', '.join(repr(value) for value in values)})"


class StatusPageIncident(Base):
    """An incident written by the page's owner (not one the pipeline opens): its `status` is
    its latest update's, and `resolved_at` is set while that status is `resolved`."""

    __tablename__ = "status_page_incidents"

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid.uuid4)
    status_page_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("status_pages.id", ondelete="CASCADE")
    )
    title: Mapped[str] = mapped_column(String(200))
    impact: Mapped[str] = mapped_column(String(16))
    status: Mapped[str] = mapped_column(String(16))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)
    resolved_at: Mapped[datetime | None]

    __table_args__ = (
        Index(None, "status_page_id", "created_at"),  # a page's incidents, newest first
        CheckConstraint(_one_of("impact", INCIDENT_IMPACTS), name="impact"),
        CheckConstraint(_one_of("status", INCIDENT_STATUSES), name="status"),
    )


class StatusPageIncidentUpdate(Base):
    """One entry of an incident's timeline."""

    __tablename__ = "status_page_incident_updates"

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid.uuid4)
    incident_id: Mapped[uuid.UUID] = mapped_column(
        # Named here: the convention's name is longer than PostgreSQL's 63 characters.
        ForeignKey(
            "status_page_incidents.id",
            ondelete="CASCADE",
            name="fk_status_page_incident_updates_incident_id",
        )
    )
    status: Mapped[str] = mapped_column(String(16))
    body: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)

    __table_args__ = (
        Index(None, "incident_id", "created_at"),  # an incident's timeline, in order
        CheckConstraint(_one_of("status", INCIDENT_STATUSES), name="status"),
    )
