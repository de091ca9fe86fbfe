"""platform events, for dropping retried chat events

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-27
"""

import sqlalchemy as sa
from alembic import op

import db.models

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "platform_events",
        sa.Column("platform", sa.String(length=32), nullable=False),
        sa.Column("event_key", sa.String(length=255), nullable=False),
        sa.Column("created_at", db.models.UTCDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("platform", "event_key"),
    )
    with op.batch_alter_table("platform_events", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_platform_events_created_at"), ["created_at"], unique=False
        )


def downgrade() -> None:
    with op.batch_alter_table("platform_events", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_platform_events_created_at"))
    op.drop_table("platform_events")
