"""Backends for the storage contract suite: every test runs on SQLite and on PostgreSQL.

PostgreSQL comes from `IMAGINE_TEST_POSTGRES_URL` (a server where the user may CREATE
DATABASE) or, failing that, from a throwaway cluster built with Debian's binaries
(`/usr/lib/postgresql/*/bin`) once per session. Each test gets a fresh database either way.
Without both, the PostgreSQL leg is skipped.
"""

from __future__ import annotations

import glob
import os
import shutil
import socket
import subprocess
import tempfile
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import asyncpg
import pytest
from sqlalchemy.engine import make_url

from storage import SqlStore, open_store

POSTGRES_URL_ENV = "IMAGINE_TEST_POSTGRES_URL"


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


@pytest.fixture(params=["sqlite", "postgres"])
async def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[str]:
    """A DATABASE_URL for an empty database of the parametrized engine."""
    if request.param == "sqlite":
        # A folder that does not exist yet: open_store must create it.
        yield f"sqlite:///{tmp_path}/data/imagine-bot.db"
        return
    server = make_url(request.getfixturevalue("postgres_server_url")).set(drivername="postgresql")
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
async def store(database_url: str) -> AsyncIterator[SqlStore]:
    opened = await open_store(database_url)
    try:
        yield opened
    finally:
        await opened.close()
