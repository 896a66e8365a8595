"""One process's share of the job queue: claim, hold, run, hand over.

The queue is the jobs table (see `bot.queue` for the rules and `Store.claim_jobs` for the
transaction). A `Worker` has an id made at start. It claims what it may whenever it is
woken — a job submitted here, a job finishing, a PostgreSQL NOTIFY from another process —
and at least every `poll` seconds; it renews the leases of what it holds every third of a
lease; it cancels a running job when anyone, in any process, asks; and on stop it lets
running jobs finish for a grace period, then hands the rest over at once.

A worker whose lease was taken over (a long pause, a network split) learns it at its next
renewal and stops that job quietly: the new owner carries on, and every store write is
conditional on the owner anyway.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from enum import StrEnum

from bot.models import Job, JobStatus, new_id
from bot.queue import ClaimRequest, Limits
from bot.store import Store

log = logging.getLogger(__name__)

__all__ = ["Limits", "StopReason", "Worker"]


class StopReason(StrEnum):
    """Why a running job's task was cancelled: each ends differently."""

    USER = "user"
    """Someone pressed Cancel: record it and tell the user."""
    LOST = "lost"
    """Another worker holds the job now: write nothing, say nothing."""
    HANDOVER = "handover"
    """This process is stopping: leave the job for the next owner."""


class Worker:
    def __init__(
        self,
        store: Store,
        limits: Limits,
        run: Callable[[Job], Awaitable[None]],
        *,
        lease: float = 30.0,
        poll: float = 1.0,
        worker_id: str | None = None,
    ) -> None:
        self.store = store
        self.limits = limits
        self.id = worker_id or f"w-{new_id()}"
        self.lease = lease
        self.poll = poll
        self._run = run
        self._platforms: set[str] = set()
        self._takeover = False
        self._local: set[str] = set()
        """Jobs submitted through this process that no worker has claimed yet (as far as
        this process knows)."""
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._at_provider: set[str] = set()
        self._stop_reasons: dict[str, StopReason] = {}
        self._accepting = True
        self._wakeup = asyncio.Event()
        self._claiming = asyncio.Lock()
        self._idle = asyncio.Event()
        self._idle.set()
        self._loop: asyncio.Task[None] | None = None
        self._unlisten: Callable[[], Awaitable[None]] | None = None
        self._next_renewal = 0.0
        self._handover_pass = float("-inf")

    # --- lifecycle --------------------------------------------------------------------------

    async def start(self) -> None:
        if self._loop is not None:
            return
        try:
            self._unlisten = await self.store.listen(self.wake)
        except Exception:
            log.warning("cannot listen for queue changes; polling every %ss", self.poll)
        self._next_renewal = time.monotonic() + self.lease / 3
        self._loop = asyncio.get_running_loop().create_task(self._serve(), name=self.id)

    def serve(self, platform: str) -> None:
        """Jobs of `platform` may be claimed here once takeover is on (its adapter is up)."""
        self._platforms.add(platform)

    async def take_over(self) -> int:
        """Claim, from now on, any job of the served platforms — also those other (or
        earlier) processes accepted. Returns how many this first pass took."""
        self._takeover = True
        return len(await self._claim())

    async def drain(self, grace: float) -> list[str]:
        """Stop claiming; running jobs get `grace` s; the rest are handed over at once.

        Returns the ids of jobs this process leaves unfinished (for the log and tests).
        """
        self._accepting = False
        if self._loop is not None:
            self._loop.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._loop
            self._loop = None
        if self._unlisten is not None:
            await self._unlisten()
            self._unlisten = None
        left = sorted(self._local)
        self._local.clear()
        tasks = list(self._tasks.values())
        if tasks:
            _, pending = await asyncio.wait(tasks, timeout=grace)
            for task in pending:
                left.append(task.get_name())
                self._stop_reasons.setdefault(task.get_name(), StopReason.HANDOVER)
                task.cancel()
            if pending:
                await asyncio.wait(pending, timeout=5)
        try:
            released = await self.store.release_jobs(self.id)
        except Exception:
            log.exception("could not hand over jobs; they are taken over when the lease lapses")
        else:
            if released:
                log.info("handed %d job(s) over to other processes", released)
        self._idle.set()
        return left

    # --- what the core asks -----------------------------------------------------------------

    @property
    def accepting(self) -> bool:
        return self._accepting

    async def submit(self, job_id: str) -> bool:
        """A job was recorded through this process: claim what the rules allow now.

        True if this very job was claimed (it starts at once)."""
        self._local.add(job_id)
        self._idle.clear()
        await self._claim()
        return job_id in self._tasks

    def forget(self, job_id: str) -> None:
        """A local job was claimed elsewhere, or cancelled before anyone started it."""
        self._local.discard(job_id)
        self._check_idle()

    def is_local(self, job_id: str) -> bool:
        return job_id in self._local

    def holds(self, job_id: str) -> bool:
        return job_id in self._tasks

    def stop_reason(self, job_id: str) -> StopReason | None:
        return self._stop_reasons.get(job_id)

    def stop(self, job_id: str, reason: StopReason) -> bool:
        """Cancel the task of a job this process holds; False if it holds none."""
        task = self._tasks.get(job_id)
        if task is None or task.done():
            return False
        self._stop_reasons.setdefault(job_id, reason)
        task.cancel()
        return True

    def wake(self) -> None:
        self._wakeup.set()

    async def join(self) -> None:
        """Until this process has nothing to run and nothing of its own waiting."""
        await self._idle.wait()

    # --- internals --------------------------------------------------------------------------

    async def _serve(self) -> None:
        while True:
            timeout = max(0.001, min(self.poll, self._next_renewal - time.monotonic()))
            # asyncio.timeout, not wait_for: on 3.11 a cancel racing wait_for's own
            # timeout can leave the task waiting for ever (drain would then hang)
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(timeout):
                    await self._wakeup.wait()
            self._wakeup.clear()
            try:
                await self._claim()
                if self._tasks:
                    for job_id in await self.store.cancel_requests(self.id):
                        self.stop(job_id, StopReason.USER)
                if time.monotonic() >= self._next_renewal:
                    await self._renew()
            except asyncio.CancelledError:
                raise
            except Exception:  # the database may blip; the next pass tries again
                log.exception("job queue pass failed")
                await asyncio.sleep(self.poll)

    async def _claim(self) -> list[Job]:
        async with self._claiming:  # one claim transaction at a time per process
            return await self._claim_once()

    async def _claim_once(self) -> list[Job]:
        if not self._accepting or not (self._local or self._takeover):
            return []
        free = max(0, self.limits.concurrency - len(self._at_provider))
        if not free:
            # Nothing can start here: only a dead worker's made or failed jobs could be
            # taken, and looking for those once per poll is enough (a burst of submissions
            # or notifications must not turn into a burst of claim transactions).
            if time.monotonic() - self._handover_pass < self.poll:
                return []
            self._handover_pass = time.monotonic()
        request = ClaimRequest(
            limits=self.limits,
            platforms=frozenset(self._platforms) if self._takeover else frozenset(),
            local_ids=frozenset(self._local),
            max_run=free,
            lease=self.lease,
        )
        jobs = await self.store.claim_jobs(self.id, request)
        for job in jobs:
            self._local.discard(job.id)
            if job.status in (JobStatus.QUEUED, JobStatus.RUNNING):
                self._at_provider.add(job.id)
            task = asyncio.get_running_loop().create_task(self._hold(job), name=job.id)
            self._tasks[job.id] = task
        if jobs:
            self._idle.clear()
        return jobs

    async def _hold(self, job: Job) -> None:
        try:
            await self._run(job)
        except asyncio.CancelledError:
            raise
        except Exception:  # the job's own code reports its errors; this is a last guard
            log.exception("job %s crashed", job.id)
        finally:
            self._tasks.pop(job.id, None)
            self._at_provider.discard(job.id)
            self._stop_reasons.pop(job.id, None)
            self.wake()
            self._check_idle()

    async def _renew(self) -> None:
        self._next_renewal = time.monotonic() + self.lease / 3
        before = set(self._tasks)
        held = await self.store.renew_leases(self.id, self.lease)
        for job_id in before & set(self._tasks):
            if job_id in held:
                if held[job_id]:
                    self.stop(job_id, StopReason.USER)
                continue
            job = await self.store.get_job(job_id)
            if job is not None and job.settled:
                continue  # it finished meanwhile: its task is returning
            log.warning("job %s was taken over by another process; dropping it", job_id)
            self.stop(job_id, StopReason.LOST)

    def _check_idle(self) -> None:
        if not self._tasks and not self._local:
            self._idle.set()
