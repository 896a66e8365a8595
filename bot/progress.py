"""Progress for the jobs this process watches, within the platforms' rate limits.

Every job accepted here, or claimed here, is watched until it ends: its sink, and what its
user was last shown. A ticker spreads updates over each interval (elapsed time for running
jobs, places in the shared queue for waiting ones) under one global rate budget.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from dataclasses import dataclass

from bot.models import Job, JobStatus
from bot.queue import positions
from bot.scheduler import Worker
from bot.sinks import Phase, Progress, ReplySink, Undeliverable
from bot.store import Store

log = logging.getLogger(__name__)

PROGRESS_SLICES = 10
"""The progress ticker wakes this many times per interval, each time sending a share."""


@dataclass
class LiveJob:
    """A job this process is watching: its sink and what the user was last shown."""

    job: Job
    sink: ReplySink
    started: float | None = None
    shown_position: int | None = None
    sending: bool = False
    """A progress update is in flight: skip ticks rather than pile up slow edits."""
    last_sent: float = float("-inf")
    """When the last background update went out (monotonic): at most one per interval."""


async def safe_progress(sink: ReplySink, update: Progress, *, fatal: bool = False) -> None:
    """A progress update that fails is logged, never fatal to its job — except, with
    `fatal` (the runner, as generation is about to start), a sink that says nothing can
    reach the user any more (`Undeliverable`)."""
    try:
        await sink.progress(update)
    except Undeliverable:
        if fatal:
            raise  # the runner fails the job before calling the provider
        log.warning("job %s cannot be answered any more", update.job.id)
    except Exception:
        log.warning("progress update for job %s failed", update.job.id, exc_info=True)


class ProgressBoard:
    def __init__(self, store: Store, worker: Worker, *, interval: float, rate: float) -> None:
        self.store = store
        self.worker = worker
        self.progress_interval = interval
        self.progress_rate = rate
        """Progress updates per second across all jobs (Discord allows a bot 50 requests/s)."""
        self.live: dict[str, LiveJob] = {}
        self._ticker: asyncio.Task[None] | None = None
        self._background: set[asyncio.Task[None]] = set()

    def start(self) -> None:
        if self._ticker is None:
            self._ticker = asyncio.get_running_loop().create_task(self._tick(), name="progress")

    async def stop(self) -> None:
        if self._ticker is not None:
            self._ticker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._ticker
            self._ticker = None

    def watch(self, job: Job, sink: ReplySink) -> LiveJob:
        live = self.live[job.id] = LiveJob(job=job, sink=sink)
        return live

    def forget(self, job_id: str) -> LiveJob | None:
        return self.live.pop(job_id, None)

    def count_for(self, user_id: str) -> int:
        return sum(1 for live in self.live.values() if live.job.user_id == user_id)

    async def show_place(self, live: LiveJob) -> None:
        """A job that waits is told its place at once; moves come with the ticks."""
        position = positions(await self.store.queue_view()).get(live.job.id)
        if position is not None and self.worker.is_local(live.job.id):
            live.shown_position = position
            self.post(live, Progress(live.job, Phase.QUEUED, position=position))

    def _may_post(self, live: LiveJob) -> bool:
        """Not while an update is in flight, and not more than once per interval: a queue of
        a hundred moves every time a job starts, and platforms rate-limit message edits.
        Skipped positions are caught up by the next tick."""
        return (
            not live.sending and time.monotonic() - live.last_sent >= self.progress_interval * 0.95
        )

    def post(self, live: LiveJob, update: Progress) -> None:
        """Send a progress update in the background, one at a time per job."""
        if live.sending:
            return
        live.sending = True
        live.last_sent = time.monotonic()

        async def send() -> None:
            try:
                await safe_progress(live.sink, update)
            finally:
                live.sending = False

        task = asyncio.get_running_loop().create_task(send())
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def _tick(self) -> None:
        """Progress, spread over each interval in slices and capped by `progress_rate`.

        Firing every job's update at the same instant made one loop iteration run for
        hundreds of milliseconds with 200 jobs live (BENCHMARKS.md), and Discord allows a
        bot 50 requests a second in all. Running jobs go first, then the front of the queue.
        Queue positions come from the shared queue, read at most once per interval.
        """
        pause = self.progress_interval / PROGRESS_SLICES
        budget = max(1, round(self.progress_rate * pause))
        places: dict[str, int] = {}
        read_at = float("-inf")
        while True:
            await asyncio.sleep(pause)
            try:
                if time.monotonic() - read_at >= self.progress_interval:
                    read_at = time.monotonic()
                    places = await self._queue_places()
                self._send_due_progress(budget, places)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.warning("progress pass failed", exc_info=True)

    async def _queue_places(self) -> dict[str, int]:
        """Places in the shared queue of the jobs accepted here; a job that left the queue
        without this process (another one took it, or it was cancelled) is let go here."""
        waiting = [job_id for job_id in self.live if self.worker.is_local(job_id)]
        if not waiting:
            return {}
        places = positions(await self.store.queue_view())
        for job_id in waiting:
            if job_id in places or not self.worker.is_local(job_id):
                continue
            job = await self.store.get_job(job_id)
            if job is None or job.owner != self.worker.id:
                self.worker.forget(job_id)
                if not self.worker.holds(job_id):
                    self.live.pop(job_id, None)
        return places

    def _send_due_progress(self, budget: int, places: dict[str, int]) -> None:
        clock = time.monotonic()
        due: list[tuple[tuple[int, float], LiveJob, Progress]] = []
        for live in self.live.values():
            if not self._may_post(live):
                continue
            if live.job.status is JobStatus.RUNNING and live.started is not None:
                update = Progress(live.job, Phase.GENERATING, elapsed=clock - live.started)
                due.append(((0, live.last_sent), live, update))
                continue
            position = places.get(live.job.id) if self.worker.is_local(live.job.id) else None
            if position is not None and position != live.shown_position:
                update = Progress(live.job, Phase.QUEUED, position=position)
                due.append(((position, live.last_sent), live, update))
        due.sort(key=lambda entry: entry[0])
        for _, live, update in due[:budget]:
            if update.phase is Phase.QUEUED:
                live.shown_position = update.position
            self.post(live, update)
