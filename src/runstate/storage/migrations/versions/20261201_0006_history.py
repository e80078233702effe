"""History that lasts: website_checks without a surrogate id or foreign keys (on PostgreSQL
range-partitioned by day), hourly and daily rollups built from the checks already kept, and
the periods each monitor was paused; daily rollups carry running totals, so that a window
of any length sums from two rows

The checks a database already holds are copied into the new table (on PostgreSQL into a
partition per day, made for every day they cover and a few days ahead), and summed into the
rollups, so that uptime figures cover them. This takes time in proportion to the checks
kept; the tables are ready for the workers once it commits.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-01 18:00:00
"""

from collections.abc import Sequence
from datetime import UTC, date, datetime, timedelta

import sqlalchemy as sa
from alembic import op

from runstate.history.latency import LATENCY_BOUNDS_MS, LATENCY_COLUMNS
from runstate.history.partitions import PARTITION_DAYS_AHEAD, create_partition_sql, days_between

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

TOTALLED = ("checks", "up_checks", "up_seconds", "down_seconds")
PRIOR_COLUMNS = tuple(f"prior_{column}" for column in TOTALLED)
CHECK_COLUMNS = (
    "website_id",
    "created_at",
    "region_id",
    "status",
    "response_time_ms",
    "status_code",
    "error",
    "dns_ms",
    "connect_ms",
    "tls_ms",
    "ttfb_ms",
    "cert_expires_at",
)


def _check_columns() -> list[sa.Column[object]]:
    return [
        sa.Column("website_id", sa.Uuid(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("region_id", sa.Integer(), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("response_time_ms", sa.Integer(), nullable=True),
        sa.Column("status_code", sa.Integer(), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("dns_ms", sa.Integer(), nullable=True),
        sa.Column("connect_ms", sa.Integer(), nullable=True),
        sa.Column("tls_ms", sa.Integer(), nullable=True),
        sa.Column("ttfb_ms", sa.Integer(), nullable=True),
        sa.Column("cert_expires_at", sa.DateTime(timezone=True), nullable=True),
    ]


def _create_rollup_table(name: str, priors: Sequence[str] = ()) -> None:
    op.create_table(
        name,
        sa.Column("website_id", sa.Uuid(), nullable=False),
        sa.Column("bucket_start", sa.DateTime(timezone=True), nullable=False),
        sa.Column("region_id", sa.Integer(), nullable=False),
        sa.Column("checks", sa.Integer(), nullable=False),
        sa.Column("up_checks", sa.Integer(), nullable=False),
        sa.Column("up_seconds", sa.Integer(), nullable=False),
        sa.Column("down_seconds", sa.Integer(), nullable=False),
        sa.Column("timed_checks", sa.Integer(), nullable=False),
        sa.Column("response_time_sum_ms", sa.BigInteger(), nullable=False),
        sa.Column("response_time_min_ms", sa.Integer(), nullable=True),
        sa.Column("response_time_max_ms", sa.Integer(), nullable=True),
        *(sa.Column(column, sa.Integer(), nullable=False) for column in LATENCY_COLUMNS),
        *(sa.Column(column, sa.BigInteger(), nullable=True) for column in priors),
        sa.PrimaryKeyConstraint("website_id", "bucket_start", "region_id", name=f"pk_{name}"),
    )
    op.create_index(f"ix_{name}_bucket_start", name, ["bucket_start"])


def _histogram_sums() -> str:
    """One count per latency bucket, as aggregate expressions over `c.response_time_ms`."""
    parts = []
    low: int | None = None
    for column, high in zip(LATENCY_COLUMNS, (*LATENCY_BOUNDS_MS, None), strict=True):
        conditions = ["c.response_time_ms IS NOT NULL"]
        if low is not None:
            conditions.append(f"c.response_time_ms > {low}")
        if high is not None:
            conditions.append(f"c.response_time_ms <= {high}")
        parts.append(f"COUNT(*) FILTER (WHERE {' AND '.join(conditions)}) AS {column}")
        low = high
    return ",\n    ".join(parts)


def _backfill_rollups(table: str, bucket: str, bucket_seconds: int, least: str) -> None:
    """Sum the checks already kept into ``table``'s buckets (``bucket``: the SQL that maps
    `c.created_at` to its bucket's start), as the workers will from now on."""
    up = "COALESCE(SUM(w.interval_seconds) FILTER (WHERE c.status = 'up'), 0)"
    down = "COALESCE(SUM(w.interval_seconds) FILTER (WHERE c.status <> 'up'), 0)"
    up_capped = f"{least}({up}, {bucket_seconds})"
    op.execute(f"""
INSERT INTO {table} (website_id, bucket_start, region_id, checks, up_checks, up_seconds,
    down_seconds, timed_checks, response_time_sum_ms, response_time_min_ms,
    response_time_max_ms, {", ".join(LATENCY_COLUMNS)})
SELECT c.website_id, {bucket}, c.region_id,
    COUNT(*), COUNT(*) FILTER (WHERE c.status = 'up'),
    {up_capped}, {least}({down}, {bucket_seconds} - {up_capped}),
    COUNT(c.response_time_ms), COALESCE(SUM(c.response_time_ms), 0),
    MIN(c.response_time_ms), MAX(c.response_time_ms),
    {_histogram_sums()}
FROM website_checks c JOIN websites w ON w.id = c.website_id
GROUP BY c.website_id, {bucket}, c.region_id
""")  # noqa: S608 - fixed names


def _upgrade_postgresql() -> None:
    op.execute("ALTER TABLE website_checks RENAME TO website_checks_unpartitioned")
    op.execute("ALTER INDEX pk_website_checks RENAME TO pk_website_checks_unpartitioned")
    op.execute(
        "ALTER INDEX ix_website_checks_website_id_created_at "
        "RENAME TO ix_website_checks_unpartitioned_website_id_created_at"
    )
    op.create_table(
        "website_checks",
        *_check_columns(),
        sa.PrimaryKeyConstraint("website_id", "created_at", "region_id", name="pk_website_checks"),
        postgresql_partition_by="RANGE (created_at)",
    )
    oldest, newest = (
        op.get_bind()
        .execute(
            sa.text("SELECT min(created_at), max(created_at) FROM website_checks_unpartitioned")
        )
        .one()
    )
    today = datetime.now(UTC).date()
    first: date = oldest.astimezone(UTC).date() if oldest is not None else today
    last = today + timedelta(days=PARTITION_DAYS_AHEAD)
    if newest is not None:  # checks stamped ahead (a clock that ran fast) keep theirs too
        last = max(last, newest.astimezone(UTC).date())
    for day in days_between(min(first, today), last):
        op.execute(create_partition_sql(day))
    names = ", ".join(CHECK_COLUMNS)
    op.execute(
        f"INSERT INTO website_checks ({names}) SELECT {names} "  # noqa: S608 - fixed names
        "FROM website_checks_unpartitioned ORDER BY website_id, created_at "
        "ON CONFLICT DO NOTHING"
    )
    op.drop_table("website_checks_unpartitioned")


def _upgrade_sqlite() -> None:
    op.create_table(
        "website_checks_new",
        *_check_columns(),
        sa.PrimaryKeyConstraint("website_id", "created_at", "region_id", name="pk_website_checks"),
    )
    names = ", ".join(CHECK_COLUMNS)
    op.execute(
        f"INSERT OR IGNORE INTO website_checks_new ({names}) "  # noqa: S608 - fixed names
        f"SELECT {names} FROM website_checks ORDER BY id"
    )
    op.drop_table("website_checks")
    op.rename_table("website_checks_new", "website_checks")


def upgrade() -> None:
    postgresql = op.get_bind().dialect.name == "postgresql"
    if postgresql:
        _upgrade_postgresql()
    else:
        _upgrade_sqlite()
    _create_rollup_table("check_rollups_hourly")
    _create_rollup_table("check_rollups_daily", PRIOR_COLUMNS)
    if postgresql:
        _backfill_rollups(
            "check_rollups_hourly", "date_trunc('hour', c.created_at, 'UTC')", 3600, "LEAST"
        )
        _backfill_rollups(
            "check_rollups_daily", "date_trunc('day', c.created_at, 'UTC')", 86400, "LEAST"
        )
    else:  # SQLite keeps times as UTC text; a bucket's start is written the same way
        _backfill_rollups(
            "check_rollups_hourly",
            "strftime('%Y-%m-%d %H:00:00.000000', c.created_at)",
            3600,
            "MIN",
        )
        _backfill_rollups(
            "check_rollups_daily",
            "strftime('%Y-%m-%d 00:00:00.000000', c.created_at)",
            86400,
            "MIN",
        )
    # Running totals of the daily rollups: each row's sum of every earlier row of its
    # monitor and region.
    totals = ",\n    ".join(
        f"COALESCE(SUM({column}) OVER earlier, 0) AS prior_{column}" for column in TOTALLED
    )
    sets = ", ".join(f"prior_{column} = t.prior_{column}" for column in TOTALLED)
    op.execute(f"""
UPDATE check_rollups_daily SET {sets}
FROM (
    SELECT website_id, bucket_start, region_id,
    {totals}
    FROM check_rollups_daily
    WINDOW earlier AS (PARTITION BY website_id, region_id ORDER BY bucket_start
        ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING)
) AS t
WHERE check_rollups_daily.website_id = t.website_id
    AND check_rollups_daily.bucket_start = t.bucket_start
    AND check_rollups_daily.region_id = t.region_id
""")  # noqa: S608 - fixed names
    op.create_table(
        "website_pauses",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("website_id", sa.Uuid(), nullable=False),
        sa.Column("paused_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("resumed_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["website_id"],
            ["websites.id"],
            name="fk_website_pauses_website_id_websites",
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name="pk_website_pauses"),
    )
    op.create_index(
        "ix_website_pauses_website_id_paused_at", "website_pauses", ["website_id", "paused_at"]
    )
    op.create_index(
        "uq_website_pauses_one_open_per_website",
        "website_pauses",
        ["website_id"],
        unique=True,
        sqlite_where=sa.text("resumed_at IS NULL"),
        postgresql_where=sa.text("resumed_at IS NULL"),
    )
    # A monitor paused now has been since its last change, as far as anything recorded says.
    op.execute(
        "INSERT INTO website_pauses (website_id, paused_at) "
        "SELECT id, updated_at FROM websites WHERE paused"
    )


def downgrade() -> None:
    op.drop_table("website_pauses")
    op.drop_table("check_rollups_daily")
    op.drop_table("check_rollups_hourly")
    op.rename_table("website_checks", "website_checks_history")
    if op.get_bind().dialect.name == "postgresql":
        op.execute("ALTER INDEX pk_website_checks RENAME TO pk_website_checks_history")
    op.create_table(
        "website_checks",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        *_check_columns(),
        sa.ForeignKeyConstraint(
            ["website_id"],
            ["websites.id"],
            name="fk_website_checks_website_id_websites",
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["region_id"], ["regions.id"], name="fk_website_checks_region_id_regions"
        ),
        sa.PrimaryKeyConstraint("id", name="pk_website_checks"),
    )
    op.create_index(
        "ix_website_checks_website_id_created_at", "website_checks", ["website_id", "created_at"]
    )
    names = ", ".join(CHECK_COLUMNS)
    op.execute(
        f"INSERT INTO website_checks ({names}) SELECT {names} "  # noqa: S608 - fixed names
        "FROM website_checks_history h WHERE EXISTS (SELECT 1 FROM websites w "
        "WHERE w.id = h.website_id) ORDER BY created_at"
    )
    op.drop_table("website_checks_history")
