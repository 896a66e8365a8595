"""The jobs table becomes the queue: owners, leases, made/delivered, settled.

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-03

`done` jobs become `delivered` (they were posted, or lost before the upload: nothing can
tell now); every finished job is settled. Each job gets its thread's platform, so a worker
claims only jobs it can deliver.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("jobs") as batch:
        batch.add_column(sa.Column("platform", sa.String(32), nullable=False, server_default=""))
        batch.add_column(sa.Column("owner", sa.String(64), nullable=True))
        batch.add_column(sa.Column("lease_until", sa.Double(), nullable=True))
        batch.add_column(
            sa.Column("settled", sa.Boolean(), nullable=False, server_default=sa.false())
        )
        batch.add_column(
            sa.Column("cancel_requested", sa.Boolean(), nullable=False, server_default=sa.false())
        )
    op.execute("UPDATE jobs SET status = 'delivered' WHERE status = 'done'")
    op.execute(
        "UPDATE jobs SET settled = true WHERE status IN ('delivered', 'failed', 'cancelled')"
    )
    op.execute(
        "UPDATE jobs SET platform = "
        "(SELECT threads.platform FROM threads WHERE threads.id = jobs.thread_id)"
    )
    with op.batch_alter_table("jobs") as batch:
        batch.alter_column("platform", server_default=None)
        batch.create_index("ix_jobs_settled", ["settled"])
        batch.create_index("ix_jobs_finished_at", ["finished_at"])


def downgrade() -> None:
    with op.batch_alter_table("jobs") as batch:
        batch.drop_index("ix_jobs_finished_at")
        batch.drop_index("ix_jobs_settled")
        for column in ("cancel_requested", "settled", "lease_until", "owner", "platform"):
            batch.drop_column(column)
    op.execute("UPDATE jobs SET status = 'done' WHERE status IN ('made', 'delivered')")
