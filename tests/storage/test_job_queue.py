"""The job queue's claim rules on every engine, with several stores on one database.

Each store object has its own engine and connections, as two processes would: races here
are real transactions racing, not coroutines sharing one session.
"""

from __future__ import annotations

import asyncio

import sqlalchemy as sa

from bot.errors import UserQueueFull
from bot.models import Job, JobStatus, Thread, ThreadKey
from bot.queue import ClaimRequest, Limits, positions
from storage import SqlStore
from tests.factories import queued_job
from tests.storage.conftest import Opener
from tests.storage.test_store_contract import image, turn


class Queue:
    """Builds threads and jobs with distinct, increasing creation times."""

    def __init__(self, store: SqlStore) -> None:
        self.store = store
        self.clock = 100.0

    async def add(
        self, job_id: str, user: str, thread: str | None = None, platform: str = "discord"
    ) -> None:
        thread_id = thread or f"thread-{job_id}"
        key = ThreadKey(platform, "guild", "channel", thread_id)
        await self.store.create_thread(Thread(thread_id, key, user, "t", 1.0))
        self.clock += 1.0
        await self.store.add_job(
            queued_job(job_id, thread_id, user, destination={"to": job_id}, created_at=self.clock)
        )


def request(
    concurrency: int = 4,
    per_user: int = 2,
    *,
    max_run: int = 100,
    lease: float = 30.0,
    platforms: tuple[str, ...] = ("discord",),
) -> ClaimRequest:
    return ClaimRequest(
        limits=Limits(concurrency, per_user, 100),
        platforms=frozenset(platforms),
        max_run=max_run,
        lease=lease,
    )


async def claimed(store: SqlStore, worker: str, claim: ClaimRequest) -> list[str]:
    return [job.id for job in await store.claim_jobs(worker, claim)]


async def test_caps_hold_across_processes(store: SqlStore, open_more: Opener) -> None:
    other = await open_more()
    queue = Queue(store)
    for n in range(6):
        await queue.add(f"j{n}", f"user{n % 3}")
    assert await claimed(store, "a", request(concurrency=3, max_run=1)) == ["j0"]
    # the other process sees a's job at the provider: only two more may start
    assert await claimed(other, "b", request(concurrency=3)) == ["j1", "j2"]
    assert await claimed(store, "a", request(concurrency=3)) == []
    assert await other.fail_job("j1", "b", JobStatus.FAILED, "x: y")  # one leaves
    # a slot is free: user0, served longest ago, goes next
    assert await claimed(store, "a", request(concurrency=3)) == ["j3"]


async def test_fair_order_and_per_user_cap(store: SqlStore) -> None:
    queue = Queue(store)
    for n in range(4):
        await queue.add(f"alice{n}", "alice")
    await queue.add("bob0", "bob")
    await queue.add("carol0", "carol")
    view = await store.queue_view()
    assert positions(view) == {
        "alice0": 1,
        "bob0": 2,
        "carol0": 3,
        "alice1": 4,
        "alice2": 5,
        "alice3": 6,
    }
    # round-robin, and alice may have two at the provider
    assert await claimed(store, "a", request(concurrency=10, per_user=2)) == [
        "alice0",
        "bob0",
        "carol0",
        "alice1",
    ]
    assert await store.user_load("alice") == (2, 2)


async def test_one_job_per_thread_in_order(store: SqlStore) -> None:
    queue = Queue(store)
    await queue.add("first", "alice", thread="t")
    await queue.add("second", "bob", thread="t")
    await queue.add("elsewhere", "bob", thread="u")
    assert await claimed(store, "a", request()) == ["first", "elsewhere"]
    assert await claimed(store, "a", request()) == []
    assert await store.fail_job("first", "a", JobStatus.FAILED, "x: y")
    assert await claimed(store, "a", request()) == ["second"]


async def test_a_lapsed_lease_is_taken_over_and_the_old_owner_is_refused(
    store: SqlStore, open_more: Opener
) -> None:
    other = await open_more()
    queue = Queue(store)
    await queue.add("j", "alice")
    assert await claimed(store, "dead", request(lease=0.3)) == ["j"]
    assert await store.set_job_provider_request("j", "dead", "req-1")
    assert await claimed(other, "live", request()) == []  # held: not stolen
    await asyncio.sleep(0.4)
    [job] = await other.claim_jobs("live", request())
    assert (job.id, job.status, job.owner) == ("j", JobStatus.RUNNING, "live")
    assert job.provider_request_id == "req-1"  # polled by the new owner, never resubmitted

    # the old owner wakes up: every write it tries is refused
    result = image("late")
    assert not await store.make_job("j", "dead", turn("t-late", "thread-j", result), [result])
    assert await store.get_turn("t-late") is None
    assert not await store.fail_job("j", "dead", JobStatus.FAILED, "x: y")
    assert await store.renew_leases("dead", 30) == {}
    assert await other.renew_leases("live", 30) == {"j": False}


async def test_a_graceful_stop_hands_over_at_once(store: SqlStore, open_more: Opener) -> None:
    other = await open_more()
    queue = Queue(store)
    await queue.add("j", "alice")
    assert await claimed(store, "leaving", request()) == ["j"]
    assert await store.release_jobs("leaving") == 1
    assert await claimed(other, "staying", request()) == ["j"]


async def test_made_and_failed_jobs_of_a_dead_worker_are_handed_over_beyond_the_caps(
    store: SqlStore,
) -> None:
    queue = Queue(store)
    for name in ("made", "failed", "busy"):
        await queue.add(name, name)
    assert await claimed(store, "dead", request(lease=0.2)) == ["made", "failed", "busy"]
    result = image("made")
    assert await store.make_job("made", "dead", turn("t-made", "thread-made", result), [result])
    assert await store.fail_job("failed", "dead", JobStatus.FAILED, "unavailable: down")
    await queue.add("waiting", "dave")
    assert await claimed(store, "live", request(concurrency=1)) == []  # busy still held
    await asyncio.sleep(0.3)
    # busy is at the provider and fills the cap of one; made and failed cost nothing
    taken = await store.claim_jobs("live", request(concurrency=1))
    assert [(j.id, j.status) for j in taken] == [
        ("made", JobStatus.MADE),
        ("failed", JobStatus.FAILED),
        ("busy", JobStatus.RUNNING),
    ]
    assert await store.deliver_job("made", "live", "discord", "m-1")
    assert await store.settle_job("failed", "live")


async def test_a_worker_claims_only_platforms_it_serves_or_its_own_jobs(store: SqlStore) -> None:
    queue = Queue(store)
    await queue.add("on-slack", "alice", platform="slack")
    await queue.add("on-discord", "bob")
    assert await claimed(store, "d", request(platforms=("discord",))) == ["on-discord"]
    local = ClaimRequest(
        limits=Limits(4, 2, 10), platforms=frozenset(), local_ids=frozenset({"on-slack"})
    )
    assert await claimed(store, "c", local) == []  # no free slot asked for
    local = ClaimRequest(
        limits=Limits(4, 2, 10),
        platforms=frozenset(),
        local_ids=frozenset({"on-slack"}),
        max_run=1,
    )
    assert await claimed(store, "c", local) == ["on-slack"]


async def test_cancel_requests_reach_the_holder(store: SqlStore, open_more: Opener) -> None:
    other = await open_more()
    queue = Queue(store)
    await queue.add("running", "alice")
    await queue.add("waiting", "alice", thread="thread-running")
    assert await claimed(store, "holder", request()) == ["running"]
    assert not await other.cancel_queued_job("running", "clicker", 30)  # not queued any more
    assert await other.request_cancel("running")
    assert await store.cancel_requests("holder") == ["running"]
    assert await store.renew_leases("holder", 30) == {"running": True}
    assert await other.cancel_queued_job("waiting", "clicker", 30)
    waiting = await store.get_job("waiting")
    assert waiting is not None and waiting.status is JobStatus.CANCELLED


async def test_racing_claimers_take_each_job_once(store: SqlStore, open_more: Opener) -> None:
    stores = [store, *[await open_more() for _ in range(4)]]
    queue = Queue(store)
    for n in range(12):
        await queue.add(f"j{n}", f"user{n}")

    async def claim_all(index: int) -> list[str]:
        return await claimed(stores[index], f"w{index}", request(concurrency=8, max_run=3))

    results = await asyncio.gather(*(claim_all(i) for i in range(len(stores))))
    taken = [job_id for result in results for job_id in result]
    assert len(taken) == len(set(taken)) == 8  # the global cap, each job once
    async with store.engine.connect() as conn:
        owners = await conn.execute(sa.text("SELECT count(*) FROM jobs WHERE owner IS NOT NULL"))
        assert owners.scalar_one() == 8


async def test_the_waiting_cap_is_exact_under_concurrent_admissions(
    store: SqlStore, open_more: Opener
) -> None:
    stores = [store, *[await open_more() for _ in range(4)]]
    queue = Queue(store)
    await queue.add("seed", "alice")  # one waiting already

    async def admit(n: int) -> bool:
        job = await store.get_job("seed")
        assert job is not None
        try:
            await stores[n % len(stores)].add_job(
                Job(**{**_fields(job), "id": f"more-{n}"}), max_queued=3
            )
        except UserQueueFull:
            return False
        return True

    admitted = await asyncio.gather(*(admit(n) for n in range(10)))
    assert sum(admitted) == 2  # three waiting in all, however the transactions interleave
    assert await store.user_load("alice") == (0, 3)


def _fields(job: Job) -> dict[str, object]:
    return {name: getattr(job, name) for name in Job.__slots__}  # type: ignore[attr-defined]


async def test_other_processes_hear_of_new_work_at_once_where_the_engine_can_tell(
    store: SqlStore, open_more: Opener
) -> None:
    other = await open_more()
    woken = asyncio.Event()
    stop = await other.listen(woken.set)
    if store.is_sqlite:
        assert stop is None  # SQLite cannot tell: workers poll
        return
    assert stop is not None
    try:
        await Queue(store).add("j", "alice")  # committed in another process's transaction
        await asyncio.wait_for(woken.wait(), 5)
    finally:
        await stop()
