"""notification_logs.claimed_by: the alert entry delivering a row, so that a second copy of
the same alert on another worker does not send it again

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-27 16:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("notification_logs", schema=None) as batch_op:
        batch_op.add_column(sa.Column("claimed_by", sa.String(64), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("notification_logs", schema=None) as batch_op:
        batch_op.drop_column("claimed_by")
