"""Can the store be reached at all? Checked before migrating, so a wrong path or an
unreachable server ends in one line that names it and says what to do, not a traceback."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from sqlalchemy.engine import URL
from sqlalchemy.ext.asyncio import AsyncEngine

_SQLITE_HINT = (
    "set DATABASE_URL to a file in a folder this user can write, "
    "e.g. sqlite:////absolute/path/imagine-bot.db"
)


class DatabaseUnavailable(Exception):
    """The database cannot be opened; the message is one line naming where and what to do."""


def _reason(exc: OSError) -> str:
    return exc.strerror or str(exc) or type(exc).__name__


def check_sqlite_path(path: Path) -> None:
    """Create `path`'s folder if missing and make sure the folder and the file (if it
    exists) can be written: SQLite writes its journal next to the file."""
    shown = Path(os.path.abspath(path))
    folder = shown.parent
    if folder.exists() and not folder.is_dir():
        raise DatabaseUnavailable(
            f"the database folder {folder} is a file, not a folder; {_SQLITE_HINT}"
        )
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise DatabaseUnavailable(
            f"cannot create the database folder {folder} ({_reason(exc)}); {_SQLITE_HINT}"
        ) from None
    try:
        with tempfile.TemporaryFile(dir=folder, prefix=".imagine-bot-check-"):
            pass
    except OSError as exc:
        raise DatabaseUnavailable(
            f"cannot write in the database folder {folder} ({_reason(exc)}); "
            f"give this user write access to it, or {_SQLITE_HINT}"
        ) from None
    if shown.is_dir():
        raise DatabaseUnavailable(
            f"the database path {shown} is a folder, not a file; {_SQLITE_HINT}"
        )
    if shown.exists():
        try:
            with shown.open("r+b"):
                pass
        except OSError as exc:
            raise DatabaseUnavailable(
                f"cannot write the database file {shown} ({_reason(exc)}); "
                f"give this user write access to it, or {_SQLITE_HINT}"
            ) from None


def _innermost(exc: BaseException) -> BaseException:
    """The driver's own error behind SQLAlchemy's wrappers (it has the useful words)."""
    seen: set[int] = set()
    while id(exc) not in seen:
        seen.add(id(exc))
        inner = getattr(exc, "orig", None) or exc.__cause__
        if not isinstance(inner, BaseException):
            break
        exc = inner
    return exc


async def check_server(engine: AsyncEngine, url: URL) -> None:
    """Open (and close) one connection to a database server, or say in one line why not."""
    try:
        async with engine.connect():
            pass
    except Exception as exc:
        inner = _innermost(exc)
        if isinstance(inner, OSError):
            reason = _reason(inner)
        else:
            reason = str(inner).strip().splitlines()[0] if str(inner).strip() else ""
            reason = reason or type(inner).__name__
        where = f"{url.host or 'localhost'}:{url.port or 5432}"
        raise DatabaseUnavailable(
            f"cannot connect to PostgreSQL at {where} (database {url.database!r}, "
            f"user {url.username!r}): {reason}; check that the server is running and "
            "reachable from here, and the host, port, user, password and database name "
            "in DATABASE_URL"
        ) from None
