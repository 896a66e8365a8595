"""`imagine-bot purge` as cron runs it: a real process on a database with old turns."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

from storage import open_store
from tests.conftest import run_cli
from tests.storage.test_retention import made
from tests.storage.test_store_contract import image, thread


async def _database(url: str) -> None:
    store = await open_store(url)
    try:
        await store.create_thread(thread(1))
        await store.create_thread(thread(2))
        await made(store, "thread-1", "old", image("old"), created_at=1000.0)
        await made(store, "thread-2", "new", image("new"), created_at=time.time())
        async with store.engine.begin() as conn:  # stored 40 days ago
            await conn.exec_driver_sql(f"UPDATE images SET created_at = {time.time() - 40 * 86400}")
    finally:
        await store.close()


async def _missing(url: str) -> set[str]:
    store = await open_store(url)
    try:
        return await store.missing_images([image("old").sha256, image("new").sha256])
    finally:
        await store.close()


def test_purge_removes_old_images_and_keeps_new_ones(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/state/bot.db"
    (tmp_path / "state").mkdir()
    asyncio.run(_database(url))

    forever = run_cli(tmp_path, "purge")
    assert forever.returncode == 0, forever.stderr
    assert "keep forever" in forever.stdout
    assert asyncio.run(_missing(url)) == set()

    done = run_cli(tmp_path, "purge", IMAGINE_RETENTION_DAYS="30")
    assert done.returncode == 0, done.stderr
    assert "removed 1 image(s)" in done.stdout and "30 day(s)" in done.stdout
    assert asyncio.run(_missing(url)) == {image("old").sha256}

    again = run_cli(tmp_path, "purge", "--days", "30")
    assert again.returncode == 0 and "removed 0 image(s)" in again.stdout
    assert "purge" in run_cli(tmp_path, "purge", "--help").stdout
