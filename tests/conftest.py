"""Fixtures shared by the whole suite: a real SQLite store in a temporary folder."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from bot.store import Store
from storage import open_store


@pytest.fixture
def db_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path}/imagine.db"


@pytest.fixture
async def sqlite_store(db_url: str) -> AsyncIterator[Store]:
    store = await open_store(db_url)
    yield store
    await store.close()
