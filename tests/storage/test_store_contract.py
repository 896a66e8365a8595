"""The `bot.store.Store` contract, run against every backend (see conftest: SQLite, PostgreSQL)."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy.exc import IntegrityError

from bot.models import Image, Job, JobStatus, Thread, ThreadKey, Turn, TurnKind, Usage
from bot.queue import ClaimRequest, Limits
from bot.store import Store
from storage import SqlStore, alembic_config, open_store
from storage.schema import metadata

TABLES = {"images", "threads", "turns", "jobs", "message_links", "events", "kv"}


# builders ------------------------------------------------------------------------------------
def image(label: str, mime: str = "image/png") -> Image:
    # Every byte value, so a driver that mangles NULs or high bytes fails the round trip.
    return Image.of(label.encode() + bytes(range(256)) * 64, mime)


def thread(n: int = 1, *, workspace: str = "guild-1", created_at: float = 1000.0) -> Thread:
    return Thread(
        id=f"thread-{n}",
        key=ThreadKey("discord", workspace, "channel-1", f"anchor-{n}"),
        created_by="user-1",
        title=f"a red fox ✨ {n}",
        created_at=created_at,
    )


def job(
    job_id: str,
    thread_id: str,
    *,
    parent: str | None = None,
    refs: tuple[str, ...] = (),
    created_at: float = 2000.0,
) -> Job:
    return Job(
        id=job_id,
        thread_id=thread_id,
        user_id="user-1",
        kind=TurnKind.EDIT if parent else TurnKind.IMAGINE,
        prompt=f"prompt for {job_id} — ünïcode",
        reference_shas=refs,
        aspect_ratio="16:9",
        parent_turn_id=parent,
        follow_latest=parent is not None,
        destination={"channel": "channel-1", "reply_to": job_id, "flags": [1, True, None]},
        provider="gemini",
        model="gemini-2.5-flash-image",
        created_at=created_at,
    )


def turn(
    turn_id: str,
    thread_id: str,
    result: Image,
    *,
    parent: str | None = None,
    refs: tuple[str, ...] = (),
    created_at: float = 3000.0,
) -> Turn:
    return Turn(
        id=turn_id,
        thread_id=thread_id,
        parent_id=parent,
        user_id="user-1",
        kind=TurnKind.EDIT if parent else TurnKind.IMAGINE,
        prompt=f"prompt for {turn_id}",
        reference_shas=refs,
        result_sha=result.sha256,
        text="here you go",
        aspect_ratio="1:1",
        provider="gemini",
        model="gemini-2.5-flash-image",
        provider_state={"contents": [{"role": "model", "parts": [{"thought_signature": "x"}]}]},
        usage=Usage(input_tokens=10, output_tokens=1290, total_tokens=1300),
        created_at=created_at,
        duration_s=4.25,
    )


WORKER = "worker-1"


async def claim(store: SqlStore, *job_ids: str, worker: str = WORKER) -> list[str]:
    """Claim exactly these jobs (as jobs submitted through `worker`), generous caps."""
    request = ClaimRequest(
        limits=Limits(concurrency=100, per_user_running=100, per_user_queued=100),
        platforms=frozenset(),
        local_ids=frozenset(job_ids),
        max_run=100,
    )
    return [j.id for j in await store.claim_jobs(worker, request)]


async def add_turn(
    store: SqlStore,
    thread_id: str,
    turn_id: str,
    *,
    parent: str | None = None,
    created_at: float = 3000.0,
) -> Turn:
    """A turn through the real path: job added, running, completed."""
    result = image(turn_id)
    await store.add_job(job(f"job-{turn_id}", thread_id, parent=parent, created_at=created_at))
    assert await claim(store, f"job-{turn_id}") == [f"job-{turn_id}"]
    assert await store.start_job(f"job-{turn_id}", WORKER, parent)
    done = turn(turn_id, thread_id, result, parent=parent, created_at=created_at)
    assert await store.make_job(f"job-{turn_id}", WORKER, done, [result])
    assert await store.deliver_job(f"job-{turn_id}", WORKER, "discord", None)
    return done


async def scalar(store: SqlStore, sql: str, **params: Any) -> Any:
    async with store.engine.connect() as conn:
        return (await conn.execute(sa.text(sql), params)).scalar_one()


# the contract --------------------------------------------------------------------------------
async def test_is_a_store(store: SqlStore) -> None:
    assert isinstance(store, Store)


async def test_images_are_deduplicated_and_round_trip(store: SqlStore) -> None:
    png, webp = image("a"), image("b", "image/webp")
    await store.put_images([png])
    await store.put_images([png, png, webp])
    await store.put_images([])

    assert await scalar(store, "SELECT count(*) FROM images") == 2
    assert await scalar(store, "SELECT size FROM images WHERE sha256 = :s", s=png.sha256) == len(
        png.data
    )
    got = await store.get_image(png.sha256)
    assert got is not None
    assert (got.data, got.mime, got.sha256) == (png.data, "image/png", png.sha256)
    got_webp = await store.get_image(webp.sha256)
    assert got_webp is not None and got_webp.mime == "image/webp" and got_webp.data == webp.data
    assert await store.get_image("0" * 64) is None


async def test_threads_by_id_and_key_and_create_is_idempotent(store: SqlStore) -> None:
    first = thread(1)
    assert await store.create_thread(first) == first
    assert await store.get_thread(first.id) == first
    assert await store.thread_by_key(first.key) == first

    again = Thread(id="thread-other", key=first.key, created_by="u2", title="x", created_at=9.0)
    assert await store.create_thread(again) == first
    assert await store.get_thread("thread-other") is None
    assert await store.get_thread("missing") is None
    assert await store.thread_by_key(ThreadKey("discord", "guild-1", "channel-1", "no")) is None


async def test_list_threads_newest_activity_first(store: SqlStore) -> None:
    for n, created in ((1, 100.0), (2, 200.0), (3, 300.0)):
        await store.create_thread(thread(n, created_at=created))
    await store.create_thread(thread(4, workspace="guild-2", created_at=400.0))

    ids = [t.id for t in await store.list_threads("discord", "guild-1")]
    assert ids == ["thread-3", "thread-2", "thread-1"]

    await add_turn(store, "thread-1", "t1", created_at=500.0)  # activity moves thread-1 up
    assert [t.id for t in await store.list_threads("discord", "guild-1")] == [
        "thread-1",
        "thread-3",
        "thread-2",
    ]
    assert [t.id for t in await store.list_threads("discord")] == [
        "thread-1",
        "thread-4",
        "thread-3",
        "thread-2",
    ]
    assert [t.id for t in await store.list_threads("discord", limit=2)] == ["thread-1", "thread-4"]
    assert await store.list_threads("slack") == []


async def test_job_lifecycle_to_delivery(store: SqlStore) -> None:
    await store.create_thread(thread(1))
    ref = image("reference", "image/jpeg")
    queued = job("job-1", "thread-1", refs=(ref.sha256,))
    await store.add_job(queued, [ref])

    assert await store.get_job("job-1") == queued
    assert await store.get_image(ref.sha256) == ref
    assert await store.unsettled_jobs() == [queued]
    assert await store.active_job_for_thread("thread-1") == queued
    assert await store.get_job("missing") is None

    assert await claim(store, "job-1") == ["job-1"]
    running = await store.get_job("job-1")
    assert running is not None
    assert running.status is JobStatus.RUNNING and running.started_at is not None
    assert running.owner == WORKER and running.lease_until is not None
    assert await store.unsettled_jobs() == [running]

    assert await store.set_job_provider_request("job-1", WORKER, "req-42")
    assert not await store.set_job_provider_request("job-1", "someone-else", "req-43")
    running = await store.get_job("job-1")
    assert running is not None and running.provider_request_id == "req-42"

    result = image("result")
    done_turn = turn("turn-1", "thread-1", result, refs=(ref.sha256,))
    assert await store.make_job("job-1", WORKER, done_turn, [result, ref])

    assert await store.get_turn("turn-1") == done_turn
    assert await store.get_image(result.sha256) == result
    made = await store.get_job("job-1")
    assert made is not None
    assert made.status is JobStatus.MADE and made.turn_id == "turn-1" and not made.settled
    assert made.finished_at is not None and made.provider_request_id == "req-42"
    assert await store.active_job_for_thread("thread-1") is None  # the thread may go on
    assert [j.id for j in await store.unsettled_jobs()] == ["job-1"]  # not posted yet

    assert await store.deliver_job("job-1", WORKER, "discord", "m-1")
    delivered = await store.get_job("job-1")
    assert delivered is not None and delivered.status is JobStatus.DELIVERED
    assert delivered.settled and delivered.owner is None
    assert await store.turn_for_message("discord", "m-1") == done_turn
    assert await store.unsettled_jobs() == []
    assert await scalar(store, "SELECT count(*) FROM images") == 2


async def test_unsettled_jobs_oldest_first_and_running_parent(store: SqlStore) -> None:
    await store.create_thread(thread(1))
    root = await add_turn(store, "thread-1", "root")
    await store.add_job(job("late", "thread-1", created_at=20.0))
    await store.add_job(job("early", "thread-1", parent="root", created_at=10.0))
    assert [j.id for j in await store.unsettled_jobs()] == ["early", "late"]
    active = await store.active_job_for_thread("thread-1")
    assert active is not None and active.id == "early"

    assert await claim(store, "early", "late") == ["early"]  # one job per thread
    assert await store.start_job("early", WORKER, root.id)  # the parent actually used
    early = await store.get_job("early")
    assert early is not None and early.parent_turn_id == "root"


async def test_failed_and_cancelled_jobs_are_shown_then_settled(store: SqlStore) -> None:
    await store.create_thread(thread(1))
    await store.create_thread(thread(2))
    await store.add_job(job("bad", "thread-1"))
    await store.add_job(job("stop", "thread-2"))
    assert await claim(store, "bad") == ["bad"]

    assert not await store.fail_job("bad", "someone-else", JobStatus.FAILED, "x: no")
    assert await store.fail_job("bad", WORKER, JobStatus.FAILED, "unavailable: provider down")
    assert await store.cancel_queued_job("stop", WORKER, lease=30)
    assert not await store.cancel_queued_job("stop", WORKER, lease=30)  # only once

    bad, stop = await store.get_job("bad"), await store.get_job("stop")
    assert bad is not None and stop is not None
    assert (bad.status, bad.error) == (JobStatus.FAILED, "unavailable: provider down")
    assert (stop.status, stop.error) == (JobStatus.CANCELLED, "cancelled: cancelled by user")
    assert bad.finished_at is not None and stop.finished_at is not None
    assert bad.turn_id is None
    assert {j.id for j in await store.unsettled_jobs()} == {"bad", "stop"}  # not shown yet
    assert await store.active_job_for_thread("thread-1") is None

    assert await store.settle_job("bad", WORKER) and await store.settle_job("stop", WORKER)
    assert await store.unsettled_jobs() == []


async def test_make_job_is_one_transaction(store: SqlStore) -> None:
    await store.create_thread(thread(1))
    await store.add_job(job("job-1", "thread-1"))
    assert await claim(store, "job-1") == ["job-1"]
    result = image("orphan")
    broken = turn("turn-1", "thread-missing", result)  # foreign key fails after the image

    with pytest.raises(IntegrityError):
        await store.make_job("job-1", WORKER, broken, [result])

    assert await store.get_image(result.sha256) is None
    assert await store.get_turn("turn-1") is None
    pending = await store.get_job("job-1")
    assert pending is not None and pending.status is JobStatus.RUNNING


async def test_message_links(store: SqlStore) -> None:
    await store.create_thread(thread(1))
    first = await add_turn(store, "thread-1", "t1", created_at=1.0)
    second = await add_turn(store, "thread-1", "t2", parent="t1", created_at=2.0)

    await store.link_message("discord", "m-1", "t1")
    await store.link_message("discord", "m-2", "t1")
    await store.link_message("slack", "m-1", "t2")  # same id, other platform

    assert await store.turn_for_message("discord", "m-1") == first
    assert await store.turn_for_message("slack", "m-1") == second
    assert await store.turn_for_message("discord", "unknown") is None
    assert await store.messages_for_turn("discord", "t1") == ["m-1", "m-2"]
    assert await store.messages_for_turn("slack", "t1") == []

    await store.link_message("discord", "m-2", "t2")  # the message now shows another turn
    assert await store.turn_for_message("discord", "m-2") == second
    assert await store.messages_for_turn("discord", "t1") == ["m-1"]


async def test_branching_paths(store: SqlStore) -> None:
    await store.create_thread(thread(1))
    root = await add_turn(store, "thread-1", "root", created_at=1.0)
    t2 = await add_turn(store, "thread-1", "t2", parent="root", created_at=2.0)
    t3 = await add_turn(store, "thread-1", "t3", parent="t2", created_at=3.0)
    t2b = await add_turn(store, "thread-1", "t2b", parent="root", created_at=4.0)

    assert await store.turn_path("t3", 10) == [root, t2, t3]
    assert await store.turn_path("t2b", 10) == [root, t2b]
    assert await store.turn_path("root", 10) == [root]
    assert await store.turn_path("t3", 2) == [t2, t3]
    assert await store.turn_path("t3", 1) == [t3]
    assert await store.turn_path("t3", 0) == []
    assert await store.turn_path("missing", 5) == []

    assert await store.count_path("t3") == 3
    assert await store.count_path("t2b") == 2
    assert await store.count_path("root") == 1
    assert await store.count_path("missing") == 0

    await store.mark_turn_deleted("t2")  # still an ancestor of t3
    assert [t.id for t in await store.turn_path("t3", 10)] == ["root", "t2", "t3"]


async def test_latest_turn_skips_deleted(store: SqlStore) -> None:
    await store.create_thread(thread(1))
    assert await store.latest_turn("thread-1") is None
    first = await add_turn(store, "thread-1", "t1", created_at=1.0)
    await add_turn(store, "thread-1", "t2", parent="t1", created_at=2.0)
    latest = await store.latest_turn("thread-1")
    assert latest is not None and latest.id == "t2"

    await store.mark_turn_deleted("t2")
    assert await store.latest_turn("thread-1") == first
    deleted = await store.get_turn("t2")
    assert deleted is not None and deleted.deleted is True

    await store.mark_turn_deleted("t1")
    assert await store.latest_turn("thread-1") is None


async def test_claim_event_once_even_after_reopen(store: SqlStore, database_url: str) -> None:
    assert await store.claim_event("slack", "Ev1") is True
    assert await store.claim_event("slack", "Ev1") is False
    assert await store.claim_event("discord", "Ev1") is True
    await store.close()

    reopened = await open_store(database_url)
    try:
        assert await reopened.claim_event("slack", "Ev1") is False
        assert await reopened.claim_event("slack", "Ev2") is True
    finally:
        await reopened.close()


async def test_old_event_ids_can_be_forgotten(store: SqlStore) -> None:
    assert await store.claim_event("slack", "Ev1") is True
    assert await store.claim_event("slack", "Ev2") is True
    assert await store.forget_events(before=time.time() - 3600) == 0  # both are recent
    assert await store.claim_event("slack", "Ev1") is False
    assert await store.forget_events(before=time.time() + 1) == 2
    assert await store.claim_event("slack", "Ev1") is True


async def test_key_value_state(store: SqlStore) -> None:
    assert await store.get_state("console:thread") is None
    await store.set_state("console:thread", {"id": "thread-1", "n": 3, "tags": ["a", "ß"]})
    await store.set_state("other", 7)
    assert await store.get_state("console:thread") == {"id": "thread-1", "n": 3, "tags": ["a", "ß"]}

    await store.set_state("console:thread", ["replaced"])
    assert await store.get_state("console:thread") == ["replaced"]
    await store.set_state("console:thread", None)
    assert await store.get_state("console:thread") is None
    assert await store.get_state("other") == 7


async def test_migrations_from_empty_database_and_reopen_is_idempotent(
    database_url: str,
) -> None:
    head = ScriptDirectory.from_config(alembic_config()).get_current_head()
    assert head is not None
    for _ in range(2):
        opened = await open_store(database_url)
        try:
            async with opened.engine.connect() as conn:
                names = await conn.run_sync(lambda c: set(sa.inspect(c).get_table_names()))
                versions = await conn.execute(sa.text("SELECT version_num FROM alembic_version"))
                assert versions.scalars().all() == [head]
            assert names >= TABLES | {"alembic_version"}
        finally:
            await opened.close()


async def test_migrations_match_schema(store: SqlStore) -> None:
    """A change to storage/schema.py without a new migration fails here."""

    def diff(connection: sa.Connection) -> list[Any]:
        context = MigrationContext.configure(connection, opts={"compare_type": True})
        return list(compare_metadata(context, metadata))

    async with store.engine.connect() as conn:
        assert await conn.run_sync(diff) == []


async def test_concurrent_writers_lose_nothing(store: SqlStore) -> None:
    shared = image("shared")  # every writer also stores this one: contention on one row
    for n in range(20):
        await store.create_thread(thread(n))
        await store.add_job(job(f"job-{n}", f"thread-{n}", created_at=10.0 + n))
    assert len(await claim(store, *(f"job-{n}" for n in range(20)))) == 20

    async def write(n: int) -> None:
        result = image(f"result-{n}")
        done = turn(f"turn-{n}", f"thread-{n}", result, created_at=100.0 + n)
        assert await store.start_job(f"job-{n}", WORKER, None)
        assert await store.make_job(f"job-{n}", WORKER, done, [shared, result])
        assert await store.deliver_job(f"job-{n}", WORKER, "discord", f"m-{n}")

    await asyncio.gather(*(write(n) for n in range(20)))

    assert await scalar(store, "SELECT count(*) FROM turns") == 20
    assert (
        await scalar(store, "SELECT count(*) FROM images WHERE sha256 = :s", s=shared.sha256) == 1
    )
    assert await scalar(store, "SELECT count(*) FROM images") == 21
    assert await store.unsettled_jobs() == []
    assert await scalar(store, "SELECT count(*) FROM message_links") == 20


async def test_reopen_keeps_everything(store: SqlStore, database_url: str) -> None:
    created = await store.create_thread(thread(1))
    ref = image("reference")
    await store.add_job(job("queued", "thread-1", refs=(ref.sha256,)), [ref])
    root = await add_turn(store, "thread-1", "root", created_at=1.0)
    child = await add_turn(store, "thread-1", "child", parent="root", created_at=2.0)
    await store.link_message("discord", "m-1", "child")
    await store.set_state("k", {"v": 1})
    queued = await store.get_job("queued")
    await store.close()

    reopened = await open_store(database_url)
    try:
        assert await reopened.get_thread("thread-1") == created
        assert await reopened.thread_by_key(created.key) == created
        assert await reopened.get_image(ref.sha256) == ref
        assert await reopened.unsettled_jobs() == [queued]
        assert await reopened.turn_path("child", 10) == [root, child]
        assert await reopened.turn_for_message("discord", "m-1") == child
        assert await reopened.latest_turn("thread-1") == child
        assert await reopened.get_state("k") == {"v": 1}
    finally:
        await reopened.close()
