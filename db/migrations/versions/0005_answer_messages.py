"""answer messages: the chat message each answer was posted as

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-27
"""

import sqlalchemy as sa
from alembic import op

import db.models

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "answer_messages",
        sa.Column("platform", sa.String(length=32), nullable=False),
        sa.Column("message_id", sa.String(length=255), nullable=False),
        sa.Column("query_id", sa.String(length=32), nullable=False),
        sa.Column("created_at", db.models.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["query_id"], ["queries.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("platform", "message_id"),
    )
    with op.batch_alter_table("answer_messages", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_answer_messages_query_id"), ["query_id"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("answer_messages", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_answer_messages_query_id"))
    op.drop_table("answer_messages")
