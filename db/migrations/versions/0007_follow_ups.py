"""follow-ups: the query log links a question to its thread and the earlier query it follows

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-06
"""

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None

COLUMNS = (
    ("thread_key", sa.String(length=255)),
    # A plain id, not a foreign key: adding one to SQLite would rebuild ``queries``, and
    # a follow-up must outlive a deleted earlier query.
    ("follows", sa.String(length=32)),
    ("standalone_question", sa.Text()),
    ("condense_fallback", sa.String(length=32)),
)


def upgrade() -> None:
    with op.batch_alter_table("queries", schema=None) as batch_op:
        for name, type_ in COLUMNS:
            batch_op.add_column(sa.Column(name, type_, nullable=True))
        batch_op.create_index(batch_op.f("ix_queries_thread_key"), ["thread_key"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("queries", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_queries_thread_key"))
        for name, _ in reversed(COLUMNS):
            batch_op.drop_column(name)
