"""Shared by the whole suite: a real SQLite store, a PostgreSQL server, the Slack fake, and
bot processes.

PostgreSQL comes from `IMAGINE_TEST_POSTGRES_URL` (a server where the user may CREATE
DATABASE) or, failing that, from a throwaway cluster built with Debian's binaries
(`/usr/lib/postgresql/*/bin`) once per session; without both, tests that need it skip.
"""

from __future__ import annotations

import contextlib
import glob
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import asyncpg
import pytest
from sqlalchemy.engine import make_url

from bot.store import Store
from storage import open_store
from tests.fakes.slack_server import FakeSlack

POSTGRES_URL_ENV = "IMAGINE_TEST_POSTGRES_URL"

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


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _postgres_bindir() -> Path | None:
    found = glob.glob("/usr/lib/postgresql/*/bin/initdb")
    if not found:
        return None
    newest = max(found, key=lambda path: int(Path(path).parts[-3]))
    return Path(newest).parent


@pytest.fixture(scope="session")
def postgres_server_url() -> Iterator[str]:
    """A PostgreSQL server URL (maintenance database) for the whole session."""
    configured = os.environ.get(POSTGRES_URL_ENV)
    if configured:
        yield configured
        return
    bindir = _postgres_bindir()
    if bindir is None:
        pytest.skip("PostgreSQL not available")
    # initdb refuses to run as root: run the cluster as the `postgres` system user then.
    as_owner = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
    root = Path(tempfile.mkdtemp(prefix="imagine-pg-"))  # under /tmp: reachable by postgres
    if as_owner:
        shutil.chown(root, "postgres", "postgres")
    data, log, port = root / "data", root / "server.log", _free_port()
    options = (
        f"-c listen_addresses=127.0.0.1 -p {port} -c unix_socket_directories={root}"
        " -c fsync=off -c synchronous_commit=off -c full_page_writes=off"
    )

    def run(*args: str) -> None:
        subprocess.run([*as_owner, *args], check=True, capture_output=True, timeout=120)

    try:
        run(
            str(bindir / "initdb"),
            "-D",
            str(data),
            "-U",
            "postgres",
            "-A",
            "trust",
            "-E",
            "UTF8",
            "--locale=C",
            "--no-sync",
        )
        run(str(bindir / "pg_ctl"), "-D", str(data), "-l", str(log), "-o", options, "-w", "start")
    except subprocess.CalledProcessError as exc:
        server_log = log.read_text() if log.exists() else ""
        shutil.rmtree(root, ignore_errors=True)
        raise RuntimeError(f"cannot start PostgreSQL: {exc.stderr!r}\n{server_log}") from exc
    try:
        yield f"postgresql://postgres@127.0.0.1:{port}/postgres"
    finally:
        subprocess.run(
            [*as_owner, str(bindir / "pg_ctl"), "-D", str(data), "-m", "immediate", "stop"],
            capture_output=True,
            timeout=60,
        )
        shutil.rmtree(root, ignore_errors=True)


@contextlib.asynccontextmanager
async def fresh_database(server_url: str) -> AsyncIterator[str]:
    """A new, empty PostgreSQL database on `server_url`, dropped afterwards."""
    server = make_url(server_url).set(drivername="postgresql")
    name = f"imagine_test_{uuid.uuid4().hex[:12]}"
    admin = await asyncpg.connect(server.render_as_string(hide_password=False))
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()
    try:
        yield server.set(database=name).render_as_string(hide_password=False)
    finally:
        admin = await asyncpg.connect(server.render_as_string(hide_password=False))
        try:
            await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            await admin.close()


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
