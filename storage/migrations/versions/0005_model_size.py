"""Models with sizes: a job and a turn remember the output size they asked for.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-03

`size` is `1K`, `2K` or `4K` for models that offer a choice (Gemini 3 Pro Image), and NULL
for the model's only size. An edit continues on its thread's model and size.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    for table in ("jobs", "turns"):
        with op.batch_alter_table(table) as batch:
            batch.add_column(sa.Column("size", sa.String(8), nullable=True))


def downgrade() -> None:
    for table in ("turns", "jobs"):
        with op.batch_alter_table(table) as batch:
            batch.drop_column("size")
