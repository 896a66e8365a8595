"""Shared by the whole suite: a real SQLite store, the Slack fake, and bot processes."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from bot.store import Store
from storage import open_store
from tests.fakes.slack_server import FakeSlack

MACHINE_SETTINGS = (
    "IMAGINE_",
    "NEXCONN_",
    "GMI_",
    "GEMINI_",
    "GOOGLE_API_KEY",
    "DISCORD_",
    "SLACK_",
    "DATABASE_URL",
    "LOG_",
)
"""Variables a developer's shell may hold that must not leak into a bot under test."""


def bot_env(tmp_path: Path, **settings: str) -> dict[str, str]:
    """The environment of a bot process under test: none of the machine's settings, a
    database and output folder of its own, and `settings`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(MACHINE_SETTINGS)}
    env.update(
        DATABASE_URL=f"sqlite:///{tmp_path}/state/bot.db",
        IMAGINE_OUTPUT_DIR=str(tmp_path / "out"),
    )
    env.update(settings)
    return env


def run_cli(
    tmp_path: Path, *args: str, stdin: str = "", **settings: str
) -> subprocess.CompletedProcess[str]:
    """`python -m bot ARGS` as a user runs it, in `tmp_path` (so no stray `.env` is read)."""
    return subprocess.run(
        [sys.executable, "-m", "bot", *args],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=60,
        env=bot_env(tmp_path, **settings),
        cwd=tmp_path,
    )


@pytest.fixture
def db_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path}/imagine.db"


@pytest.fixture
async def sqlite_store(db_url: str) -> AsyncIterator[Store]:
    store = await open_store(db_url)
    yield store
    await store.close()


@pytest.fixture
async def slack() -> AsyncIterator[FakeSlack]:
    fake = FakeSlack()
    await fake.start()
    yield fake
    await fake.close()
