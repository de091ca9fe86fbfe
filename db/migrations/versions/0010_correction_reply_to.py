"""corrections: the query log keeps where a reviewer's correction can be posted back

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-07
"""

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("queries", schema=None) as batch_op:
        # A Teams question's conversation reference (service URL, conversation, activity
        # id, bot): a proactive reply needs it. Slack's thread is already in thread_key.
        batch_op.add_column(sa.Column("reply_to", sa.JSON(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("queries", schema=None) as batch_op:
        batch_op.drop_column("reply_to")
