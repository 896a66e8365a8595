"""Team control: the jobs table is the ledger; admins' settings per workspace.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-03

Every job now records its workspace and channel (copied from its thread, so counting a
workspace's day needs no join), its estimated cost in US$ (fixed when it is accepted) and
the tokens its answer used. Jobs recorded before this get their thread's place, their
turn's tokens, and — never priced — Gemini 2.5 Flash Image's list price (US$ 0.039) when
that was their model, else 0, so the month of the upgrade still counts what it spent.
`workspace_settings` holds what a workspace's admins set at run time, which wins over the
environment.
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
    # the month of the upgrade keeps counting what was spent before it: list price
    op.execute(
        "UPDATE jobs SET cost_usd = 0.039 WHERE model LIKE 'gemini-2.5-flash-image%' "
        "AND status NOT IN ('failed', 'cancelled')"
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
        batch.create_index("ix_jobs_user_id_created_at", ["user_id", "created_at"])
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
        batch.drop_index("ix_jobs_user_id_created_at")
        batch.drop_index("ix_jobs_created_at")
        batch.drop_index("ix_jobs_platform_workspace_created_at")
        for column in ("tokens", "cost_usd", "channel", "workspace"):
            batch.drop_column(column)
