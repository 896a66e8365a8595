"""The scheduler's rules, proven deterministically: jobs are held by gates, never by time."""

from __future__ import annotations

import asyncio

import pytest

from bot.errors import ShuttingDown, UserQueueFull
from bot.scheduler import Limits, Scheduler, Work


class Jobs:
    """Jobs whose end the test decides; records the order they started in."""

    def __init__(self) -> None:
        self.started: list[str] = []
        self.finished: list[str] = []
        self.cancelled: list[str] = []
        self.gates: dict[str, asyncio.Event] = {}

    def work(self, job_id: str, user: str, thread: str | None = None) -> Work:
        gate = self.gates[job_id] = asyncio.Event()

        async def run() -> None:
            self.started.append(job_id)
            try:
                await gate.wait()
            except asyncio.CancelledError:
                self.cancelled.append(job_id)
                raise
            self.finished.append(job_id)

        return Work(job_id, user, thread or f"thread-{job_id}", run)

    async def release(self, job_id: str) -> None:
        self.gates[job_id].set()
        await settle()


@pytest.fixture
async def make_scheduler():
    """Schedulers that are drained at the end, so no held job outlives its test."""
    made: list[Scheduler] = []

    def make(concurrency: int, per_user_running: int, per_user_queued: int) -> Scheduler:
        scheduler = Scheduler(Limits(concurrency, per_user_running, per_user_queued))
        made.append(scheduler)
        return scheduler

    yield make
    for scheduler in made:
        await scheduler.drain(0)


async def settle() -> None:
    for _ in range(10):
        await asyncio.sleep(0)


async def test_global_cap_limits_running_jobs(make_scheduler) -> None:
    jobs = Jobs()
    scheduler = make_scheduler(2, 5, 10)
    for i in range(5):
        scheduler.submit(jobs.work(f"j{i}", f"user{i}"))
    await settle()
    assert jobs.started == ["j0", "j1"]
    await jobs.release("j0")
    assert jobs.started == ["j0", "j1", "j2"]


async def test_round_robin_between_users_fifo_within_a_user(make_scheduler) -> None:
    jobs = Jobs()
    scheduler = make_scheduler(1, 1, 20)
    for i in range(10):
        scheduler.submit(jobs.work(f"alice{i}", "alice"))
    scheduler.submit(jobs.work("bob0", "bob"))
    scheduler.submit(jobs.work("bob1", "bob"))
    await settle()
    assert jobs.started == ["alice0"]
    # bob's first job is next in line even though alice queued nine before it
    assert scheduler.positions()["bob0"] == 1
    for job in ("alice0", "bob0", "alice1", "bob1"):
        await jobs.release(job)
    assert jobs.started == ["alice0", "bob0", "alice1", "bob1", "alice2"]


async def test_one_job_per_thread_in_submission_order(make_scheduler) -> None:
    jobs = Jobs()
    scheduler = make_scheduler(4, 4, 10)
    scheduler.submit(jobs.work("edit1", "alice", "t"))
    scheduler.submit(jobs.work("edit2", "bob", "t"))
    scheduler.submit(jobs.work("other", "bob", "u"))
    await settle()
    assert jobs.started == ["edit1", "other"]
    await jobs.release("edit1")
    assert jobs.started == ["edit1", "other", "edit2"]


async def test_per_user_running_cap_lets_others_through(make_scheduler) -> None:
    jobs = Jobs()
    scheduler = make_scheduler(4, 1, 10)
    scheduler.submit(jobs.work("a1", "alice"))
    scheduler.submit(jobs.work("a2", "alice"))
    scheduler.submit(jobs.work("b1", "bob"))
    await settle()
    assert jobs.started == ["a1", "b1"]
    assert scheduler.user_load("alice") == (1, 1)


async def test_queue_cap_refuses_with_the_count(make_scheduler) -> None:
    jobs = Jobs()
    scheduler = make_scheduler(1, 1, 2)
    for i in range(3):  # one runs, two wait
        scheduler.submit(jobs.work(f"a{i}", "alice"))
    await settle()
    with pytest.raises(UserQueueFull) as refused:
        scheduler.submit(jobs.work("a3", "alice"))
    assert refused.value.user_message == (
        "You already have 3 images in progress. Try again when one of them is finished."
    )
    scheduler.submit(jobs.work("b0", "bob"))  # others are still served
    assert not scheduler.is_queued("a3")


async def test_cancel_queued_and_running(make_scheduler) -> None:
    jobs = Jobs()
    scheduler = make_scheduler(1, 1, 10)
    scheduler.submit(jobs.work("a", "alice"))
    scheduler.submit(jobs.work("b", "bob"))
    await settle()
    assert scheduler.cancel("b") is True  # queued: removed, never starts
    assert scheduler.cancel("a") is True  # running: its task is cancelled
    await settle()
    assert jobs.cancelled == ["a"]
    assert jobs.started == ["a"]
    assert scheduler.cancel("nope") is False
    await asyncio.wait_for(scheduler.join(), 1)


async def test_queue_positions_follow_the_round_robin_order(make_scheduler) -> None:
    jobs = Jobs()
    scheduler = make_scheduler(1, 1, 10)
    scheduler.submit(jobs.work("a0", "alice"))
    scheduler.submit(jobs.work("a1", "alice"))
    scheduler.submit(jobs.work("a2", "alice"))
    scheduler.submit(jobs.work("b0", "bob"))
    await settle()
    assert scheduler.positions() == {"b0": 1, "a1": 2, "a2": 3}


async def test_drain_finishes_running_within_grace_and_keeps_the_rest(make_scheduler) -> None:
    jobs = Jobs()
    scheduler = make_scheduler(2, 2, 10)
    for name in ("quick", "slow", "waiting"):
        scheduler.submit(jobs.work(name, name))
    await settle()
    jobs.gates["quick"].set()
    left = await scheduler.drain(grace=0.05)
    assert jobs.finished == ["quick"]
    assert jobs.cancelled == ["slow"]
    assert sorted(left) == ["slow", "waiting"]
    with pytest.raises(ShuttingDown):
        scheduler.submit(jobs.work("late", "late"))
