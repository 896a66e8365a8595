"""The ledger (the jobs table) and exact admission, on every engine.

Stores here each have their own engine and connections, and one test runs real OS
processes: admissions racing are real transactions racing. Ten requests at once with one
image left must make one image; failed and cancelled jobs give theirs back.
"""

from __future__ import annotations

import asyncio
import json
import sys
import textwrap
from collections.abc import Callable
from dataclasses import replace
from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from bot.models import Job, JobStatus, Thread, ThreadKey
from bot.policy import Admission, Overrides, Policy, PolicyRefused, Requester, Rule, Scope
from bot.queue import ClaimRequest, Limits
from bot.usage import UsageLine
from storage import SqlStore
from tests.factories import queued_job
from tests.storage.conftest import Opener
from tests.storage.test_store_contract import image, turn

UTC = ZoneInfo("UTC")
NOW = datetime(2026, 12, 3, 20, 48, tzinfo=UTC).timestamp()
GUILD = Scope("discord", "guild-1")


def who(user: str = "alice", workspace: str = "guild-1", channel: str = "general") -> Requester:
    return Requester("discord", workspace, channel, user)


def admission(
    policy: Policy,
    user: str = "alice",
    *,
    cost: float = 0.039,
    at: float = NOW,
    workspace: str = "guild-1",
) -> Admission:
    return Admission(who(user, workspace), policy, cost, UTC, at)


class Ledger:
    """Threads and jobs in one guild, with creation times the test chooses."""

    def __init__(self, store: SqlStore) -> None:
        self.store = store
        self.count = 0

    async def thread(self, user: str = "alice", workspace: str = "guild-1") -> str:
        self.count += 1
        thread_id = f"thread-{self.count}"
        key = ThreadKey("discord", workspace, "general", thread_id)
        await self.store.create_thread(Thread(thread_id, key, user, "t", NOW - 60))
        return thread_id

    def job(self, job_id: str, thread_id: str, user: str = "alice", **values: object) -> Job:
        return queued_job(
            job_id, thread_id, user, **{"created_at": NOW - 1, "cost_usd": 0.039, **values}
        )

    async def add(
        self,
        job_id: str,
        user: str = "alice",
        *,
        policy: Policy | None = None,
        store: SqlStore | None = None,
        workspace: str = "guild-1",
        **values: object,
    ) -> None:
        thread_id = await self.thread(user, workspace)
        target = store or self.store
        job = self.job(job_id, thread_id, user, **values)
        check = (
            None
            if policy is None
            else admission(policy, user, at=job.created_at + 1, workspace=workspace)
        )
        await target.add_job(job, admission=check)


async def test_jobs_record_their_workspace_channel_and_price(store: SqlStore) -> None:
    ledger = Ledger(store)
    await ledger.add("j1")
    lines = await store.usage_lines(NOW - 3600, NOW + 3600)
    assert lines == [UsageLine("discord", "guild-1", "alice", 1, pytest.approx(0.039))]
    job = await store.get_job("j1")
    assert job is not None and job.cost_usd == pytest.approx(0.039)


async def test_ten_requests_at_once_with_one_image_left_make_one(
    store: SqlStore, open_more: Opener
) -> None:
    stores = [store, *[await open_more() for _ in range(4)]]
    ledger = Ledger(store)
    await ledger.add("seed")
    policy = Policy(user_daily_limit=2)
    threads = [await ledger.thread() for _ in range(10)]

    async def try_one(n: int) -> bool:
        job = ledger.job(f"race-{n}", threads[n])
        try:
            await stores[n % len(stores)].add_job(job, admission=admission(policy))
        except PolicyRefused as refused:
            assert refused.refusal.rule is Rule.USER_DAILY
            return False
        return True

    admitted = await asyncio.gather(*(try_one(n) for n in range(10)))
    assert sum(admitted) == 1
    lines = await store.usage_lines(NOW - 86400, NOW + 3600)
    assert [line.images for line in lines] == [2]


async def test_the_monthly_budget_is_exact_under_concurrency(
    store: SqlStore, open_more: Opener
) -> None:
    stores = [store, *[await open_more() for _ in range(3)]]
    ledger = Ledger(store)
    policy = Policy(monthly_budget=0.039 * 3)  # room for three images in all
    threads = [await ledger.thread(f"user-{n}") for n in range(8)]

    async def try_one(n: int) -> bool:
        job = ledger.job(f"b-{n}", threads[n], f"user-{n}")
        try:
            await stores[n % len(stores)].add_job(job, admission=admission(policy, f"user-{n}"))
        except PolicyRefused as refused:
            assert refused.refusal.rule is Rule.MONTHLY_BUDGET
            return False
        return True

    assert sum(await asyncio.gather(*(try_one(n) for n in range(8)))) == 3


async def test_failed_and_cancelled_jobs_give_their_image_back(store: SqlStore) -> None:
    ledger = Ledger(store)
    policy = Policy(user_daily_limit=1)
    await ledger.add("first", policy=policy)
    with pytest.raises(PolicyRefused):
        await ledger.add("second", policy=policy)
    claimed = await store.claim_jobs(
        "w", ClaimRequest(Limits(), frozenset({"discord"}), max_run=10)
    )
    assert [job.id for job in claimed] == ["first"]
    await store.fail_job("first", "w", JobStatus.FAILED, "provider_down: …")
    await ledger.add("third", policy=policy)  # the failed one no longer counts
    assert await store.cancel_queued_job("third", "w", 30.0)
    await ledger.add("fourth", policy=policy)  # nor the cancelled one
    lines = await store.usage_lines(NOW - 86400, NOW + 3600)
    assert [line.images for line in lines] == [1]


async def test_made_and_delivered_jobs_keep_counting(store: SqlStore) -> None:
    ledger = Ledger(store)
    policy = Policy(user_daily_limit=1)
    await ledger.add("first", policy=policy)
    await store.claim_jobs("w", ClaimRequest(Limits(), frozenset({"discord"}), max_run=10))
    made = turn("t1", "thread-1", image("fox"))
    assert await store.make_job("first", "w", replace(made, user_id="alice"), [image("fox")])
    assert await store.deliver_job("first", "w", "discord", "m1")
    ledger_row = await store.get_job("first")
    assert ledger_row is not None and ledger_row.provider == "gemini"  # who made it
    with pytest.raises(PolicyRefused) as refused:
        await ledger.add("second", policy=policy)
    assert refused.value.refusal.used == 1
    assert refused.value.user_message.startswith("You've made 1 of your 1 image today")


async def test_yesterdays_images_do_not_count_and_other_workspaces_count_for_the_user_only(
    store: SqlStore,
) -> None:
    ledger = Ledger(store)
    yesterday = datetime(2026, 12, 2, 23, 59, tzinfo=UTC).timestamp()
    await ledger.add("old", created_at=yesterday)
    await ledger.add("bob-elsewhere", "bob", workspace="guild-2")
    await ledger.add("today", policy=Policy(user_daily_limit=1, workspace_daily_limit=2))
    # bob's image in another server does not count for this one's day...
    await ledger.add("bob", "bob", policy=Policy(workspace_daily_limit=2))
    with pytest.raises(PolicyRefused) as refused:
        await ledger.add("carol", "carol", policy=Policy(workspace_daily_limit=2))
    assert refused.value.refusal.rule is Rule.WORKSPACE_DAILY
    # ...but a person's day is one day wherever they ask: DMs and other servers count
    with pytest.raises(PolicyRefused) as refused:
        await ledger.add("bob-again", "bob", policy=Policy(user_daily_limit=2), workspace="@dm")
    assert refused.value.refusal.rule is Rule.USER_DAILY


async def test_a_day_given_back_starts_the_users_count_again(store: SqlStore) -> None:
    ledger = Ledger(store)
    policy = Policy(user_daily_limit=1)
    await ledger.add("first", policy=policy, created_at=NOW - 10)
    with pytest.raises(PolicyRefused):
        await ledger.add("second", policy=policy, created_at=NOW - 9)
    await store.update_overrides(
        GUILD, lambda o: replace(o, day_resets={"alice": NOW - 5}), "admin"
    )
    await ledger.add("third", policy=policy)
    with pytest.raises(PolicyRefused):
        await ledger.add("fourth", policy=policy)


async def test_stored_settings_win_inside_the_transaction(store: SqlStore) -> None:
    ledger = Ledger(store)
    await store.update_overrides(GUILD, lambda o: replace(o, blocked_users=frozenset({"eve"})), "a")
    with pytest.raises(PolicyRefused) as refused:
        await ledger.add("e1", "eve", policy=Policy())
    assert refused.value.refusal.rule is Rule.BLOCKED_USER
    assert await store.check_admission(admission(Policy(), "eve")) is not None
    assert await store.check_admission(admission(Policy(), "alice")) is None


async def test_two_admins_changing_lists_at_once_both_keep_their_change(
    store: SqlStore, open_more: Opener
) -> None:
    other = await open_more()

    def add(channel: str) -> Callable[[Overrides], Overrides]:
        def change(current: Overrides) -> Overrides:
            return replace(
                current, allowed_channels=(current.allowed_channels or frozenset()) | {channel}
            )

        return change

    await asyncio.gather(
        *(
            s.update_overrides(GUILD, add(f"c{n}"), "admin")
            for n, s in enumerate([store, other] * 4)
        )
    )
    stored = await store.get_overrides(GUILD)
    assert stored.allowed_channels == frozenset(f"c{n}" for n in range(8))


async def test_usage_per_user_and_per_day(store: SqlStore) -> None:
    ledger = Ledger(store)
    day1 = datetime(2026, 12, 1, 12, tzinfo=UTC).timestamp()
    day3 = datetime(2026, 12, 3, 12, tzinfo=UTC).timestamp()
    await ledger.add("a1", created_at=day1)
    await ledger.add("a2", created_at=day3)
    await ledger.add("b1", "bob", created_at=day3, cost_usd=0.134)
    await ledger.add("x", "bob", created_at=day3, status=JobStatus.FAILED)
    lines = await store.usage_lines(day1 - 3600, day3 + 3600, workspace="guild-1")
    assert lines == [
        UsageLine("discord", "guild-1", "alice", 2, pytest.approx(0.078)),
        UsageLine("discord", "guild-1", "bob", 1, pytest.approx(0.134)),
    ]
    midnights = [datetime(2026, 12, d, tzinfo=UTC).timestamp() for d in (1, 2, 3, 4)]
    assert await store.usage_by_period(GUILD, midnights) == [1, 0, 2]


ADMIT_SCRIPT = textwrap.dedent(
    """
    import asyncio, json, sys
    from zoneinfo import ZoneInfo
    from bot.models import Job, TurnKind
    from bot.policy import Admission, Policy, PolicyRefused, Requester
    from storage import open_store

    async def main(url, names, at):
        store = await open_store(url)
        admitted = []
        try:
            for name in names:
                job = Job(id=name, thread_id=name, user_id="alice", kind=TurnKind.IMAGINE,
                          prompt="p", reference_shas=(), aspect_ratio="1:1",
                          parent_turn_id=None, follow_latest=False, destination=None,
                          provider="demo", model="m", created_at=at, cost_usd=0.039)
                who = Requester("discord", "guild-1", "general", "alice")
                try:
                    await store.add_job(job, admission=Admission(
                        who, Policy(user_daily_limit=3), 0.039, ZoneInfo("UTC"), at + 1))
                    admitted.append(name)
                except PolicyRefused:
                    pass
        finally:
            await store.close()
        print(json.dumps(admitted))

    asyncio.run(main(sys.argv[1], sys.argv[2].split(","), float(sys.argv[3])))
    """
)


async def test_admission_is_exact_across_real_processes(store: SqlStore, database_url: str) -> None:
    ledger = Ledger(store)
    names = [[f"p{p}-{n}" for n in range(4)] for p in range(4)]
    for group in names:
        for name in group:
            key = ThreadKey("discord", "guild-1", "general", name)
            await store.create_thread(Thread(name, key, "alice", "t", NOW - 60))
    del ledger
    procs = [
        await asyncio.create_subprocess_exec(
            sys.executable,
            "-c",
            ADMIT_SCRIPT,
            database_url,
            ",".join(group),
            str(NOW - 1),
            stdout=asyncio.subprocess.PIPE,
            cwd=Path(__file__).resolve().parents[2],
        )
        for group in names
    ]
    outputs = [await proc.communicate() for proc in procs]
    assert all(proc.returncode == 0 for proc in procs)
    admitted = [name for out, _ in outputs for name in json.loads(out)]
    assert len(admitted) == 3  # sixteen tries in four processes, a limit of three
    lines = await store.usage_lines(NOW - 86400, NOW + 3600)
    assert [line.images for line in lines] == [3]


async def test_a_thread_without_jobs_or_turns_can_be_discarded(store: SqlStore) -> None:
    ledger = Ledger(store)
    empty = await ledger.thread()
    assert await store.discard_thread(empty)
    assert await store.get_thread(empty) is None
    await ledger.add("j1")  # thread-2, with a job
    assert not await store.discard_thread("thread-2")
    assert await store.get_thread("thread-2") is not None
