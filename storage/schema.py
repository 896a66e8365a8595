"""The tables, in SQLAlchemy Core, shared by SQLite and PostgreSQL.

This is the shape the queries in `storage.sql` rely on; the versioned history that creates
it lives in `storage/migrations` (a test checks the two never drift apart). Times are epoch
seconds as doubles, like `bot.models`; JSON values use `sa.JSON` everywhere (TEXT on SQLite,
`json` on PostgreSQL), so both engines read back the same Python values.
"""

from __future__ import annotations

import sqlalchemy as sa

NAMING_CONVENTION: dict[str, str] = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}
"""Named constraints, so later migrations (and SQLite batch mode) can address them."""

metadata = sa.MetaData(naming_convention=NAMING_CONVENTION)

images = sa.Table(
    "images",
    metadata,
    sa.Column("sha256", sa.String(64), primary_key=True),
    sa.Column("mime", sa.String(100), nullable=False),
    sa.Column("data", sa.LargeBinary(), nullable=False),
    sa.Column("size", sa.Integer(), nullable=False),
    sa.Column("created_at", sa.Double(), nullable=False),
    sa.Column("purged_at", sa.Double(), nullable=True),
)
"""Images by sha256, shared by every turn and job that uses them. Retention and deletion
empty `data` (and `size`) and stamp `purged_at`: the row stays, so the turns that used it
keep their foreign key and their text, and a reader sees the image as gone
(`SqlStore.purge_images`)."""

threads = sa.Table(
    "threads",
    metadata,
    sa.Column("id", sa.String(64), primary_key=True),
    sa.Column("platform", sa.String(32), nullable=False),
    sa.Column("workspace", sa.String(255), nullable=False),
    sa.Column("channel", sa.String(255), nullable=False),
    sa.Column("thread", sa.String(255), nullable=False),
    sa.Column("created_by", sa.String(255), nullable=False),
    sa.Column("title", sa.Text(), nullable=False),
    sa.Column("created_at", sa.Double(), nullable=False),
    sa.Column("updated_at", sa.Double(), nullable=False),
    sa.UniqueConstraint("platform", "workspace", "channel", "thread"),
    sa.Index(None, "platform", "workspace", "updated_at"),
)

turns = sa.Table(
    "turns",
    metadata,
    sa.Column("id", sa.String(64), primary_key=True),
    sa.Column("thread_id", sa.String(64), sa.ForeignKey("threads.id"), nullable=False),
    sa.Column("parent_id", sa.String(64), sa.ForeignKey("turns.id"), nullable=True),
    sa.Column("user_id", sa.String(255), nullable=False),
    sa.Column("kind", sa.String(16), nullable=False),
    sa.Column("prompt", sa.Text(), nullable=False),
    sa.Column("reference_shas", sa.JSON(), nullable=False),
    sa.Column("result_sha", sa.String(64), sa.ForeignKey("images.sha256"), nullable=False),
    sa.Column("text", sa.Text(), nullable=False),
    sa.Column("aspect_ratio", sa.String(16), nullable=False),
    sa.Column("provider", sa.String(64), nullable=False),
    sa.Column("model", sa.String(255), nullable=False),
    sa.Column("provider_state", sa.JSON(), nullable=True),
    sa.Column("input_tokens", sa.Integer(), nullable=False),
    sa.Column("output_tokens", sa.Integer(), nullable=False),
    sa.Column("total_tokens", sa.Integer(), nullable=False),
    sa.Column("created_at", sa.Double(), nullable=False),
    sa.Column("duration_s", sa.Double(), nullable=False),
    sa.Column("deleted", sa.Boolean(), nullable=False, server_default=sa.false()),
    sa.Column("size", sa.String(8), nullable=True),
    sa.Index(None, "thread_id", "created_at"),
    sa.Index(None, "parent_id"),
)

jobs = sa.Table(
    "jobs",
    metadata,
    sa.Column("id", sa.String(64), primary_key=True),
    sa.Column("thread_id", sa.String(64), sa.ForeignKey("threads.id"), nullable=False),
    sa.Column("user_id", sa.String(255), nullable=False),
    sa.Column("kind", sa.String(16), nullable=False),
    sa.Column("prompt", sa.Text(), nullable=False),
    sa.Column("reference_shas", sa.JSON(), nullable=False),
    sa.Column("aspect_ratio", sa.String(16), nullable=False),
    sa.Column("parent_turn_id", sa.String(64), sa.ForeignKey("turns.id"), nullable=True),
    sa.Column("follow_latest", sa.Boolean(), nullable=False),
    sa.Column("destination", sa.JSON(), nullable=True),
    sa.Column("provider", sa.String(64), nullable=False),
    sa.Column("model", sa.String(255), nullable=False),
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("provider_request_id", sa.String(255), nullable=True),
    sa.Column("turn_id", sa.String(64), sa.ForeignKey("turns.id"), nullable=True),
    sa.Column("error", sa.Text(), nullable=True),
    sa.Column("created_at", sa.Double(), nullable=False),
    sa.Column("started_at", sa.Double(), nullable=True),
    sa.Column("finished_at", sa.Double(), nullable=True),
    sa.Column("platform", sa.String(32), nullable=False),
    sa.Column("owner", sa.String(64), nullable=True),
    sa.Column("lease_until", sa.Double(), nullable=True),
    sa.Column("settled", sa.Boolean(), nullable=False, server_default=sa.false()),
    sa.Column("cancel_requested", sa.Boolean(), nullable=False, server_default=sa.false()),
    sa.Column("workspace", sa.String(255), nullable=False),
    sa.Column("channel", sa.String(255), nullable=False),
    sa.Column("cost_usd", sa.Double(), nullable=False),
    sa.Column("tokens", sa.Integer(), nullable=False),
    sa.Column("size", sa.String(8), nullable=True),
    sa.Index(None, "status"),
    sa.Index(None, "thread_id"),
    sa.Index(None, "settled"),
    sa.Index(None, "finished_at"),
    sa.Index(None, "platform", "workspace", "created_at"),
    sa.Index(None, "created_at"),
    sa.Index(None, "user_id", "created_at"),
)
"""The queue and the ledger. Unsettled rows (`settled` false) are what workers claim;
`owner` and `lease_until` say who holds one and until when. Every accepted job that did not
fail and was not cancelled counts against its workspace's and user's limits, at its
`cost_usd` (estimated when it was accepted)."""

workspace_settings = sa.Table(
    "workspace_settings",
    metadata,
    sa.Column("platform", sa.String(32), primary_key=True),
    sa.Column("workspace", sa.String(255), primary_key=True),
    sa.Column("settings", sa.JSON(), nullable=False),
    sa.Column("updated_by", sa.String(255), nullable=False),
    sa.Column("updated_at", sa.Double(), nullable=False),
)
"""What a workspace's admins set at run time (`bot.policy.Overrides` as JSON); it wins over
the environment."""

message_links = sa.Table(
    "message_links",
    metadata,
    sa.Column("platform", sa.String(32), primary_key=True),
    sa.Column("message_id", sa.String(255), primary_key=True),
    sa.Column("turn_id", sa.String(64), sa.ForeignKey("turns.id"), nullable=False),
    sa.Column("created_at", sa.Double(), nullable=False),
    sa.Index(None, "turn_id"),
)

events = sa.Table(
    "events",
    metadata,
    sa.Column("platform", sa.String(32), primary_key=True),
    sa.Column("event_id", sa.String(255), primary_key=True),
    sa.Column("created_at", sa.Double(), nullable=False),
)

kv = sa.Table(
    "kv",
    metadata,
    sa.Column("key", sa.String(255), primary_key=True),
    sa.Column("value", sa.JSON(), nullable=True),
)
