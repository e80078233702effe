"""Scheduled deliveries: notification_logs.alert (the alert as sent) and next_attempt_at
(when the next attempt is due, indexed for the due loop), and alert_channels.retry_after_until
(a receiver's Retry-After, honoured for its channel only)

Rows left unsettled by an older worker become due at once, so that nothing waits for a
stream entry to come back; their alert is rebuilt from their incident when they are sent.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-01 12:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("notification_logs", schema=None) as batch_op:
        batch_op.add_column(sa.Column("alert", sa.Text(), nullable=True))
        batch_op.add_column(sa.Column("next_attempt_at", sa.DateTime(timezone=True), nullable=True))
        batch_op.create_index("ix_notification_logs_next_attempt_at", ["next_attempt_at"])
    with op.batch_alter_table("alert_channels", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("retry_after_until", sa.DateTime(timezone=True), nullable=True)
        )
    op.execute(
        "UPDATE notification_logs SET next_attempt_at = created_at "
        "WHERE delivery_status NOT IN ('sent', 'dead', 'suppressed')"
    )
    unsettled = sa.text("delivery_status IN ('pending', 'failed')")
    undecided = sa.text("delivery_status = 'pending' AND next_attempt_at IS NULL")
    op.create_index(
        "ix_notification_logs_unsettled",
        "notification_logs",
        ["channel_id", "website_id"],
        sqlite_where=unsettled,
        postgresql_where=unsettled,
    )
    op.create_index(
        "ix_notification_logs_undecided",
        "notification_logs",
        ["created_at"],
        sqlite_where=undecided,
        postgresql_where=undecided,
    )


def downgrade() -> None:
    op.drop_index("ix_notification_logs_undecided", table_name="notification_logs")
    op.drop_index("ix_notification_logs_unsettled", table_name="notification_logs")
    # The older worker takes a row whose `claimed_by` is set only when `claimed_at` says the
    # claim lapsed, and this version leaves `claimed_at` empty between attempts: without this
    # the older worker would take such rows for held for ever. (It delivers only from stream
    # entries, so retries this version had scheduled are not made after a downgrade.)
    op.execute("UPDATE notification_logs SET claimed_by = NULL WHERE claimed_at IS NULL")
    with op.batch_alter_table("alert_channels", schema=None) as batch_op:
        batch_op.drop_column("retry_after_until")
    with op.batch_alter_table("notification_logs", schema=None) as batch_op:
        batch_op.drop_index("ix_notification_logs_next_attempt_at")
        batch_op.drop_column("next_attempt_at")
        batch_op.drop_column("alert")
