"""The core's rules against a real SQLite store and a recording provider at the port seam."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable

import pytest

from bot.core import Delivery, EditRequest, ImagineBot, ImagineRequest, Phase
from bot.errors import (
    BadApiKey,
    ImagineError,
    NotAllowed,
    RateLimited,
    TooManyImages,
    UnknownTurn,
)
from bot.models import Image, JobStatus, ThreadKey, new_id
from bot.providers.base import Capabilities
from bot.scheduler import Limits
from bot.store import Store
from storage import open_store
from tests.fakes.collecting_sink import CollectingSink
from tests.fakes.recording_provider import RecordingProvider


@pytest.fixture
def provider() -> RecordingProvider:
    return RecordingProvider()


@pytest.fixture
async def core(sqlite_store: Store, provider: RecordingProvider) -> AsyncIterator[ImagineBot]:
    bot = ImagineBot(sqlite_store, provider, model="gemini-2.5-flash-image", history_turns=8)
    await bot.start()
    yield bot
    await bot.shutdown(0)


def key() -> ThreadKey:
    return ThreadKey("test", "team", "channel", new_id())


async def finished(core: ImagineBot, sink: CollectingSink) -> Delivery:
    await asyncio.wait_for(core.idle(), 10)
    assert not sink.errors, sink.errors
    return sink.deliveries[-1]


async def test_imagine_edit_edit_then_branch_from_turn_one(
    core: ImagineBot, provider: RecordingProvider
) -> None:
    sink = CollectingSink()
    await core.imagine(ImagineRequest(key(), "alice", "a panda making latte art", "16:9"), sink)
    turn1 = (await finished(core, sink)).turn
    await core.edit(EditRequest("alice", "make the cup blue", turn_id=turn1.id), sink)
    turn2 = (await finished(core, sink)).turn
    await core.edit(EditRequest("alice", "now in watercolor", turn_id=turn2.id), sink)
    turn3 = (await finished(core, sink)).turn
    await core.edit(EditRequest("bob", "give the panda a hat", turn_id=turn1.id), sink)
    branch = (await finished(core, sink)).turn

    assert [r.prompt for r in provider.requests] == [
        "a panda making latte art",
        "make the cup blue",
        "now in watercolor",
        "give the panda a hat",
    ]
    third = provider.requests[2]
    assert [h.prompt for h in third.history] == ["a panda making latte art", "make the cup blue"]
    assert third.history[-1].result.data == provider.results[1].image.data
    branch_request = provider.requests[3]
    assert [h.prompt for h in branch_request.history] == ["a panda making latte art"]
    assert branch_request.history[0].result.data == provider.results[0].image.data
    assert branch_request.aspect_ratio == "16:9"  # inherited from the parent
    assert (turn2.parent_id, turn3.parent_id, branch.parent_id) == (turn1.id, turn2.id, turn1.id)
    assert branch.thread_id == turn1.thread_id
    # the image the user saw is the image the provider made, and a reply to it finds the turn
    assert sink.deliveries[-1].image.data == provider.results[3].image.data
    assert (await core.turn_for_message("test", f"msg-{branch.id}")) == branch


async def test_two_quick_edits_build_on_each_other(
    core: ImagineBot, provider: RecordingProvider
) -> None:
    sink = CollectingSink()
    await core.imagine(ImagineRequest(key(), "alice", "a lighthouse"), sink)
    first = (await finished(core, sink)).turn
    gate = provider.hold()
    await core.edit(EditRequest("alice", "add a storm", turn_id=first.id), sink)
    await core.edit(EditRequest("alice", "add a boat", turn_id=first.id), sink)
    gate.set()
    await finished(core, sink)
    storm, boat = (d.turn for d in sink.deliveries[1:])
    assert storm.parent_id == first.id
    assert boat.parent_id == storm.id  # not a branch: the second reply waited for the first
    assert [h.prompt for h in provider.requests[2].history] == ["a lighthouse", "add a storm"]


async def test_history_is_capped_with_a_note(sqlite_store: Store) -> None:
    provider = RecordingProvider()
    core = ImagineBot(sqlite_store, provider, model="m", history_turns=2)
    sink = CollectingSink()
    await core.imagine(ImagineRequest(key(), "alice", "a cat"), sink)
    turn = (await finished(core, sink)).turn
    for step in ("a hat", "a scarf", "boots"):
        await core.edit(EditRequest("alice", step, turn_id=turn.id), sink)
        turn = (await finished(core, sink)).turn
    assert [h.prompt for h in provider.requests[-1].history] == ["a hat", "a scarf"]
    assert sink.deliveries[-1].notes == (
        "This thread is long, so only its last 2 images were sent to the model as context.",
    )
    assert sink.deliveries[1].notes == ()
    await core.shutdown(0)


async def test_reroll_uses_the_same_prompt_and_parent(
    core: ImagineBot, provider: RecordingProvider
) -> None:
    sink = CollectingSink()
    await core.imagine(ImagineRequest(key(), "alice", "a red fox", "3:2"), sink)
    first = (await finished(core, sink)).turn
    await core.edit(EditRequest("alice", "in snow", turn_id=first.id), sink)
    edit = (await finished(core, sink)).turn
    await core.reroll(edit.id, "bob", sink)
    again = (await finished(core, sink)).turn
    assert (again.prompt, again.parent_id, again.aspect_ratio) == ("in snow", first.id, "3:2")
    assert again.id != edit.id
    assert len(provider.requests) == 3


async def test_edit_by_thread_key_follows_the_latest_image(core: ImagineBot) -> None:
    sink = CollectingSink()
    thread_key = key()
    await core.imagine(ImagineRequest(thread_key, "alice", "a castle"), sink)
    first = (await finished(core, sink)).turn
    await core.edit(EditRequest("bob", "at night", thread_key=thread_key), sink)
    second = (await finished(core, sink)).turn
    assert second.parent_id == first.id
    with pytest.raises(UnknownTurn):
        await core.edit(EditRequest("bob", "again", thread_key=key()), sink)


async def test_delete_is_for_the_requester_or_a_moderator(core: ImagineBot) -> None:
    sink = CollectingSink()
    await core.imagine(ImagineRequest(key(), "alice", "a tree"), sink)
    turn = (await finished(core, sink)).turn
    with pytest.raises(NotAllowed) as refused:
        await core.delete(turn.id, "mallory")
    assert refused.value.user_message == (
        "Only the person who asked for this image (or a moderator) can do that."
    )
    await core.delete(turn.id, "mod", moderator=True)
    with pytest.raises(UnknownTurn) as gone:
        await core.edit(EditRequest("alice", "more leaves", turn_id=turn.id), sink)
    assert gone.value.user_message == (
        "I can't find that image any more: it was deleted or is from before my records."
    )
    assert await core.turn_for_message("test", f"msg-{turn.id}") is None


async def test_provider_failure_is_reported_and_the_next_job_works(
    core: ImagineBot, provider: RecordingProvider, sqlite_store: Store
) -> None:
    sink = CollectingSink()
    provider.fail_next(RateLimited(30))
    job = await core.imagine(ImagineRequest(key(), "alice", "a bridge"), sink)
    await asyncio.wait_for(core.idle(), 10)
    assert sink.errors == [
        "The image provider is rate limiting us. Please try again in 30 seconds."
    ]
    stored = await sqlite_store.get_job(job.id)
    assert stored is not None and stored.status is JobStatus.FAILED
    ok = CollectingSink()
    await core.imagine(ImagineRequest(key(), "alice", "a bridge"), ok)
    assert (await finished(core, ok)).image.mime == "image/png"


async def test_input_errors_have_their_sentences(core: ImagineBot) -> None:
    sink = CollectingSink()
    image = Image.of(b"\x89PNG\r\n\x1a\n" + b"0" * 10)
    cases = [
        (ImagineRequest(key(), "a", "   "), "Tell me what to draw: the prompt is empty."),
        (
            ImagineRequest(key(), "a", "x" * 2001),
            "The prompt is 2001 characters; please keep it under 2000.",
        ),
        (
            ImagineRequest(key(), "a", "cat", "7:5"),
            "“7:5” isn't a supported aspect ratio. "
            "Choose one of 1:1, 2:3, 3:2, 3:4, 4:3, 4:5, 5:4, 9:16, 16:9, 21:9.",
        ),
        (
            ImagineRequest(key(), "a", "cat", references=(image,) * 4),
            "You attached 4 images; at most 3 can be used at once.",
        ),
    ]
    for request, sentence in cases:
        with pytest.raises(ImagineError) as refused:
            await core.imagine(request, sink)
        assert refused.value.user_message == sentence
    assert await core.store.list_threads("test") == []  # nothing half-recorded


async def test_cancel_while_queued_and_while_running(
    sqlite_store: Store, provider: RecordingProvider
) -> None:
    core = ImagineBot(sqlite_store, provider, model="m", limits=Limits(concurrency=1))
    gate = provider.hold()
    running, queued = CollectingSink(), CollectingSink()
    first = await core.imagine(ImagineRequest(key(), "alice", "one"), running)
    second = await core.imagine(ImagineRequest(key(), "bob", "two"), queued)
    await asyncio.wait_for(provider.entered.wait(), 5)
    with pytest.raises(NotAllowed):
        await core.cancel(second.id, "alice")
    assert await core.cancel(second.id, "bob") is True
    assert await core.cancel(first.id, "alice") is True
    await asyncio.wait_for(core.idle(), 5)
    await asyncio.sleep(0.05)
    assert running.errors == ["Cancelled."] and queued.errors == ["Cancelled."]
    assert len(provider.requests) == 1  # the queued job never reached the provider
    for job in (first, second):
        stored = await sqlite_store.get_job(job.id)
        assert stored is not None and stored.status is JobStatus.CANCELLED
    gate.set()
    await core.shutdown(0)


async def test_queued_jobs_are_told_their_position_as_it_moves(
    sqlite_store: Store, provider: RecordingProvider
) -> None:
    core = ImagineBot(
        sqlite_store, provider, model="m", limits=Limits(concurrency=1), progress_interval=0.05
    )
    await core.start()
    gate = provider.hold()
    sinks = [CollectingSink() for _ in range(3)]
    jobs = [
        await core.imagine(ImagineRequest(key(), f"user{i}", f"prompt {i}"), sink)
        for i, sink in enumerate(sinks)
    ]

    def positions(sink: CollectingSink) -> list[int | None]:
        return [u.position for u in sink.progress_updates if u.phase is Phase.QUEUED]

    async def until(check: Callable[[], bool]) -> None:
        async with asyncio.timeout(5):
            while not check():
                await asyncio.sleep(0.01)

    await until(lambda: positions(sinks[2]) == [2])
    await core.cancel(jobs[0].id, "user0")  # the queue moves up by one
    await until(lambda: positions(sinks[2]) == [2, 1])
    assert positions(sinks[1]) == [1]
    gate.set()
    await asyncio.wait_for(core.idle(), 10)
    assert [len(s.deliveries) for s in sinks] == [0, 1, 1]
    await core.shutdown(0)


async def test_unfinished_jobs_resume_after_a_restart(db_url: str) -> None:
    store = await open_store(db_url)
    slow = RecordingProvider()
    gate = slow.hold()
    first = ImagineBot(store, slow, model="m")
    job = await first.imagine(ImagineRequest(key(), "alice", "a comet"), CollectingSink())
    await asyncio.wait_for(slow.entered.wait(), 5)
    left = await first.shutdown(grace=0)  # the process stops mid-job
    assert left == [job.id]
    await store.close()
    del gate

    store = await open_store(db_url)
    provider = RecordingProvider()
    second = ImagineBot(store, provider, model="m")
    sink = CollectingSink()
    second.register_platform("test", lambda _job: sink)
    assert await second.resume_unfinished() == 1
    delivery = await finished(second, sink)
    assert delivery.job.id == job.id and delivery.turn.prompt == "a comet"
    assert await store.unsettled_jobs() == []
    await second.shutdown(0)
    await store.close()


async def test_a_reply_before_the_first_image_waits_for_it(
    core: ImagineBot, provider: RecordingProvider
) -> None:
    sink = CollectingSink()
    thread_key = key()
    gate = provider.hold()
    await core.imagine(ImagineRequest(thread_key, "alice", "a harbour", "9:16"), sink)
    await core.edit(EditRequest("alice", "add gulls", thread_key=thread_key), sink)
    gate.set()
    await finished(core, sink)
    first, edit = (d.turn for d in sink.deliveries)
    assert edit.parent_id == first.id and edit.aspect_ratio == "9:16"


async def test_a_reply_whose_first_image_failed_is_told_so(
    core: ImagineBot, provider: RecordingProvider
) -> None:
    sink = CollectingSink()
    thread_key = key()
    gate = provider.hold()
    provider.fail_next(RateLimited(None))
    await core.imagine(ImagineRequest(thread_key, "alice", "a harbour"), sink)
    await core.edit(EditRequest("alice", "add gulls", thread_key=thread_key), sink)
    gate.set()
    await asyncio.wait_for(core.idle(), 10)
    assert sink.errors == [
        "The image provider is rate limiting us. Please try again in a minute.",
        "I can't find that image any more: it was deleted or is from before my records.",
    ]
    assert len(provider.requests) == 1


async def test_progress_is_rate_limited_and_the_front_of_the_queue_goes_first(
    sqlite_store: Store, provider: RecordingProvider
) -> None:
    core = ImagineBot(
        sqlite_store,
        provider,
        model="m",
        limits=Limits(concurrency=1, per_user_queued=50),
        progress_interval=0.2,
        progress_rate=20,  # 4 updates per 0.2 s interval, 1 per slice
    )
    await core.start()
    gate = provider.hold()
    sinks = [CollectingSink() for _ in range(31)]
    jobs = [
        await core.imagine(ImagineRequest(key(), f"user{i}", f"prompt {i}"), sink)
        for i, sink in enumerate(sinks)
    ]
    await asyncio.wait_for(provider.entered.wait(), 5)
    await asyncio.sleep(0.3)  # every queued job has been told its first place
    assert all(len(s.progress_updates) == 1 for s in sinks[1:])
    moved_at = len([u for s in sinks for u in s.progress_updates])

    await core.cancel(jobs[0].id, "user0")  # thirty queue positions change at once
    await asyncio.sleep(0.35)
    moves = [
        (u.position, i)
        for i, s in enumerate(sinks)
        for u in s.progress_updates[1:]
        if u.phase is Phase.QUEUED
    ]
    total = len([u for s in sinks for u in s.progress_updates]) - moved_at
    assert 1 <= total <= 0.35 / 0.02 + 2  # one per 20 ms slice at most, not thirty at once
    assert min(moves) == (1, 2)  # the new front of the queue was among those told
    gate.set()
    await asyncio.wait_for(core.idle(), 20)
    await core.shutdown(0)


async def test_a_failed_job_can_be_retried(
    core: ImagineBot, provider: RecordingProvider, sqlite_store: Store
) -> None:
    sink = CollectingSink()
    await core.imagine(ImagineRequest(key(), "alice", "a kite", "4:5"), sink)
    first = (await finished(core, sink)).turn
    provider.fail_next(RateLimited(None))
    failed = await core.edit(EditRequest("alice", "add a tail", turn_id=first.id), sink)
    await asyncio.wait_for(core.idle(), 10)
    assert sink.errors == ["The image provider is rate limiting us. Please try again in a minute."]

    retried = CollectingSink()
    again = await core.retry(failed.id, "bob", retried)
    turn = (await finished(core, retried)).turn
    assert (turn.prompt, turn.parent_id, turn.aspect_ratio, turn.user_id) == (
        "add a tail",
        first.id,
        "4:5",
        "bob",
    )
    assert again.id != failed.id
    assert [h.prompt for h in provider.requests[-1].history] == ["a kite"]
    with pytest.raises(UnknownTurn):
        await core.retry(again.id, "bob", retried)  # it succeeded: nothing to retry


async def test_a_refused_key_tells_the_user_an_admin_acts_and_the_log_says_what(
    core: ImagineBot, provider: RecordingProvider, caplog: pytest.LogCaptureFixture
) -> None:
    sink = CollectingSink()
    provider.fail_next(BadApiKey(detail="HTTP 401 from /v1/images/generations: invalid key"))
    await core.imagine(ImagineRequest(key(), "alice", "a moon"), sink)
    await asyncio.wait_for(core.idle(), 10)
    assert sink.errors == [
        "The bot isn't set up correctly for its image provider. "
        "An admin has been told to check the logs."
    ]
    [record] = [r for r in caplog.records if r.levelname == "ERROR"]
    assert "refused the API key" in record.getMessage()
    assert "HTTP 401" in record.getMessage()


async def test_the_providers_own_reference_limit_is_enforced(
    core: ImagineBot, provider: RecordingProvider
) -> None:
    provider.capabilities = Capabilities(max_reference_images=1)
    image = Image.of(b"\x89PNG\r\n\x1a\n" + b"0" * 10)
    with pytest.raises(TooManyImages) as refused:
        await core.imagine(
            ImagineRequest(key(), "alice", "cat", references=(image,) * 2), sink=CollectingSink()
        )
    assert refused.value.user_message == "You attached 2 images; at most 1 can be used at once."
    assert provider.requests == []


async def _held_by_a_dead_process(store: Store, prompt: str) -> tuple[str, str]:
    """A job some earlier process claimed (lease 0.1 s) before it died: (job id, worker)."""
    from bot.models import Job, Thread, TurnKind
    from bot.queue import ClaimRequest

    thread = await store.create_thread(Thread(new_id(), key(), "alice", prompt, 1.0))
    job = Job(
        id=new_id(),
        thread_id=thread.id,
        user_id="alice",
        kind=TurnKind.IMAGINE,
        prompt=prompt,
        reference_shas=(),
        aspect_ratio="1:1",
        parent_turn_id=None,
        follow_latest=False,
        destination=None,
        provider="recording",
        model="m",
    )
    await store.add_job(job)
    request = ClaimRequest(Limits(), frozenset(), frozenset({job.id}), max_run=1, lease=0.1)
    assert [j.id for j in await store.claim_jobs("dead", request)] == [job.id]
    return job.id, "dead"


async def test_a_failure_recorded_before_a_crash_is_shown_by_the_next_process(
    sqlite_store: Store, provider: RecordingProvider
) -> None:
    from bot.errors import error_record

    job_id, dead = await _held_by_a_dead_process(sqlite_store, "a storm")
    assert await sqlite_store.fail_job(
        job_id, dead, JobStatus.FAILED, error_record(RateLimited(30))
    )
    await asyncio.sleep(0.2)  # its lease lapses

    core = ImagineBot(sqlite_store, provider, model="m")
    await core.start()
    sink = CollectingSink()
    core.register_platform("test", lambda _job: sink)
    assert await core.resume_unfinished() == 1
    await asyncio.wait_for(core.idle(), 10)
    assert sink.errors == [RateLimited(30).user_message]  # its own sentence, once
    assert provider.requests == []
    shown = await sqlite_store.get_job(job_id)
    assert shown is not None and shown.settled and shown.status is JobStatus.FAILED
    await core.shutdown(0)


async def test_an_image_made_before_a_crash_is_posted_without_a_provider_call(
    sqlite_store: Store, provider: RecordingProvider
) -> None:
    from bot.models import Turn, TurnKind, Usage

    job_id, dead = await _held_by_a_dead_process(sqlite_store, "a lighthouse")
    job = await sqlite_store.get_job(job_id)
    assert job is not None
    made = Image.of(b"\x89PNG\r\n\x1a\n made by the dead process")
    turn = Turn(
        id=new_id(),
        thread_id=job.thread_id,
        parent_id=None,
        user_id="alice",
        kind=TurnKind.IMAGINE,
        prompt="a lighthouse",
        reference_shas=(),
        result_sha=made.sha256,
        text="",
        aspect_ratio="1:1",
        provider="recording",
        model="m",
        provider_state=None,
        usage=Usage(),
        created_at=2.0,
        duration_s=1.0,
    )
    assert await sqlite_store.make_job(job_id, dead, turn, [made])
    await asyncio.sleep(0.2)

    core = ImagineBot(sqlite_store, provider, model="m")
    await core.start()
    sink = CollectingSink()
    core.register_platform("test", lambda _job: sink)
    await core.resume_unfinished()
    await asyncio.wait_for(core.idle(), 10)
    assert [d.image.data for d in sink.deliveries] == [made.data]
    assert provider.requests == []  # posted from the store, never made again
    assert await core.turn_for_message("test", f"msg-{turn.id}") == turn  # indexed
    delivered = await sqlite_store.get_job(job_id)
    assert delivered is not None and delivered.status is JobStatus.DELIVERED
    await core.shutdown(0)
