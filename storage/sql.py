"""`SqlStore`: the one implementation of `bot.store.Store`, over SQLAlchemy Core (async).

The same queries run on SQLite (aiosqlite) and PostgreSQL (asyncpg); the only dialect
branches are the `INSERT … ON CONFLICT` constructors, how SQLite connections are set up, and
the in-process write lock SQLite needs because it allows a single writer.
"""

from __future__ import annotations

import asyncio
import bisect
import logging
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from sqlalchemy import event
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import URL, Connection, Row
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine

from bot.errors import Cancelled, UserQueueFull
from bot.models import JSON, Image, Job, JobStatus, Thread, ThreadKey, Turn, TurnKind, Usage, now
from bot.policy import (
    Admission,
    Counts,
    Overrides,
    Refusal,
    Scope,
    access,
    decide,
    effective,
)
from bot.queue import ClaimRequest, QueueEntry, QueueView, last_served, plan_claims
from bot.store import PurgeResult
from bot.usage import UsageLine
from storage.notify import JOBS_CHANNEL, listen_for_jobs
from storage.retention import JobUse, RetentionPlan, TurnUse
from storage.schema import (
    events,
    images,
    jobs,
    kv,
    message_links,
    threads,
    turns,
    workspace_settings,
)

CANCELLED_CODE = Cancelled.code

log = logging.getLogger(__name__)

MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"

SQLITE_BUSY_TIMEOUT_MS = 10_000
"""How long another process's write may block ours before SQLite gives up."""

_IMMEDIATE = "imagine_sqlite_immediate"
"""Execution option: start this SQLite transaction with BEGIN IMMEDIATE (it will write)."""

_NO_BEGIN = "imagine_sqlite_single_read"
"""Execution option: no BEGIN at all. For the one-SELECT reads, which SQLite runs atomically
anyway; skipping BEGIN saves driver round trips on hot lookups (`turn_for_message`)."""

_MIGRATION_LOCK_KEY = 0x696D6167  # "imag": replicas starting together migrate one at a time

_MAX_DEPTH = 1_000_000
"""Recursion bound for parent walks, so a corrupted (cyclic) chain cannot loop forever."""

_OPEN = (JobStatus.QUEUED.value, JobStatus.RUNNING.value)
"""Waiting or at the provider."""

_COUNTED = jobs.c.status.not_in((JobStatus.FAILED.value, JobStatus.CANCELLED.value))
"""The ledger's rows: accepted jobs that were not given back (failed or cancelled)."""

_QUEUE_LOCK_KEY = 0x696D6A71  # "imjq": PostgreSQL advisory lock around claims and admissions


def alembic_config() -> Config:
    """Alembic configuration built in code: no alembic.ini to ship or to find at run time."""
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    return config


def create_engine(url: URL) -> AsyncEngine:
    """An async engine; SQLite connections get WAL, foreign keys and a busy timeout."""
    if url.get_backend_name() != "sqlite":
        return create_async_engine(url, pool_pre_ping=True)
    engine = create_async_engine(url)
    event.listen(engine.sync_engine, "connect", _sqlite_on_connect)
    event.listen(engine.sync_engine, "begin", _sqlite_on_begin)
    return engine


def _sqlite_on_connect(dbapi_connection: Any, _record: Any) -> None:
    # Stop the driver's implicit BEGIN (it skips DDL and SELECTs); `_sqlite_on_begin` emits
    # our own, so migrations are transactional and writers can take the lock up front.
    dbapi_connection.isolation_level = None
    cursor = dbapi_connection.cursor()
    try:
        # Before the first table exists this sets up a new file so that a purge can give its
        # space back (`PRAGMA incremental_vacuum`); an older file is converted once by
        # `SqlStore.upgrade`. Either way the pragma is a no-op afterwards.
        cursor.execute("PRAGMA auto_vacuum=INCREMENTAL")
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
        cursor.execute("PRAGMA synchronous=NORMAL")  # durable enough with WAL, much faster
    finally:
        cursor.close()


def _sqlite_on_begin(connection: Connection) -> None:
    # IMMEDIATE takes the write lock at BEGIN, so a writer waits (busy_timeout) instead of
    # failing when another process wrote between its first read and its first write.
    options = connection.get_execution_options()
    if options.get(_NO_BEGIN, False):
        return
    connection.exec_driver_sql("BEGIN IMMEDIATE" if options.get(_IMMEDIATE, False) else "BEGIN")


def _upgrade_head(connection: Connection, config: Config) -> None:
    config.attributes["connection"] = connection
    command.upgrade(config, "head")


class WriteGate:
    """SQLite's single writer, queued inside the process: first come, first served, except
    that urgent writers (acknowledgement paths) go before everyone still waiting."""

    def __init__(self) -> None:
        self._held = False
        self._urgent: deque[asyncio.Future[None]] = deque()
        self._normal: deque[asyncio.Future[None]] = deque()

    @asynccontextmanager
    async def hold(self, *, urgent: bool = False) -> AsyncIterator[None]:
        if self._held:
            turn: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            (self._urgent if urgent else self._normal).append(turn)
            try:
                await turn
            except asyncio.CancelledError:
                if turn.done() and not turn.cancelled():
                    self._pass_on()  # handed the gate just as it was cancelled
                raise
        else:
            self._held = True
        try:
            yield
        finally:
            self._pass_on()

    def _pass_on(self) -> None:
        for waiting in (self._urgent, self._normal):
            while waiting:
                turn = waiting.popleft()
                if not turn.done():
                    turn.set_result(None)  # still held: ownership moves to that waiter
                    return
        self._held = False


class SqlStore:
    """`bot.store.Store` over one async engine. Create it with `storage.open_store`."""

    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine
        self.is_sqlite = engine.dialect.name == "sqlite"
        # SQLite has one writer per file; queueing our own writers here means they wait
        # on the event loop, never on "database is locked". PostgreSQL locks rows itself.
        self._write_lock: WriteGate | None = WriteGate() if self.is_sqlite else None
        # Every read below is a single SELECT: on SQLite it needs no explicit transaction.
        self._reader = engine.execution_options(**{_NO_BEGIN: True}) if self.is_sqlite else engine

    async def close(self) -> None:
        await self.engine.dispose()

    async def upgrade(self) -> None:
        """Run the Alembic migrations up to head (idempotent; one process at a time)."""
        async with self._write() as conn:
            if not self.is_sqlite:
                await conn.execute(sa.select(sa.func.pg_advisory_xact_lock(_MIGRATION_LOCK_KEY)))
            await conn.run_sync(_upgrade_head, alembic_config())
        if self.is_sqlite:
            await self._sqlite_incremental_vacuum_on()

    async def _sqlite_incremental_vacuum_on(self) -> None:
        """Switch a file made before retention existed to `auto_vacuum=INCREMENTAL`.

        The setting only takes effect through a full `VACUUM` (once: it rewrites the file,
        so it needs about the file's size free on disk), which cannot run in a transaction.
        """
        assert self._write_lock is not None
        async with self._write_lock.hold(), self._reader.connect() as conn:
            mode = (await conn.exec_driver_sql("PRAGMA auto_vacuum")).scalar()
            if mode == 2:
                return
            log.warning("converting the SQLite database to incremental vacuum (once)")
            await conn.exec_driver_sql("PRAGMA auto_vacuum=INCREMENTAL")
            await conn.exec_driver_sql("VACUUM")

    # plumbing -------------------------------------------------------------------------------
    @asynccontextmanager
    async def _write(self, *, urgent: bool = False) -> AsyncIterator[AsyncConnection]:
        """One write transaction, committed on success and rolled back on error.

        `urgent` writes (on a platform's acknowledgement path) go before waiting ones."""
        if self._write_lock is None:
            async with self.engine.begin() as conn:
                yield conn
            return
        async with self._write_lock.hold(urgent=urgent), self.engine.connect() as conn:
            await conn.execution_options(**{_IMMEDIATE: True})
            async with conn.begin():
                yield conn

    async def _rows(self, statement: sa.Executable, **params: Any) -> Sequence[Row[Any]]:
        async with self._reader.connect() as conn:
            return (await conn.execute(statement, params or None)).all()

    async def _row(self, statement: sa.Executable, **params: Any) -> Row[Any] | None:
        async with self._reader.connect() as conn:
            return (await conn.execute(statement, params or None)).first()

    def _insert(self, table: sa.Table) -> sqlite.Insert | postgresql.Insert:
        """The dialect's INSERT, which knows ON CONFLICT."""
        return sqlite.insert(table) if self.is_sqlite else postgresql.insert(table)

    async def _store_images(self, conn: AsyncConnection, items: Iterable[Image]) -> None:
        by_sha = {image.sha256: image for image in items}
        if not by_sha:
            return
        # Skip the bytes of images already stored (references are reused a lot); ON CONFLICT
        # still covers a concurrent writer. Sorted, so concurrent writers lock in one order.
        # A purged image (retention) counts as missing: its bytes are written back.
        present = await conn.execute(
            sa.select(images.c.sha256).where(
                images.c.sha256.in_(list(by_sha)), images.c.purged_at.is_(None)
            )
        )
        missing = sorted(set(by_sha) - set(present.scalars()))
        if not missing:
            return
        created_at = now()
        rows = [
            {
                "sha256": sha,
                "mime": by_sha[sha].mime,
                "data": by_sha[sha].data,
                "size": by_sha[sha].size,
                "created_at": created_at,
                "purged_at": None,
            }
            for sha in missing
        ]
        insert = self._insert(images)
        revive = insert.on_conflict_do_update(
            index_elements=[images.c.sha256],
            set_={
                "data": insert.excluded.data,
                "size": insert.excluded.size,
                "mime": insert.excluded.mime,
                "created_at": insert.excluded.created_at,
                "purged_at": None,
            },
            where=images.c.purged_at.is_not(None),
        )
        await conn.execute(revive, rows)

    # images ---------------------------------------------------------------------------------
    async def put_images(self, images: Sequence[Image]) -> None:
        """Insert images not stored yet (deduplicated by sha256)."""
        if not images:
            return
        async with self._write() as conn:
            await self._store_images(conn, images)

    async def get_image(self, sha256: str) -> Image | None:
        row = await self._row(
            sa.select(images.c.data, images.c.mime).where(
                images.c.sha256 == sha256, images.c.purged_at.is_(None)
            )
        )
        if row is None:
            return None
        return Image(data=bytes(row.data), mime=row.mime, sha256=sha256)

    async def missing_images(self, shas: Sequence[str]) -> set[str]:
        """Which of `shas` have no bytes: never stored, or purged by retention."""
        wanted = set(shas)
        if not wanted:
            return set()
        rows = await self._rows(
            sa.select(images.c.sha256).where(
                images.c.sha256.in_(sorted(wanted)), images.c.purged_at.is_(None)
            )
        )
        return wanted - {row.sha256 for row in rows}

    async def purge_images(
        self,
        *,
        before: float | None,
        history_turns: int,
        turn_ids: Sequence[str] = (),
    ) -> PurgeResult:
        """Remove the bytes of images nothing may need any more; see `bot.store.Store`."""
        at = now()
        async with self._write() as conn:
            await self._lock_queue(conn)  # no job is admitted half-way through (PostgreSQL)
            result = await self._purge(conn, before, history_turns, turn_ids, at)
        if result.images and self.is_sqlite:
            await self._sqlite_incremental_vacuum()
        return result

    async def _purge(
        self,
        conn: AsyncConnection,
        before: float | None,
        history_turns: int,
        turn_ids: Sequence[str],
        at: float,
    ) -> PurgeResult:
        turn_rows = (
            await conn.execute(
                sa.select(
                    turns.c.id,
                    turns.c.parent_id,
                    turns.c.thread_id,
                    turns.c.result_sha,
                    turns.c.reference_shas,
                    turns.c.created_at,
                    turns.c.deleted,
                )
            )
        ).all()
        job_filter = jobs.c.settled.is_(False)
        retryable: sa.ColumnElement[bool] = jobs.c.status.in_(
            [JobStatus.FAILED.value, JobStatus.CANCELLED.value]
        )
        if before is not None:
            retryable = sa.and_(retryable, jobs.c.created_at >= before)
        job_rows = (
            await conn.execute(
                sa.select(
                    jobs.c.thread_id,
                    jobs.c.reference_shas,
                    jobs.c.parent_turn_id,
                    jobs.c.turn_id,
                    jobs.c.follow_latest,
                    jobs.c.settled,
                ).where(sa.or_(job_filter, retryable))
            )
        ).all()
        candidates: set[str] = set()
        if before is not None:
            old = await conn.execute(
                sa.select(images.c.sha256).where(
                    images.c.created_at < before, images.c.purged_at.is_(None)
                )
            )
            candidates.update(old.scalars())
        plan = RetentionPlan(
            [
                TurnUse(
                    id=r.id,
                    parent_id=r.parent_id,
                    thread_id=r.thread_id,
                    shas=(r.result_sha, *(r.reference_shas or ())),
                    created_at=r.created_at,
                    deleted=bool(r.deleted),
                )
                for r in turn_rows
            ],
            history_turns,
        )
        for turn_id in turn_ids:
            candidates.update(plan.path_shas(turn_id))
        if not candidates:
            return PurgeResult(0, 0)
        needed = plan.needed(
            before,
            [
                JobUse(
                    thread_id=r.thread_id,
                    reference_shas=tuple(r.reference_shas or ()),
                    parent_turn_id=r.parent_turn_id,
                    turn_id=r.turn_id,
                    follow_latest=bool(r.follow_latest) and not r.settled,
                )
                for r in job_rows
            ],
        )
        doomed = sorted(candidates - needed)
        count = freed = 0
        for start in range(0, len(doomed), 500):
            chunk = doomed[start : start + 500]
            sizes = await conn.execute(
                sa.select(images.c.size).where(
                    images.c.sha256.in_(chunk), images.c.purged_at.is_(None)
                )
            )
            found = list(sizes.scalars())
            if not found:
                continue
            count += len(found)
            freed += sum(found)
            await conn.execute(
                sa.update(images)
                .where(images.c.sha256.in_(chunk), images.c.purged_at.is_(None))
                .values(data=b"", size=0, purged_at=at)
            )
        return PurgeResult(count, freed)

    async def _sqlite_incremental_vacuum(self) -> None:
        """Give the pages a purge freed back to the file system (outside a transaction)."""
        assert self._write_lock is not None
        async with self._write_lock.hold(), self._reader.connect() as conn:
            # The pragma frees one page per step, and a DB-API execute takes one step:
            # run it as a script (sqlite3_exec steps it to the end).
            raw = await conn.get_raw_connection()
            driver: Any = raw.driver_connection  # aiosqlite's connection
            await driver.executescript("PRAGMA incremental_vacuum")

    # threads --------------------------------------------------------------------------------
    async def create_thread(self, thread: Thread) -> Thread:
        """Insert a thread; if its key exists already, return the stored one unchanged."""
        values = {
            "id": thread.id,
            "platform": thread.key.platform,
            "workspace": thread.key.workspace,
            "channel": thread.key.channel,
            "thread": thread.key.thread,
            "created_by": thread.created_by,
            "title": thread.title,
            "created_at": thread.created_at,
            "updated_at": thread.created_at,
        }
        async with self._write() as conn:
            await conn.execute(self._insert(threads).values(values).on_conflict_do_nothing())
            row = (await conn.execute(_thread_by_key_query(thread.key))).first()
        if row is None:  # the id was taken by a thread with another key
            raise ValueError(f"thread id {thread.id!r} already used by another thread key")
        return _thread(row)

    async def discard_thread(self, thread_id: str) -> bool:
        used = sa.or_(
            sa.exists().where(jobs.c.thread_id == thread_id),
            sa.exists().where(turns.c.thread_id == thread_id),
        )
        async with self._write() as conn:
            result = await conn.execute(
                sa.delete(threads).where(threads.c.id == thread_id, sa.not_(used))
            )
            return bool(result.rowcount)

    async def get_thread(self, thread_id: str) -> Thread | None:
        row = await self._row(sa.select(threads).where(threads.c.id == thread_id))
        return None if row is None else _thread(row)

    async def thread_by_key(self, key: ThreadKey) -> Thread | None:
        row = await self._row(_thread_by_key_query(key))
        return None if row is None else _thread(row)

    async def list_threads(
        self, platform: str, workspace: str | None = None, limit: int = 20
    ) -> list[Thread]:
        """Newest first (by latest activity)."""
        query = sa.select(threads).where(threads.c.platform == platform)
        if workspace is not None:
            query = query.where(threads.c.workspace == workspace)
        query = query.order_by(threads.c.updated_at.desc(), threads.c.id.desc()).limit(limit)
        return [_thread(row) for row in await self._rows(query)]

    # jobs -----------------------------------------------------------------------------------
    async def add_job(
        self,
        job: Job,
        images: Sequence[Image] = (),
        *,
        max_queued: int | None = None,
        admission: Admission | None = None,
    ) -> None:
        """Record an accepted job and its reference images in one transaction.

        Under the same lock as the claims, so both hold over every process: with
        `max_queued`, refuses (`UserQueueFull`) when the user already has that many jobs
        waiting; with `admission`, refuses (`PolicyRefused`) what `bot.policy.decide` does,
        counted from the ledger in this very transaction — the job is then one more row of
        it, so ten admissions racing for the last image let exactly one through.
        """
        async with self._write() as conn:
            await self._lock_queue(conn)
            if max_queued is not None:
                running, queued = await self._user_load(conn, job.user_id)
                if queued >= max_queued:
                    raise UserQueueFull(running + queued)
            if admission is not None:
                refusal = await self._refusal(conn, admission)
                if refusal is not None:
                    raise admission.refused(refusal)
            await self._store_images(conn, images)
            place = sa.select(threads).where(threads.c.id == job.thread_id).subquery()
            values = _job_values(job)
            for column in ("platform", "workspace", "channel"):
                values[column] = sa.select(place.c[column]).scalar_subquery()
            await conn.execute(sa.insert(jobs).values(values))
            await self._notify(conn)

    # team control: the ledger and the admins' settings --------------------------------------
    async def check_admission(self, admission: Admission) -> Refusal | None:
        """What `add_job` would refuse now (a read, for an adapter's acknowledgement)."""
        async with self._reader.connect() as conn:
            return await self._refusal(conn, admission)

    async def get_overrides(self, scope: Scope) -> Overrides:
        async with self._reader.connect() as conn:
            return await self._overrides(conn, scope)

    async def update_overrides(
        self, scope: Scope, change: Callable[[Overrides], Overrides], by: str
    ) -> Overrides:
        """Apply `change` to a workspace's stored settings in one transaction (two admins
        changing lists at once both keep their change) and return the result."""
        key = {"platform": scope.platform, "workspace": scope.workspace}
        async with self._write() as conn:
            await conn.execute(
                self._insert(workspace_settings)
                .values(**key, settings={}, updated_by=by, updated_at=now())
                .on_conflict_do_nothing()
            )
            row = (
                await conn.execute(
                    sa.select(workspace_settings.c.settings)
                    .where(*_scope_match(workspace_settings, scope))
                    .with_for_update()
                )
            ).one()
            changed = change(Overrides.from_json(row.settings))
            await conn.execute(
                sa.update(workspace_settings)
                .where(*_scope_match(workspace_settings, scope))
                .values(settings=changed.to_json(), updated_by=by, updated_at=now())
            )
            return changed

    async def usage_lines(
        self,
        since: float,
        until: float,
        *,
        platform: str | None = None,
        workspace: str | None = None,
        user: str | None = None,
    ) -> list[UsageLine]:
        """Images and estimated US$ per (platform, workspace, user) accepted in
        [since, until), failed and cancelled jobs left out; largest first."""
        query = (
            sa.select(
                jobs.c.platform,
                jobs.c.workspace,
                jobs.c.user_id,
                sa.func.count().label("images"),
                sa.func.coalesce(sa.func.sum(jobs.c.cost_usd), 0.0).label("cost"),
            )
            .where(jobs.c.created_at >= since, jobs.c.created_at < until, _COUNTED)
            .group_by(jobs.c.platform, jobs.c.workspace, jobs.c.user_id)
            .order_by(sa.desc("images"), jobs.c.platform, jobs.c.workspace, jobs.c.user_id)
        )
        if platform is not None:
            query = query.where(jobs.c.platform == platform)
        if workspace is not None:
            query = query.where(jobs.c.workspace == workspace)
        if user is not None:
            query = query.where(jobs.c.user_id == user)
        return [
            UsageLine(row.platform, row.workspace, row.user_id, int(row.images), float(row.cost))
            for row in await self._rows(query)
        ]

    async def usage_by_period(self, scope: Scope, boundaries: Sequence[float]) -> list[int]:
        """Images of a workspace in each [boundaries[i], boundaries[i+1]) (days of a month)."""
        if len(boundaries) < 2:
            return []
        rows = await self._rows(
            sa.select(jobs.c.created_at).where(
                *_scope_match(jobs, scope),
                jobs.c.created_at >= boundaries[0],
                jobs.c.created_at < boundaries[-1],
                _COUNTED,
            )
        )
        counts = [0] * (len(boundaries) - 1)
        for row in rows:
            counts[bisect.bisect_right(boundaries, row.created_at) - 1] += 1
        return counts

    async def _overrides(self, conn: AsyncConnection, scope: Scope) -> Overrides:
        row = (
            await conn.execute(
                sa.select(workspace_settings.c.settings).where(
                    *_scope_match(workspace_settings, scope)
                )
            )
        ).first()
        return Overrides.from_json(row.settings if row is not None else None)

    async def _refusal(self, conn: AsyncConnection, admission: Admission) -> Refusal | None:
        who = admission.who
        overrides = await self._overrides(conn, who.scope)
        policy = effective(admission.env, overrides)
        refused = access(policy, who)
        if refused is not None or not (
            policy.user_daily_limit or policy.workspace_daily_limit or policy.monthly_budget
        ):
            return refused  # nothing to count
        day, month = admission.day, admission.month
        today = sa.and_(jobs.c.created_at >= day.start, jobs.c.created_at < day.end)
        workspace = (
            await conn.execute(
                sa.select(
                    sa.func.count(sa.case((today, 1))).label("today"),
                    sa.func.coalesce(sa.func.sum(jobs.c.cost_usd), 0.0).label("month_usd"),
                ).where(
                    *_scope_match(jobs, who.scope),
                    jobs.c.created_at >= month.start,
                    jobs.c.created_at < month.end,
                    _COUNTED,
                )
            )
        ).one()
        # A person's day is one day wherever they ask: every workspace of the platform
        # (a server, DMs, a server with only their user install) counts towards it.
        user_today = (
            await conn.execute(
                sa.select(sa.func.count()).where(
                    jobs.c.platform == who.platform,
                    jobs.c.user_id == who.user,
                    jobs.c.created_at >= admission.user_since(overrides),
                    jobs.c.created_at < day.end,
                    _COUNTED,
                )
            )
        ).scalar_one()
        counts = Counts(int(user_today), int(workspace.today), float(workspace.month_usd))
        return decide(policy, who, counts, cost=admission.cost, day=day, month=month)

    async def get_job(self, job_id: str) -> Job | None:
        row = await self._row(sa.select(jobs).where(jobs.c.id == job_id))
        return None if row is None else _job(row)

    async def user_load(self, user_id: str) -> tuple[int, int]:
        """(running, queued) jobs of a user, over every process."""
        async with self._reader.connect() as conn:
            return await self._user_load(conn, user_id)

    async def claim_jobs(self, worker: str, request: ClaimRequest) -> list[Job]:
        """Take the jobs `bot.queue.plan_claims` allows, as `worker`, with a fresh lease.

        One short transaction under the queue lock (PostgreSQL: an advisory lock, plus row
        locks that skip rows another transaction is changing; SQLite: the write lock), so
        the caps hold over every process and no job gets two owners.
        """
        async with self._write() as conn:
            await self._lock_queue(conn)
            at = now()
            view = await self._queue_view(conn)
            picked = plan_claims(view, request, at)
            if not picked:
                return []
            if not self.is_sqlite:
                locked = await conn.execute(
                    sa.select(jobs.c.id)
                    .where(jobs.c.id.in_(picked))
                    .with_for_update(skip_locked=True)
                )
                available = set(locked.scalars())
                picked = [job_id for job_id in picked if job_id in available]
            statuses = {e.id: e.status for e in view.entries}
            claimed: list[str] = []
            for index, job_id in enumerate(picked):
                values: dict[str, Any] = {"owner": worker, "lease_until": at + request.lease}
                if statuses[job_id] is JobStatus.QUEUED:
                    # distinct start times keep the round-robin order of one claim pass
                    values.update(status=JobStatus.RUNNING.value, started_at=at + index * 1e-6)
                result = await conn.execute(
                    sa.update(jobs)
                    .where(
                        jobs.c.id == job_id,
                        jobs.c.status == statuses[job_id].value,
                        jobs.c.settled.is_(False),
                    )
                    .values(**values)
                )
                if result.rowcount:
                    claimed.append(job_id)
            if not claimed:
                return []
            rows = (await conn.execute(sa.select(jobs).where(jobs.c.id.in_(claimed)))).all()
        by_id = {row.id: _job(row) for row in rows}
        return [by_id[job_id] for job_id in claimed]

    async def queue_view(self) -> QueueView:
        """Every unsettled job and who was served when: queue positions for progress."""
        async with self._reader.connect() as conn:
            return await self._queue_view(conn)

    async def renew_leases(self, worker: str, lease: float) -> dict[str, bool]:
        """Extend the lease of every unsettled job `worker` holds.

        Returns those jobs' ids, each with whether someone asked to cancel it; a job the
        worker thought it held but is missing here was taken over: it must stop quietly.
        """
        statement = (
            sa.update(jobs)
            .where(jobs.c.owner == worker, jobs.c.settled.is_(False))
            .values(lease_until=now() + lease)
            .returning(jobs.c.id, jobs.c.cancel_requested)
        )
        async with self._write() as conn:
            rows = (await conn.execute(statement)).all()
        return {row.id: bool(row.cancel_requested) for row in rows}

    async def cancel_requests(self, worker: str) -> list[str]:
        """Jobs `worker` holds that someone asked to cancel (from any process)."""
        rows = await self._rows(
            sa.select(jobs.c.id).where(
                jobs.c.owner == worker,
                jobs.c.settled.is_(False),
                jobs.c.cancel_requested.is_(True),
            )
        )
        return [row.id for row in rows]

    async def release_jobs(self, worker: str) -> int:
        """Hand over every unsettled job `worker` holds (a graceful stop): another worker
        may take them at once. Returns how many."""
        async with self._write() as conn:
            result = await conn.execute(
                sa.update(jobs)
                .where(jobs.c.owner == worker, jobs.c.settled.is_(False))
                .values(owner=None, lease_until=None)
            )
            await self._notify(conn)
            return int(result.rowcount or 0)

    async def start_job(self, job_id: str, worker: str, parent_turn_id: str | None) -> bool:
        """Record the parent actually used (follow_latest). False if `worker` lost the job."""
        return await self._update_held(job_id, worker, parent_turn_id=parent_turn_id)

    async def set_job_provider_request(self, job_id: str, worker: str, request_id: str) -> bool:
        """Store the provider's request id before the first poll (resume after restart)."""
        return await self._update_held(job_id, worker, provider_request_id=request_id)

    async def make_job(self, job_id: str, worker: str, turn: Turn, images: Sequence[Image]) -> bool:
        """One transaction: the result images, the new turn, the job marked made.

        Nothing is written (False) unless `worker` still holds the job at the provider:
        a worker that lost its lease cannot overwrite the work of the one that took over.
        """
        if turn.parent_id == turn.id:
            raise ValueError(f"turn {turn.id!r} cannot be its own parent")
        async with self._write() as conn:
            result = await conn.execute(
                sa.update(jobs)
                .where(
                    jobs.c.id == job_id,
                    jobs.c.owner == worker,
                    jobs.c.status == JobStatus.RUNNING.value,
                )
                .values(status=JobStatus.MADE.value, error=None, finished_at=now())
            )
            if not result.rowcount:
                return False
            await self._store_images(conn, images)
            await conn.execute(sa.insert(turns).values(_turn_values(turn)))
            await conn.execute(
                sa.update(jobs)
                .where(jobs.c.id == job_id)
                # the ledger names the provider that made it (one of a failover list)
                .values(turn_id=turn.id, tokens=turn.usage.total_tokens, provider=turn.provider)
            )
            # Activity orders `list_threads`; never move it backwards (portable GREATEST).
            await conn.execute(
                sa.update(threads)
                .where(threads.c.id == turn.thread_id)
                .values(
                    updated_at=sa.case(
                        (threads.c.updated_at < turn.created_at, turn.created_at),
                        else_=threads.c.updated_at,
                    )
                )
            )
            await self._notify(conn)
            return True

    async def deliver_job(
        self, job_id: str, worker: str, platform: str, message_id: str | None
    ) -> bool:
        """The image was posted: index its message and settle the job, in one transaction."""
        async with self._write() as conn:
            row = (
                await conn.execute(
                    sa.update(jobs)
                    .where(
                        jobs.c.id == job_id,
                        jobs.c.owner == worker,
                        jobs.c.status == JobStatus.MADE.value,
                    )
                    .values(
                        status=JobStatus.DELIVERED.value, settled=True, owner=None, lease_until=None
                    )
                    .returning(jobs.c.turn_id)
                )
            ).first()
            if row is None:
                return False
            if message_id:
                await conn.execute(_link_statement(self, platform, message_id, row.turn_id))
            return True

    async def fail_job(
        self, job_id: str, worker: str, status: JobStatus, error: str | None = None
    ) -> bool:
        """Failed or cancelled, still to be shown to the user (then `settle_job`).

        Only the holder may record it, and only before the image was made.
        """
        async with self._write() as conn:
            result = await conn.execute(
                sa.update(jobs)
                .where(
                    jobs.c.id == job_id,
                    jobs.c.owner == worker,
                    jobs.c.status.in_((*_OPEN, JobStatus.MADE.value)),
                )
                .values(status=JobStatus(status).value, error=error, finished_at=now())
            )
            await self._notify(conn)
            return bool(result.rowcount)

    async def cancel_queued_job(self, job_id: str, worker: str, lease: float) -> bool:
        """Cancel a job nobody has started, holding it (as `worker`) until the user is told."""
        async with self._write() as conn:
            result = await conn.execute(
                sa.update(jobs)
                .where(jobs.c.id == job_id, jobs.c.status == JobStatus.QUEUED.value)
                .values(
                    status=JobStatus.CANCELLED.value,
                    error=f"{CANCELLED_CODE}: cancelled by user",
                    finished_at=now(),
                    owner=worker,
                    lease_until=now() + lease,
                )
            )
            return bool(result.rowcount)

    async def request_cancel(self, job_id: str) -> bool:
        """Ask whichever worker holds a job at the provider to cancel it."""
        async with self._write() as conn:
            result = await conn.execute(
                sa.update(jobs)
                .where(jobs.c.id == job_id, jobs.c.status == JobStatus.RUNNING.value)
                .values(cancel_requested=True)
            )
            await self._notify(conn)
            return bool(result.rowcount)

    async def settle_job(self, job_id: str, worker: str) -> bool:
        """The user has seen the outcome: nothing is left to do for this job."""
        return await self._update_held(job_id, worker, settled=True, owner=None, lease_until=None)

    async def active_job_for_thread(self, thread_id: str) -> Job | None:
        """The thread's oldest job still waiting or at the provider."""
        row = await self._row(
            sa.select(jobs)
            .where(jobs.c.thread_id == thread_id, jobs.c.status.in_(_OPEN))
            .order_by(jobs.c.created_at, jobs.c.id)
            .limit(1)
        )
        return None if row is None else _job(row)

    async def unsettled_jobs(self) -> list[Job]:
        """Every job whose user has not seen an outcome yet, oldest first."""
        query = (
            sa.select(jobs).where(jobs.c.settled.is_(False)).order_by(jobs.c.created_at, jobs.c.id)
        )
        return [_job(row) for row in await self._rows(query)]

    async def listen(self, wake: Callable[[], None]) -> Callable[[], Awaitable[None]] | None:
        """Call `wake` whenever another process changes the queue (PostgreSQL NOTIFY).

        Returns the function that stops listening, or None where the engine cannot tell
        (SQLite): workers then poll.
        """
        if self.is_sqlite:
            return None
        return await listen_for_jobs(self.engine.url, wake)

    async def _update_held(self, job_id: str, worker: str, **values: Any) -> bool:
        async with self._write() as conn:
            result = await conn.execute(
                sa.update(jobs).where(jobs.c.id == job_id, jobs.c.owner == worker).values(**values)
            )
            return bool(result.rowcount)

    async def _lock_queue(self, conn: AsyncConnection) -> None:
        """Serialise claims and admissions (SQLite's write lock already does)."""
        if not self.is_sqlite:
            await conn.execute(sa.select(sa.func.pg_advisory_xact_lock(_QUEUE_LOCK_KEY)))

    async def _notify(self, conn: AsyncConnection) -> None:
        """Wake the other processes' workers when this transaction commits."""
        if not self.is_sqlite:
            await conn.execute(sa.select(sa.func.pg_notify(JOBS_CHANNEL, "")))

    async def _user_load(self, conn: AsyncConnection, user_id: str) -> tuple[int, int]:
        rows = await conn.execute(
            sa.select(jobs.c.status, sa.func.count())
            .where(jobs.c.user_id == user_id, jobs.c.status.in_(_OPEN))
            .group_by(jobs.c.status)
        )
        counts = {status: int(count) for status, count in rows.all()}
        return counts.get(JobStatus.RUNNING.value, 0), counts.get(JobStatus.QUEUED.value, 0)

    async def _queue_view(self, conn: AsyncConnection) -> QueueView:
        rows = (await conn.execute(_QUEUE_ENTRIES)).all()
        entries = tuple(
            QueueEntry(
                id=row.id,
                user_id=row.user_id,
                thread_id=row.thread_id,
                platform=row.platform,
                status=JobStatus(row.status),
                created_at=row.created_at,
                owner=row.owner,
                lease_until=row.lease_until,
            )
            for row in rows
        )
        oldest_wait: dict[str, float] = {}
        for entry in entries:
            if entry.status is JobStatus.QUEUED and entry.user_id not in oldest_wait:
                oldest_wait[entry.user_id] = entry.created_at  # rows come oldest first
        if not oldest_wait:
            return QueueView(entries)
        starts = await conn.execute(_RECENT_STARTS, {"since": min(oldest_wait.values())})
        return QueueView(entries, last_served(starts.tuples().all(), oldest_wait))

    # turns ----------------------------------------------------------------------------------
    async def get_turn(self, turn_id: str) -> Turn | None:
        row = await self._row(_GET_TURN, turn_id=turn_id)
        return None if row is None else _turn(row)

    async def latest_turn(self, thread_id: str) -> Turn | None:
        """The most recent turn of the thread that is not deleted."""
        row = await self._row(
            sa.select(turns)
            .where(turns.c.thread_id == thread_id, turns.c.deleted.is_(False))
            .order_by(turns.c.created_at.desc(), turns.c.id.desc())
            .limit(1)
        )
        return None if row is None else _turn(row)

    async def turn_path(self, turn_id: str, limit: int) -> list[Turn]:
        """The path root → `turn_id` (inclusive), keeping only its last `limit` turns.

        Deleted turns stay on the path: they are still the ancestors the later turns were
        generated from.
        """
        if limit <= 0:
            return []
        path = _path_cte(turn_id, max_depth=limit)
        query = sa.select(turns).join(path, turns.c.id == path.c.id).order_by(path.c.depth.desc())
        return [_turn(row) for row in await self._rows(query)]

    async def count_path(self, turn_id: str) -> int:
        """How many turns the full root → `turn_id` path has."""
        path = _path_cte(turn_id, max_depth=_MAX_DEPTH)
        row = await self._row(sa.select(sa.func.count()).select_from(path))
        return 0 if row is None else int(row[0])

    async def mark_turn_deleted(self, turn_id: str) -> None:
        async with self._write() as conn:
            await conn.execute(sa.update(turns).where(turns.c.id == turn_id).values(deleted=True))

    # platform messages ----------------------------------------------------------------------
    async def link_message(self, platform: str, message_id: str, turn_id: str) -> None:
        """Index a platform message that shows a turn, so a reply to it finds the turn.

        Linking a message again points it at the new turn (a message edited in place).
        """
        async with self._write() as conn:
            await conn.execute(_link_statement(self, platform, message_id, turn_id))

    async def turn_for_message(self, platform: str, message_id: str) -> Turn | None:
        row = await self._row(_TURN_FOR_MESSAGE, platform=platform, message_id=message_id)
        return None if row is None else _turn(row)

    async def messages_for_turn(self, platform: str, turn_id: str) -> list[str]:
        rows = await self._rows(
            sa.select(message_links.c.message_id)
            .where(message_links.c.platform == platform, message_links.c.turn_id == turn_id)
            .order_by(message_links.c.created_at, message_links.c.message_id)
        )
        return [row.message_id for row in rows]

    # deduplication --------------------------------------------------------------------------
    async def claim_event(self, platform: str, event_id: str) -> bool:
        """True the first time an event id is seen (Slack retries), False afterwards.

        Adapters claim before they acknowledge, so this must not queue behind the
        process's other writers (a burst of jobs): on SQLite it goes before every waiting
        writer, after the one transaction writing at that moment.
        """
        statement = (
            self._insert(events)
            .values(platform=platform, event_id=event_id, created_at=now())
            .on_conflict_do_nothing()
            .returning(events.c.event_id)
        )
        async with self._write(urgent=True) as conn:
            return (await conn.execute(statement)).first() is not None

    async def forget_events(self, before: float) -> int:
        async with self._write() as conn:
            result = await conn.execute(sa.delete(events).where(events.c.created_at < before))
            return int(result.rowcount or 0)

    # small key/value state ------------------------------------------------------------------
    async def get_state(self, key: str) -> JSON:
        row = await self._row(sa.select(kv.c.value).where(kv.c.key == key))
        return None if row is None else row.value

    async def set_state(self, key: str, value: JSON) -> None:
        insert = self._insert(kv).values(key=key, value=value)
        statement = insert.on_conflict_do_update(
            index_elements=[kv.c.key], set_={"value": insert.excluded.value}
        )
        async with self._write() as conn:
            await conn.execute(statement)


# queries and row mapping --------------------------------------------------------------------
_GET_TURN = sa.select(turns).where(turns.c.id == sa.bindparam("turn_id"))

_TURN_FOR_MESSAGE = (
    sa.select(turns)
    .join(message_links, message_links.c.turn_id == turns.c.id)
    .where(
        message_links.c.platform == sa.bindparam("platform"),
        message_links.c.message_id == sa.bindparam("message_id"),
    )
)
"""Primary-key lookup plus one join: the reply-to-image hot path, built once."""


def _link_statement(store: SqlStore, platform: str, message_id: str, turn_id: str) -> sa.Executable:
    """Index a message (again: a message edited in place points at its new turn)."""
    insert = store._insert(message_links).values(
        platform=platform, message_id=message_id, turn_id=turn_id, created_at=now()
    )
    return insert.on_conflict_do_update(
        index_elements=[message_links.c.platform, message_links.c.message_id],
        set_={"turn_id": insert.excluded.turn_id},
    )


_QUEUE_ENTRIES = (
    sa.select(
        jobs.c.id,
        jobs.c.user_id,
        jobs.c.thread_id,
        jobs.c.platform,
        jobs.c.status,
        jobs.c.created_at,
        jobs.c.owner,
        jobs.c.lease_until,
    )
    .where(jobs.c.settled.is_(False))
    .order_by(jobs.c.created_at, jobs.c.id)
)


_RECENT_STARTS = sa.select(jobs.c.user_id, jobs.c.started_at, jobs.c.finished_at).where(
    sa.or_(
        sa.and_(jobs.c.settled.is_(False), jobs.c.started_at.is_not(None)),
        jobs.c.finished_at >= sa.bindparam("since"),
    )
)
"""Starts that may count for the round-robin: jobs still open, or finished since the
oldest wait began (both indexed, so the table's history is never scanned)."""


def _thread_by_key_query(key: ThreadKey) -> sa.Select[Any]:
    return sa.select(threads).where(
        threads.c.platform == key.platform,
        threads.c.workspace == key.workspace,
        threads.c.channel == key.channel,
        threads.c.thread == key.thread,
    )


def _path_cte(turn_id: str, max_depth: int) -> sa.CTE:
    """`turn_id` and its ancestors with their distance from it (0 = itself), at most
    `max_depth` rows: a recursive CTE both SQLite and PostgreSQL run."""
    start = (
        sa.select(turns.c.id, turns.c.parent_id, sa.literal(0, sa.Integer).label("depth"))
        .where(turns.c.id == turn_id)
        .cte("path", recursive=True)
    )
    parent = turns.alias("parent")
    step = sa.select(parent.c.id, parent.c.parent_id, (start.c.depth + 1).label("depth")).where(
        parent.c.id == start.c.parent_id, start.c.depth < max_depth - 1
    )
    return start.union_all(step)


def _thread(row: Row[Any]) -> Thread:
    m = row._mapping
    return Thread(
        id=m["id"],
        key=ThreadKey(
            platform=m["platform"],
            workspace=m["workspace"],
            channel=m["channel"],
            thread=m["thread"],
        ),
        created_by=m["created_by"],
        title=m["title"],
        created_at=m["created_at"],
    )


def _turn_values(turn: Turn) -> dict[str, Any]:
    return {
        "id": turn.id,
        "thread_id": turn.thread_id,
        "parent_id": turn.parent_id,
        "user_id": turn.user_id,
        "kind": TurnKind(turn.kind).value,
        "prompt": turn.prompt,
        "reference_shas": list(turn.reference_shas),
        "result_sha": turn.result_sha,
        "text": turn.text,
        "aspect_ratio": turn.aspect_ratio,
        "provider": turn.provider,
        "model": turn.model,
        "provider_state": turn.provider_state,
        "input_tokens": turn.usage.input_tokens,
        "output_tokens": turn.usage.output_tokens,
        "total_tokens": turn.usage.total_tokens,
        "created_at": turn.created_at,
        "duration_s": turn.duration_s,
        "deleted": turn.deleted,
        "size": turn.size,
    }


def _turn(row: Row[Any]) -> Turn:
    m = row._mapping
    return Turn(
        id=m["id"],
        thread_id=m["thread_id"],
        parent_id=m["parent_id"],
        user_id=m["user_id"],
        kind=TurnKind(m["kind"]),
        prompt=m["prompt"],
        reference_shas=tuple(m["reference_shas"] or ()),
        result_sha=m["result_sha"],
        text=m["text"],
        aspect_ratio=m["aspect_ratio"],
        provider=m["provider"],
        model=m["model"],
        provider_state=m["provider_state"],
        usage=Usage(
            input_tokens=m["input_tokens"],
            output_tokens=m["output_tokens"],
            total_tokens=m["total_tokens"],
        ),
        created_at=m["created_at"],
        duration_s=m["duration_s"],
        deleted=bool(m["deleted"]),
        size=m["size"],
    )


def _scope_match(table: sa.Table, scope: Scope) -> tuple[sa.ColumnElement[bool], ...]:
    return (table.c.platform == scope.platform, table.c.workspace == scope.workspace)


def _job_values(job: Job) -> dict[str, Any]:
    return {
        "id": job.id,
        "thread_id": job.thread_id,
        "user_id": job.user_id,
        "kind": TurnKind(job.kind).value,
        "prompt": job.prompt,
        "reference_shas": list(job.reference_shas),
        "aspect_ratio": job.aspect_ratio,
        "parent_turn_id": job.parent_turn_id,
        "follow_latest": job.follow_latest,
        "destination": job.destination,
        "provider": job.provider,
        "model": job.model,
        "status": JobStatus(job.status).value,
        "provider_request_id": job.provider_request_id,
        "turn_id": job.turn_id,
        "error": job.error,
        # 0.0 is the dataclass default: "not stamped by the caller", and order needs a time.
        "created_at": job.created_at or now(),
        "started_at": job.started_at,
        "finished_at": job.finished_at,
        "owner": job.owner,
        "lease_until": job.lease_until,
        "settled": job.settled,
        "cancel_requested": job.cancel_requested,
        "cost_usd": job.cost_usd,
        "tokens": 0,
        "size": job.size,
    }


def _job(row: Row[Any]) -> Job:
    m = row._mapping
    return Job(
        id=m["id"],
        thread_id=m["thread_id"],
        user_id=m["user_id"],
        kind=TurnKind(m["kind"]),
        prompt=m["prompt"],
        reference_shas=tuple(m["reference_shas"] or ()),
        aspect_ratio=m["aspect_ratio"],
        parent_turn_id=m["parent_turn_id"],
        follow_latest=bool(m["follow_latest"]),
        destination=m["destination"],
        provider=m["provider"],
        model=m["model"],
        status=JobStatus(m["status"]),
        provider_request_id=m["provider_request_id"],
        turn_id=m["turn_id"],
        error=m["error"],
        created_at=m["created_at"],
        started_at=m["started_at"],
        finished_at=m["finished_at"],
        owner=m["owner"],
        lease_until=m["lease_until"],
        settled=bool(m["settled"]),
        cancel_requested=bool(m["cancel_requested"]),
        cost_usd=float(m["cost_usd"]),
        size=m["size"],
        platform=m["platform"],
    )
