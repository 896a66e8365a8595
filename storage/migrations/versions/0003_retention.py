"""Retention: an image's bytes can be removed while the turns that used it stay.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-03

`images.purged_at` marks an image whose bytes retention (or deleting its turns) removed;
`data` is then empty. SQLite databases also switch to `auto_vacuum=INCREMENTAL` so a purge
gives its space back: new files get it from the connection before any table exists, and an
existing file needs one `VACUUM`, which cannot run inside this migration's transaction, so
`SqlStore.upgrade` runs it once, right after the migrations, when the file still says 0.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("images") as batch:
        batch.add_column(sa.Column("purged_at", sa.Double(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("images") as batch:
        batch.drop_column("purged_at")
