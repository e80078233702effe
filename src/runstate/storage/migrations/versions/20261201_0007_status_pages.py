"""Status pages: pages (slug, title, public or not, and a version that moves whenever what
they show may have changed), the monitors each shows in groups and in order, and the
incidents their owners post, each with a timeline of updates

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-01 20:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

STATUSES = "status IN ('investigating', 'identified', 'monitoring', 'resolved')"
IMPACTS = "impact IN ('none', 'minor', 'major', 'critical')"


def upgrade() -> None:
    op.create_table(
        "status_pages",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("user_id", sa.Uuid(), nullable=False),
        sa.Column("slug", sa.String(length=64), nullable=False),
        sa.Column("title", sa.String(length=200), nullable=False),
        sa.Column("description", sa.Text(), nullable=True),
        sa.Column("is_public", sa.Boolean(), server_default=sa.true(), nullable=False),
        sa.Column("version", sa.BigInteger(), server_default=sa.text("1"), nullable=False),
        sa.Column("version_changed_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["user_id"],
            ["users.id"],
            name=op.f("fk_status_pages_user_id_users"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_status_pages")),
        sa.UniqueConstraint("slug", name=op.f("uq_status_pages_slug")),
    )
    op.create_index(op.f("ix_status_pages_user_id"), "status_pages", ["user_id"])

    op.create_table(
        "status_page_monitors",
        sa.Column("status_page_id", sa.Uuid(), nullable=False),
        sa.Column("website_id", sa.Uuid(), nullable=False),
        sa.Column("group_name", sa.String(length=100), server_default="", nullable=False),
        sa.Column("position", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(
            ["status_page_id"],
            ["status_pages.id"],
            name=op.f("fk_status_page_monitors_status_page_id_status_pages"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["website_id"],
            ["websites.id"],
            name=op.f("fk_status_page_monitors_website_id_websites"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint(
            "status_page_id", "website_id", name=op.f("pk_status_page_monitors")
        ),
    )
    op.create_index(
        op.f("ix_status_page_monitors_website_id"), "status_page_monitors", ["website_id"]
    )

    op.create_table(
        "status_page_incidents",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("status_page_id", sa.Uuid(), nullable=False),
        sa.Column("title", sa.String(length=200), nullable=False),
        sa.Column("impact", sa.String(length=16), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("resolved_at", sa.DateTime(timezone=True), nullable=True),
        sa.CheckConstraint(IMPACTS, name=op.f("ck_status_page_incidents_impact")),
        sa.CheckConstraint(STATUSES, name=op.f("ck_status_page_incidents_status")),
        sa.ForeignKeyConstraint(
            ["status_page_id"],
            ["status_pages.id"],
            name=op.f("fk_status_page_incidents_status_page_id_status_pages"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_status_page_incidents")),
    )
    op.create_index(
        op.f("ix_status_page_incidents_status_page_id_created_at"),
        "status_page_incidents",
        ["status_page_id", "created_at"],
    )

    op.create_table(
        "status_page_incident_updates",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("incident_id", sa.Uuid(), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("body", sa.Text(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint(STATUSES, name=op.f("ck_status_page_incident_updates_status")),
        sa.ForeignKeyConstraint(
            ["incident_id"],
            ["status_page_incidents.id"],
            name=op.f("fk_status_page_incident_updates_incident_id"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_status_page_incident_updates")),
    )
    op.create_index(
        op.f("ix_status_page_incident_updates_incident_id_created_at"),
        "status_page_incident_updates",
        ["incident_id", "created_at"],
    )


def downgrade() -> None:
    op.drop_table("status_page_incident_updates")
    op.drop_table("status_page_incidents")
    op.drop_table("status_page_monitors")
    op.drop_table("status_pages")
