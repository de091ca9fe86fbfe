"""scheduler jobs: kbot worker's APScheduler job store lives in the database

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-07
"""

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # The layout APScheduler 3's SQLAlchemyJobStore creates; made here so that a database
    # user without CREATE rights can run the worker, and `kbot db status` knows the table.
    op.create_table(
        "kbot_scheduler_jobs",
        sa.Column("id", sa.Unicode(length=191), nullable=False),
        sa.Column("next_run_time", sa.Float(precision=25), nullable=True),
        sa.Column("job_state", sa.LargeBinary(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index(
        op.f("ix_kbot_scheduler_jobs_next_run_time"),
        "kbot_scheduler_jobs",
        ["next_run_time"],
        unique=False,
    )


def downgrade() -> None:
    op.drop_index(op.f("ix_kbot_scheduler_jobs_next_run_time"), table_name="kbot_scheduler_jobs")
    op.drop_table("kbot_scheduler_jobs")
