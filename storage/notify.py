"""PostgreSQL LISTEN/NOTIFY for the job queue: other processes learn of new work at once.

Every transaction that changes what a worker could claim (a new job, a finished one, a
release, a cancel request) runs `pg_notify(JOBS_CHANNEL, '')`; PostgreSQL delivers it when
the transaction commits. One dedicated asyncpg connection per process listens.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from typing import Any

import asyncpg
from sqlalchemy.engine import URL

log = logging.getLogger(__name__)

JOBS_CHANNEL = "imagine_jobs"


async def listen_for_jobs(url: URL, wake: Callable[[], None]) -> Callable[[], Awaitable[None]]:
    """Listen on `JOBS_CHANNEL`, calling `wake` for each notification; returns the closer.

    A lost connection is only logged: workers poll as well, so nothing waits for ever.
    """
    dsn = url.set(drivername="postgresql").render_as_string(hide_password=False)
    connection: Any = await asyncpg.connect(dsn)

    def on_notify(*_: object) -> None:
        wake()

    def on_lost(*_: object) -> None:
        log.warning("lost the PostgreSQL LISTEN connection; polling for new jobs instead")

    await connection.add_listener(JOBS_CHANNEL, on_notify)
    connection.add_termination_listener(on_lost)

    async def close() -> None:
        with contextlib.suppress(Exception):
            await asyncio.wait_for(connection.close(), 5)

    return close
