"""website_checks: the phases of each check (DNS, connect, TLS, time to first byte) and the
certificate's expiry, all nullable (older rows, and phases a check did not reach)

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-30 12:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

PHASES = ("dns_ms", "connect_ms", "tls_ms", "ttfb_ms")


def upgrade() -> None:
    with op.batch_alter_table("website_checks", schema=None) as batch_op:
        for name in PHASES:
            batch_op.add_column(sa.Column(name, sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column("cert_expires_at", sa.DateTime(timezone=True), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("website_checks", schema=None) as batch_op:
        batch_op.drop_column("cert_expires_at")
        for name in reversed(PHASES):
            batch_op.drop_column(name)
