"""Upgrading a database that has history: rows written before team control and models
(revision 0003) come out of the migrations counted, placed and priced, on both engines."""

from __future__ import annotations

from typing import Any

import pytest
import sqlalchemy as sa
from alembic import command
from sqlalchemy.engine import Connection

from bot.models import JobStatus
from storage import alembic_config, open_store
from storage.sql import create_engine
from storage.urls import parse_url, sqlite_path

FLASH = "gemini-2.5-flash-image"


def _upgrade_to(revision: str) -> Any:
    def run(connection: Connection) -> None:
        config = alembic_config()
        config.attributes["connection"] = connection
        command.upgrade(config, revision)

    return run


def _old_rows(connection: Connection) -> None:
    """What a bot at revision 0003 wrote: a thread, an image, a turn, a delivered job and a
    failed one (reflected tables: the columns of that revision, not of today's schema)."""
    meta = sa.MetaData()
    threads, images, turns, jobs = (
        sa.Table(name, meta, autoload_with=connection)
        for name in ("threads", "images", "turns", "jobs")
    )
    connection.execute(
        threads.insert().values(
            id="th1",
            platform="discord",
            workspace="guild-9",
            channel="chan-3",
            thread="anchor",
            created_by="alice",
            title="a fox",
            created_at=1000.0,
            updated_at=1000.0,
        )
    )
    connection.execute(
        images.insert().values(
            sha256="a" * 64, mime="image/png", data=b"png", size=3, created_at=1000.0
        )
    )
    connection.execute(
        turns.insert().values(
            id="tu1",
            thread_id="th1",
            parent_id=None,
            user_id="alice",
            kind="imagine",
            prompt="a fox",
            reference_shas=[],
            result_sha="a" * 64,
            text="",
            aspect_ratio="1:1",
            provider="nexconn",
            model=FLASH,
            provider_state=None,
            input_tokens=10,
            output_tokens=1290,
            total_tokens=1300,
            created_at=1001.0,
            duration_s=4.0,
            deleted=False,
        )
    )
    job: dict[str, Any] = {
        "thread_id": "th1",
        "user_id": "alice",
        "kind": "imagine",
        "prompt": "a fox",
        "reference_shas": [],
        "aspect_ratio": "1:1",
        "parent_turn_id": None,
        "follow_latest": False,
        "destination": None,
        "provider": "nexconn",
        "model": FLASH,
        "provider_request_id": None,
        "created_at": 1000.5,
        "started_at": 1000.6,
        "finished_at": 1001.0,
        "platform": "discord",
        "owner": None,
        "lease_until": None,
        "settled": True,
        "cancel_requested": False,
    }
    connection.execute(
        jobs.insert().values(id="j-made", status="delivered", turn_id="tu1", error=None, **job)
    )
    connection.execute(
        jobs.insert().values(
            id="j-failed", status="failed", turn_id=None, error="unavailable: down", **job
        )
    )


async def test_rows_from_before_team_control_are_placed_priced_and_counted(
    database_url: str,
) -> None:
    url = parse_url(database_url)
    path = sqlite_path(url)
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
    engine = create_engine(url)
    try:
        async with engine.begin() as conn:
            await conn.run_sync(_upgrade_to("0003"))
            await conn.run_sync(_old_rows)
    finally:
        await engine.dispose()

    store = await open_store(database_url)  # migrates to head
    try:
        made = await store.get_job("j-made")
        failed = await store.get_job("j-failed")
        assert made is not None and failed is not None
        assert made.status is JobStatus.DELIVERED and made.size is None
        assert made.cost_usd == pytest.approx(0.039)  # list price: the month still counts it
        assert failed.cost_usd == 0.0  # given back, never priced
        lines = await store.usage_lines(0.0, 2000.0)
        assert [(ln.workspace, ln.user, ln.images) for ln in lines] == [("guild-9", "alice", 1)]
        assert lines[0].cost_usd == pytest.approx(0.039)
        turn = await store.get_turn("tu1")
        assert turn is not None and turn.size is None and turn.model == FLASH
        async with store.engine.connect() as conn:
            row = (
                await conn.execute(sa.text("SELECT channel, tokens FROM jobs WHERE id = 'j-made'"))
            ).one()
        assert (row.channel, row.tokens) == ("chan-3", 1300)
    finally:
        await store.close()
