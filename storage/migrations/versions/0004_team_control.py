"""Team control: the jobs table is the ledger; admins' settings per workspace.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-03

Every job now records its workspace and channel (copied from its thread, so counting a
workspace's day needs no join), its estimated cost in US$ (fixed when it is accepted) and
the tokens its answer used. Jobs recorded before this get their thread's place, a cost of 0
(their price was never recorded) and their turn's tokens. `workspace_settings` holds what a
workspace's admins set at run time, which wins over the environment.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("jobs") as batch:
        batch.add_column(sa.Column("workspace", sa.String(255), nullable=False, server_default=""))
        batch.add_column(sa.Column("channel", sa.String(255), nullable=False, server_default=""))
        batch.add_column(sa.Column("cost_usd", sa.Double(), nullable=False, server_default="0"))
        batch.add_column(sa.Column("tokens", sa.Integer(), nullable=False, server_default="0"))
    op.execute(
        "UPDATE jobs SET "
        "workspace = (SELECT threads.workspace FROM threads WHERE threads.id = jobs.thread_id), "
        "channel = (SELECT threads.channel FROM threads WHERE threads.id = jobs.thread_id)"
    )
    op.execute(
        "UPDATE jobs SET tokens = "
        "(SELECT turns.total_tokens FROM turns WHERE turns.id = jobs.turn_id) "
        "WHERE turn_id IS NOT NULL"
    )
    with op.batch_alter_table("jobs") as batch:
        for column in ("workspace", "channel", "cost_usd", "tokens"):
            batch.alter_column(column, server_default=None)
        batch.create_index(
            "ix_jobs_platform_workspace_created_at", ["platform", "workspace", "created_at"]
        )
        batch.create_index("ix_jobs_created_at", ["created_at"])
    op.create_table(
        "workspace_settings",
        sa.Column("platform", sa.String(32), nullable=False),
        sa.Column("workspace", sa.String(255), nullable=False),
        sa.Column("settings", sa.JSON(), nullable=False),
        sa.Column("updated_by", sa.String(255), nullable=False),
        sa.Column("updated_at", sa.Double(), nullable=False),
        sa.PrimaryKeyConstraint("platform", "workspace", name="pk_workspace_settings"),
    )


def downgrade() -> None:
    op.drop_table("workspace_settings")
    with op.batch_alter_table("jobs") as batch:
        batch.drop_index("ix_jobs_created_at")
        batch.drop_index("ix_jobs_platform_workspace_created_at")
        for column in ("tokens", "cost_usd", "channel", "workspace"):
            batch.drop_column(column)
