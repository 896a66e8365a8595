"""Backends for the storage contract suite: every test runs on SQLite and on PostgreSQL.

PostgreSQL comes from the session's server (`tests/conftest.py`: `IMAGINE_TEST_POSTGRES_URL`
or a throwaway cluster); each test gets a fresh database. Without one, that leg is skipped.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest

from storage import SqlStore, open_store
from tests.conftest import fresh_database


@pytest.fixture(params=["sqlite", "postgres"])
async def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[str]:
    """A DATABASE_URL for an empty database of the parametrized engine."""
    if request.param == "sqlite":
        # A folder that does not exist yet: open_store must create it.
        yield f"sqlite:///{tmp_path}/data/imagine-bot.db"
        return
    async with fresh_database(request.getfixturevalue("postgres_server_url")) as url:
        yield url


@pytest.fixture
async def store(database_url: str) -> AsyncIterator[SqlStore]:
    opened = await open_store(database_url)
    try:
        yield opened
    finally:
        await opened.close()


Opener = Callable[[], Awaitable[SqlStore]]
"""Opens one more store on the test's database."""


@pytest.fixture
async def open_more(database_url: str) -> AsyncIterator[Opener]:
    """More stores on the same database, each with its own engine and connections: other
    processes' view of it, so races between them are real transactions racing."""
    opened: list[SqlStore] = []

    async def more() -> SqlStore:
        store = await open_store(database_url)
        opened.append(store)
        return store

    yield more
    for store in opened:
        await store.close()
