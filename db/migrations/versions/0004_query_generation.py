"""query log: how the answer was made, the model's usage and cost, the prompt

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-27
"""

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

COLUMNS = (
    ("mode", sa.String(length=16)),
    ("model", sa.String(length=128)),
    ("input_tokens", sa.Integer()),
    ("output_tokens", sa.Integer()),
    ("cached_tokens", sa.Integer()),
    ("cost_usd", sa.Float()),
    ("fallback_reason", sa.String(length=32)),
    ("prompt", sa.Text()),
)


def upgrade() -> None:
    with op.batch_alter_table("queries", schema=None) as batch_op:
        for name, type_ in COLUMNS:
            batch_op.add_column(sa.Column(name, type_, nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("queries", schema=None) as batch_op:
        for name, _ in reversed(COLUMNS):
            batch_op.drop_column(name)
