"""DATABASE_URL handling: users write SQLAlchemy's plain forms; the store needs async drivers."""

from __future__ import annotations

import re
from pathlib import Path

from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError

_ASYNC_DRIVERS: dict[str, str] = {
    "sqlite": "sqlite+aiosqlite",
    "sqlite+aiosqlite": "sqlite+aiosqlite",
    "postgres": "postgresql+asyncpg",
    "postgresql": "postgresql+asyncpg",
    "postgresql+asyncpg": "postgresql+asyncpg",
}


def parse_url(database_url: str) -> URL:
    """`database_url` with its async driver: sqlite → aiosqlite, postgres(ql) → asyncpg.

    `sslmode=` (libpq's spelling, common in hosted PostgreSQL URLs) becomes asyncpg's `ssl=`.
    Raises ValueError naming the problem for anything else.
    """
    try:
        url = make_url(database_url.strip())
    except ArgumentError as exc:
        raise ValueError(f"not a database URL: {redact_url(database_url)}") from exc
    driver = _ASYNC_DRIVERS.get(url.drivername)
    if driver is None:
        raise ValueError(
            f"unsupported database {url.drivername!r}: use sqlite:///path.db or postgresql://…"
        )
    url = url.set(drivername=driver)
    if driver.startswith("postgresql") and "sslmode" in url.query:
        query = dict(url.query)
        sslmode = query.pop("sslmode")
        query.setdefault("ssl", sslmode)
        url = url.set(query=query)
    return url


def async_url(database_url: str) -> str:
    """`parse_url` as a string, password included (for engines, never for logs)."""
    return parse_url(database_url).render_as_string(hide_password=False)


def sqlite_path(url: URL) -> Path | None:
    """The file behind a SQLite URL, or None for PostgreSQL and in-memory databases."""
    if url.get_backend_name() != "sqlite":
        return None
    database = url.database or ""
    if database in ("", ":memory:") or database.startswith("file:"):
        return None
    return Path(database)


def redact_url(url: str | URL) -> str:
    """The URL with its password replaced by ***, safe to log."""
    if isinstance(url, URL):
        return url.render_as_string(hide_password=True)
    try:
        return make_url(url).render_as_string(hide_password=True)
    except ArgumentError:
        return re.sub(r"(://[^:/@]*:)[^@]*@", r"\1***@", url)
