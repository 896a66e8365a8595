"""The scheduling rules, proven deterministically through a `Worker` on a real store.

Jobs are rows in the jobs table (the queue); the worker claims them and runs them as tasks
that the test holds with gates — never with time. The same rules across processes and
engines are proven in `tests/storage/test_job_queue.py`.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest

from bot.errors import UserQueueFull
from bot.models import Job, JobStatus, Thread, ThreadKey
from bot.queue import Limits, positions
from bot.scheduler import StopReason, Worker
from bot.store import Store
from tests.factories import queued_job


class Jobs:
    """Jobs whose end the test decides; records the order they started in."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.started: list[str] = []
        self.finished: list[str] = []
        self.cancelled: list[str] = []
        self.gates: dict[str, asyncio.Event] = {}
        self.worker: Worker | None = None
        self.clock = 0.0

    async def run(self, job: Job) -> None:
        """What the core does with a claimed job, reduced to: hold, then settle."""
        assert self.worker is not None
        self.started.append(job.id)
        try:
            await self.gates.setdefault(job.id, asyncio.Event()).wait()
        except asyncio.CancelledError:
            self.cancelled.append(job.id)
            raise
        await self.store.fail_job(job.id, self.worker.id, JobStatus.FAILED, "test: done")
        await self.store.settle_job(job.id, self.worker.id)
        self.finished.append(job.id)

    async def submit(self, job_id: str, user: str, thread: str | None = None) -> None:
        assert self.worker is not None
        thread_id = thread or f"thread-{job_id}"
        await self.store.create_thread(
            Thread(thread_id, ThreadKey("test", "w", "c", thread_id), user, "t", 1.0)
        )
        self.clock += 1.0
        job = queued_job(job_id, thread_id, user, created_at=self.clock)
        await self.store.add_job(job, max_queued=self.worker.limits.per_user_queued)
        await self.worker.submit(job_id)
        await settle()

    async def release(self, job_id: str) -> None:
        self.gates.setdefault(job_id, asyncio.Event()).set()
        await settle()


async def settle() -> None:
    """Let the worker's claim passes and the jobs' store writes run."""
    for _ in range(30):
        await asyncio.sleep(0.005)


@pytest.fixture
async def make_worker(sqlite_store: Store) -> AsyncIterator[Callable[..., Awaitable[Jobs]]]:
    """Workers that are drained at the end, so no held job outlives its test."""
    made: list[Worker] = []

    async def make(concurrency: int, per_user_running: int, per_user_queued: int) -> Jobs:
        jobs = Jobs(sqlite_store)
        limits = Limits(concurrency, per_user_running, per_user_queued)
        jobs.worker = Worker(sqlite_store, limits, jobs.run, poll=0.05)
        await jobs.worker.start()
        made.append(jobs.worker)
        return jobs

    yield make
    for worker in made:
        await worker.drain(0)


async def test_global_cap_limits_running_jobs(make_worker) -> None:
    jobs = await make_worker(2, 5, 10)
    for i in range(5):
        await jobs.submit(f"j{i}", f"user{i}")
    assert jobs.started == ["j0", "j1"]
    await jobs.release("j0")
    assert jobs.started == ["j0", "j1", "j2"]


async def test_round_robin_between_users_fifo_within_a_user(make_worker, sqlite_store) -> None:
    jobs = await make_worker(1, 1, 20)
    for i in range(10):
        await jobs.submit(f"alice{i}", "alice")
    await jobs.submit("bob0", "bob")
    await jobs.submit("bob1", "bob")
    assert jobs.started == ["alice0"]
    # bob's first job is next in line even though alice queued nine before it
    assert positions(await sqlite_store.queue_view())["bob0"] == 1
    for job in ("alice0", "bob0", "alice1", "bob1"):
        await jobs.release(job)
    assert jobs.started == ["alice0", "bob0", "alice1", "bob1", "alice2"]


async def test_one_job_per_thread_in_submission_order(make_worker) -> None:
    jobs = await make_worker(4, 4, 10)
    await jobs.submit("edit1", "alice", "t")
    await jobs.submit("edit2", "bob", "t")
    await jobs.submit("other", "bob", "u")
    assert jobs.started == ["edit1", "other"]
    await jobs.release("edit1")
    assert jobs.started == ["edit1", "other", "edit2"]


async def test_per_user_running_cap_lets_others_through(make_worker, sqlite_store) -> None:
    jobs = await make_worker(4, 1, 10)
    await jobs.submit("a1", "alice")
    await jobs.submit("a2", "alice")
    await jobs.submit("b1", "bob")
    assert jobs.started == ["a1", "b1"]
    assert await sqlite_store.user_load("alice") == (1, 1)


async def test_queue_cap_refuses_with_the_count(make_worker) -> None:
    jobs = await make_worker(1, 1, 2)
    for i in range(3):  # one runs, two wait
        await jobs.submit(f"a{i}", "alice")
    with pytest.raises(UserQueueFull) as refused:
        await jobs.submit("a3", "alice")
    assert refused.value.user_message == (
        "You already have 3 images in progress. Try again when one of them is finished."
    )
    await jobs.submit("b0", "bob")  # others are still served (bob waits behind alice0)
    assert jobs.started == ["a0"]


async def test_cancel_stops_a_running_job(make_worker) -> None:
    jobs = await make_worker(1, 1, 10)
    await jobs.submit("a", "alice")
    await jobs.submit("b", "bob")
    assert jobs.worker is not None
    assert jobs.worker.stop("a", StopReason.USER) is True  # running: its task is cancelled
    await settle()
    assert jobs.cancelled == ["a"]
    assert jobs.worker.stop("nope", StopReason.USER) is False


async def test_queue_positions_follow_the_round_robin_order(make_worker, sqlite_store) -> None:
    jobs = await make_worker(1, 1, 10)
    await jobs.submit("a0", "alice")
    await jobs.submit("a1", "alice")
    await jobs.submit("a2", "alice")
    await jobs.submit("b0", "bob")
    assert positions(await sqlite_store.queue_view()) == {"b0": 1, "a1": 2, "a2": 3}


async def test_drain_finishes_running_within_grace_and_hands_the_rest_over(
    make_worker, sqlite_store
) -> None:
    jobs = await make_worker(2, 2, 10)
    for name in ("quick", "slow", "waiting"):
        await jobs.submit(name, name)
    assert jobs.worker is not None
    jobs.gates["quick"].set()
    left = await jobs.worker.drain(grace=0.2)
    assert jobs.finished == ["quick"]
    assert jobs.cancelled == ["slow"]
    assert sorted(left) == ["slow", "waiting"]
    slow = await sqlite_store.get_job("slow")
    assert slow is not None and slow.status is JobStatus.RUNNING
    assert slow.owner is None and slow.lease_until is None  # anyone may take it at once
