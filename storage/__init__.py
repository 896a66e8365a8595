"""Persistence for the bot: one SQLAlchemy Core implementation of `bot.store.Store`.

SQLite (aiosqlite) is the embedded default; PostgreSQL (asyncpg) serves several replicas.
Both share one schema, one set of queries and the Alembic migrations in `migrations/`,
which run every time a store is opened.
"""

from __future__ import annotations

from storage.access import DatabaseUnavailable, check_server, check_sqlite_path
from storage.sql import SqlStore, alembic_config, create_engine
from storage.urls import async_url, parse_url, redact_url, sqlite_path

__all__ = [
    "DatabaseUnavailable",
    "SqlStore",
    "alembic_config",
    "async_url",
    "open_store",
    "redact_url",
]


async def open_store(database_url: str) -> SqlStore:
    """Open `DATABASE_URL` (`sqlite:///…` or `postgresql://…`), migrated to the latest schema.

    A SQLite file's folder is created if missing. Raises ValueError for an unsupported URL,
    and `DatabaseUnavailable` (one line naming the path or server) when the folder or file
    cannot be written or the server cannot be reached.
    """
    url = parse_url(database_url)
    path = sqlite_path(url)
    if path is not None:
        check_sqlite_path(path)
    store = SqlStore(create_engine(url))
    try:
        if path is None and url.get_backend_name() != "sqlite":
            await check_server(store.engine, url)
        await store.upgrade()
    except BaseException:
        await store.close()
        raise
    return store
