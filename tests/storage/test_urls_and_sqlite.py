"""DATABASE_URL conversion and how a SQLite file is opened (folder created, WAL, FKs)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
import sqlalchemy as sa

from storage import async_url, open_store, redact_url


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ("sqlite:///relative.db", "sqlite+aiosqlite:///relative.db"),
        ("sqlite:///./data/imagine-bot.db", "sqlite+aiosqlite:///./data/imagine-bot.db"),
        ("sqlite:////absolute/path.db", "sqlite+aiosqlite:////absolute/path.db"),
        ("postgresql://u:p@db:5432/bot", "postgresql+asyncpg://u:p@db:5432/bot"),
        ("postgres://u:p@db/bot", "postgresql+asyncpg://u:p@db/bot"),
        ("postgresql+asyncpg://u@db/bot", "postgresql+asyncpg://u@db/bot"),
        ("postgresql://u@db/bot?sslmode=require", "postgresql+asyncpg://u@db/bot?ssl=require"),
    ],
)
def test_async_url(given: str, expected: str) -> None:
    assert async_url(given) == expected


@pytest.mark.parametrize("bad", ["mysql://u@h/db", "not a url", "http://example.com"])
def test_unsupported_url_is_a_value_error(bad: str) -> None:
    with pytest.raises(ValueError):
        async_url(bad)


def test_redact_url_hides_the_password() -> None:
    assert redact_url("postgresql://bot:s3cr3t@db:5432/bot") == "postgresql://bot:***@db:5432/bot"
    assert "s3cr3t" not in redact_url("postgres://bot:s3cr3t@db/bot?sslmode=require")
    assert redact_url("sqlite:///./data/x.db") == "sqlite:///./data/x.db"
    assert "s3cr3t" not in redact_url("weird://bot:s3cr3t@ho st/")


async def test_sqlite_creates_folder_and_runs_in_wal_with_foreign_keys(tmp_path: Path) -> None:
    path = tmp_path / "a" / "b" / "bot.db"
    store = await open_store(f"sqlite:///{path}")
    try:
        assert path.is_file()
        async with store.engine.connect() as conn:
            assert (await conn.exec_driver_sql("PRAGMA journal_mode")).scalar_one() == "wal"
            assert (await conn.exec_driver_sql("PRAGMA foreign_keys")).scalar_one() == 1
            assert (await conn.exec_driver_sql("PRAGMA busy_timeout")).scalar_one() > 0
    finally:
        await store.close()


async def test_sqlite_relative_path_is_relative_to_the_working_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    store = await open_store("sqlite:///./data/imagine-bot.db")
    try:
        async with store.engine.connect() as conn:
            tables = await conn.run_sync(lambda c: sa.inspect(c).get_table_names())
        assert "turns" in tables
    finally:
        await store.close()
    assert (tmp_path / "data" / "imagine-bot.db").is_file()


async def test_the_sqlite_write_gate_serves_urgent_writers_first() -> None:
    """An acknowledgement path's write (an event claim) does not wait behind a burst."""
    from storage.sql import WriteGate

    gate = WriteGate()
    order: list[str] = []
    release = asyncio.Event()

    async def write(name: str, *, urgent: bool = False, hold: bool = False) -> None:
        async with gate.hold(urgent=urgent):
            order.append(name)
            if hold:
                await release.wait()

    first = asyncio.create_task(write("first", hold=True))
    await asyncio.sleep(0)
    burst = [asyncio.create_task(write(f"job-{n}")) for n in range(3)]
    cancelled = asyncio.create_task(write("gone"))
    claim = asyncio.create_task(write("claim", urgent=True))
    await asyncio.sleep(0)
    cancelled.cancel()  # a waiter that gives up never blocks the ones behind it
    release.set()
    await asyncio.gather(first, claim, *burst, return_exceptions=True)
    assert order == ["first", "claim", "job-0", "job-1", "job-2"]
