"""Retention on both engines: what a purge removes, what it keeps, and that text stays.

The rule is `storage.retention`'s docstring: an image loses its bytes unless a live turn
(not deleted, not older than the cutoff) has it within the reach of its path (itself and
`history_turns` ancestors), or a job still may use it.
"""

from __future__ import annotations

import time

from bot.models import Image
from storage import SqlStore, open_store
from storage.retention import JobUse, RetentionPlan, TurnUse
from tests.storage.test_store_contract import WORKER, claim, image, job, scalar, thread, turn

NEW = time.time() + 3600.0
"""Turn time after any cutoff used below: a live turn."""
OLD = 3000.0


async def made(
    store: SqlStore,
    thread_id: str,
    turn_id: str,
    result: Image,
    *,
    parent: str | None = None,
    refs: tuple[Image, ...] = (),
    created_at: float = OLD,
) -> None:
    """A turn through the real path: job (with its reference images) added, run, delivered."""
    shas = tuple(r.sha256 for r in refs)
    await store.add_job(job(f"job-{turn_id}", thread_id, parent=parent, refs=shas), refs)
    assert await claim(store, f"job-{turn_id}") == [f"job-{turn_id}"]
    assert await store.start_job(f"job-{turn_id}", WORKER, parent)
    done = turn(turn_id, thread_id, result, parent=parent, refs=shas, created_at=created_at)
    assert await store.make_job(f"job-{turn_id}", WORKER, done, [result])
    assert await store.deliver_job(f"job-{turn_id}", WORKER, "discord", None)


async def test_sweep_removes_only_images_no_newer_turn_or_job_needs(store: SqlStore) -> None:
    for n in (1, 2, 3):
        await store.create_thread(thread(n))
    a = [image(f"a{i}") for i in range(6)]
    shared = image("shared reference")
    # thread 1: a0 → … → a4 (old) → a5 (new). History 2: an edit of a5 sends a4, a5; a
    # reroll of a5 sends a3, a4: its reach is a5, a4, a3
    parent = None
    for i in range(6):
        refs = (shared,) if i == 5 else ()
        await made(
            store, "thread-1", f"a{i}", a[i], parent=parent, refs=refs,
            created_at=NEW if i == 5 else OLD,
        )  # fmt: skip
        parent = f"a{i}"
    # thread 2: an old turn whose reference a new turn (a5) reuses
    b = image("b")
    await made(store, "thread-2", "b0", b, refs=(shared,))
    # thread 3: an old turn with a queued edit waiting on it
    c = image("c")
    await made(store, "thread-3", "c0", c)
    await store.add_job(job("job-pending", "thread-3", parent="c0"))
    before_bytes = sum(x.size for x in (a[0], a[1], a[2], b))

    result = await store.purge_images(before=time.time() + 60, history_turns=2)

    gone = {a[0].sha256, a[1].sha256, a[2].sha256, b.sha256}
    kept = {a[3].sha256, a[4].sha256, a[5].sha256, shared.sha256, c.sha256}
    assert (result.images, result.bytes) == (4, before_bytes)
    assert await store.missing_images([*gone, *kept]) == gone
    for x in (a[0], a[1], a[2], b):
        assert await store.get_image(x.sha256) is None
    for sha in kept:
        assert await store.get_image(sha) is not None
    # the conversation's text stays, and so do its turns' rows
    old = await store.get_turn("a0")
    assert old is not None and old.prompt == "prompt for a0" and old.text == "here you go"
    assert [t.id for t in await store.turn_path("a5", 100)] == [f"a{i}" for i in range(6)]
    assert await scalar(store, "SELECT count(*) FROM turns") == 8
    if store.is_sqlite:  # the freed pages went back to the file system
        assert await scalar(store, "PRAGMA auto_vacuum") == 2
        assert await scalar(store, "PRAGMA freelist_count") == 0

    # nothing left to do; the same bytes stored again come back (deduplicated, revived)
    assert (await store.purge_images(before=time.time() + 60, history_turns=2)).images == 0
    await store.put_images([a[0]])
    assert await store.get_image(a[0].sha256) == a[0]


async def test_without_a_cutoff_nothing_expires(store: SqlStore) -> None:
    await store.create_thread(thread(1))
    await made(store, "thread-1", "t0", image("t0"))
    assert (await store.purge_images(before=None, history_turns=8)).images == 0
    assert await store.get_image(image("t0").sha256) is not None


async def test_deleted_turns_lose_images_nothing_else_uses(store: SqlStore) -> None:
    for n in (1, 2, 3):
        await store.create_thread(thread(n))
    same = image("same picture")  # two turns made the same bytes: one row, shared
    await made(store, "thread-1", "d1", same, created_at=NEW)
    await made(store, "thread-2", "d2", same, created_at=NEW)
    e1, e2 = image("e1"), image("e2")
    await made(store, "thread-3", "e1", e1, created_at=NEW)
    await made(store, "thread-3", "e2", e2, parent="e1", created_at=NEW)

    await store.mark_turn_deleted("d1")
    assert (await store.purge_images(before=None, history_turns=8, turn_ids=["d1"])).images == 0
    await store.mark_turn_deleted("d2")
    assert (await store.purge_images(before=None, history_turns=8, turn_ids=["d2"])).images == 1
    assert await store.get_image(same.sha256) is None

    await store.mark_turn_deleted("e1")  # still the ancestor e2 is edited from
    await store.purge_images(before=None, history_turns=8, turn_ids=["e1"])
    assert await store.missing_images([e1.sha256, e2.sha256]) == set()
    await store.mark_turn_deleted("e2")
    await store.purge_images(before=None, history_turns=8, turn_ids=["e2"])
    assert await store.missing_images([e1.sha256, e2.sha256]) == {e1.sha256, e2.sha256}


async def test_an_existing_sqlite_file_is_switched_to_incremental_vacuum(tmp_path) -> None:  # type: ignore[no-untyped-def]
    import sqlite3

    path = tmp_path / "old.db"
    with sqlite3.connect(path) as conn:  # made before retention: auto_vacuum is NONE
        conn.execute("CREATE TABLE leftover (x)")
    store = await open_store(f"sqlite:///{path}")
    try:
        assert await scalar(store, "PRAGMA auto_vacuum") == 2
    finally:
        await store.close()


def test_the_plan_keeps_what_a_reroll_of_a_live_turn_needs() -> None:
    # a reroll of t3 sends its parent's path capped at 2: t2, t1; t1 is 2 steps from t3
    turns = [
        TurnUse(f"t{i}", f"t{i - 1}" if i else None, "th", (f"r{i}",), 0.0 if i < 3 else 9.0, False)
        for i in range(4)
    ]
    plan = RetentionPlan(turns, history_turns=2)
    assert plan.needed(5.0) == {"r3", "r2", "r1"}
    pending = JobUse("th", ("ref",), parent_turn_id="t0", turn_id=None, follow_latest=False)
    assert plan.needed(5.0, [pending]) == {"r3", "r2", "r1", "r0", "ref"}
