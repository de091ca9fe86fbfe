"""feedback that changes answers: who may see what a question was asked for, its embedding
and confidence; leads' curations (pins and suppressions); reviews of the review queue

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-07
"""

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None

COLUMNS = (
    # The requester's audiences, sorted and comma-joined: votes count only within one.
    ("audiences", sa.String(length=1024)),
    # The question's embedding (float32 bytes): "close" questions share votes and pins.
    ("question_vec", sa.LargeBinary()),
    # How close the best passage was in meaning; the review queue takes the lowest.
    ("confidence", sa.Float()),
    # What feedback and curations did to the ranking: [{"kind", "connector", "path", ...}]
    ("adjustments", sa.JSON()),
)


def upgrade() -> None:
    with op.batch_alter_table("queries", schema=None) as batch_op:
        for name, type_ in COLUMNS:
            batch_op.add_column(sa.Column(name, type_, nullable=True))
    op.create_table(
        "curations",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("action", sa.String(length=16), nullable=False),
        sa.Column("question", sa.Text(), nullable=False),
        sa.Column("question_vec", sa.LargeBinary(), nullable=True),
        sa.Column("connector", sa.String(length=64), nullable=False),
        sa.Column("path", sa.String(length=1024), nullable=False),
        sa.Column("created_by", sa.String(length=255), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("query_id", sa.String(length=32), nullable=True),
        sa.Column("removed_by", sa.String(length=255), nullable=True),
        sa.Column("removed_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index(op.f("ix_curations_removed_at"), "curations", ["removed_at"], unique=False)
    op.create_table(
        "reviews",
        sa.Column("query_id", sa.String(length=32), nullable=False),
        sa.Column("outcome", sa.String(length=16), nullable=False),
        sa.Column("why", sa.String(length=16), nullable=False),
        sa.Column("reviewer", sa.String(length=255), nullable=False),
        sa.Column("reviewed_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("connector", sa.String(length=64), nullable=True),
        sa.Column("path", sa.String(length=1024), nullable=True),
        sa.Column("curation_id", sa.Integer(), nullable=True),
        sa.Column("note", sa.Text(), nullable=True),
        sa.ForeignKeyConstraint(["query_id"], ["queries.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("query_id"),
    )


def downgrade() -> None:
    op.drop_table("reviews")
    op.drop_index(op.f("ix_curations_removed_at"), table_name="curations")
    op.drop_table("curations")
    with op.batch_alter_table("queries", schema=None) as batch_op:
        for name, _ in reversed(COLUMNS):
            batch_op.drop_column(name)
