"""Models and sizes through the core: a thread keeps its model, edits continue on it, and
a model or size the bot cannot serve is refused before anything is queued."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from bot.catalog import ModelNotOffered, ModelNotSold, SizeNotSupported, made_with
from bot.core import EditRequest, ImagineBot, ImagineRequest
from bot.models import ThreadKey, new_id
from bot.store import Store
from tests.fakes.collecting_sink import CollectingSink
from tests.fakes.recording_provider import RecordingProvider

FLASH = "gemini-2.5-flash-image"
PRO = "gemini-3-pro-image-preview"
FLASH_31 = "gemini-3.1-flash-image-preview"


class GmiShapedProvider(RecordingProvider):
    """The recording provider under a real provider's name, so the catalogue applies."""

    name = "gmi"


@pytest.fixture
def provider() -> RecordingProvider:
    return RecordingProvider()


@pytest.fixture
async def core(sqlite_store: Store, provider: RecordingProvider) -> AsyncIterator[ImagineBot]:
    bot = ImagineBot(sqlite_store, provider, model=FLASH, models=(FLASH, PRO))
    await bot.start()
    yield bot
    await bot.shutdown(0)


def key() -> ThreadKey:
    return ThreadKey("test", "team", "channel", new_id())


async def settle(core: ImagineBot) -> None:
    await asyncio.wait_for(core.idle(), 10)


async def test_a_thread_keeps_its_model_and_size_and_pays_its_price(
    core: ImagineBot, provider: RecordingProvider, sqlite_store: Store
) -> None:
    sink = CollectingSink()
    job = await core.imagine(ImagineRequest(key(), "alice", "a poster", model=PRO, size="2K"), sink)
    await settle(core)
    first = sink.deliveries[-1].turn
    assert (provider.requests[0].model, provider.requests[0].size) == (PRO, "2K")
    assert (first.model, first.size) == (PRO, "2K")
    stored = await sqlite_store.get_job(job.id)
    assert stored is not None and stored.cost_usd == pytest.approx(0.134)

    await core.edit(EditRequest("alice", "bigger title", turn_id=first.id), sink)
    await settle(core)
    await core.reroll(first.id, "alice", sink)
    await settle(core)
    assert [(r.model, r.size) for r in provider.requests[1:]] == [(PRO, "2K"), (PRO, "2K")]


async def test_the_default_model_has_no_size_field(
    core: ImagineBot, provider: RecordingProvider
) -> None:
    sink = CollectingSink()
    await core.imagine(ImagineRequest(key(), "alice", "a fox", size="1K"), sink)
    await settle(core)
    assert (provider.requests[0].model, provider.requests[0].size) == (FLASH, None)


@pytest.mark.parametrize(
    ("model", "size", "error", "words"),
    [
        (
            FLASH_31,
            None,
            ModelNotOffered,
            "This bot doesn't offer 'gemini-3.1-flash-image-preview'",
        ),
        (
            PRO,
            "8K",
            SizeNotSupported,
            "Gemini 3 Pro Image can't make 8K images; it offers 1K, 2K, 4K.",
        ),
        (FLASH, "2K", SizeNotSupported, "Gemini 2.5 Flash Image can't make 2K images"),
    ],
)
async def test_what_the_bot_cannot_serve_is_refused_before_anything_is_queued(
    core: ImagineBot,
    provider: RecordingProvider,
    sqlite_store: Store,
    model: str,
    size: str | None,
    error: type[Exception],
    words: str,
) -> None:
    request = ImagineRequest(key(), "alice", "a fox", model=model, size=size)
    with pytest.raises(error) as refused:
        await core.imagine(request, CollectingSink())
    assert str(getattr(refused.value, "user_message", "")).startswith(words)
    assert await sqlite_store.thread_by_key(request.key) is None
    assert provider.requests == []


async def test_a_model_the_provider_does_not_sell_is_refused(sqlite_store: Store) -> None:
    core = ImagineBot(sqlite_store, GmiShapedProvider(), model=FLASH, models=(FLASH, FLASH_31))
    with pytest.raises(ModelNotSold) as refused:
        await core.imagine(
            ImagineRequest(key(), "alice", "a fox", model=FLASH_31), CollectingSink()
        )
    assert refused.value.user_message == (
        "Gemini 3.1 Flash Image isn't available from this bot's image provider (gmi). "
        "Choose another model."
    )
    await core.shutdown(0)


async def test_a_thread_whose_model_was_withdrawn_continues_on_the_default(
    sqlite_store: Store, provider: RecordingProvider
) -> None:
    before = ImagineBot(sqlite_store, provider, model=FLASH, models=(PRO,))
    sink = CollectingSink()
    await before.imagine(ImagineRequest(key(), "alice", "a poster", model=PRO, size="4K"), sink)
    await settle(before)
    await before.shutdown(0)
    first = sink.deliveries[-1].turn

    after = ImagineBot(sqlite_store, provider, model=FLASH)  # Pro no longer offered
    await after.edit(EditRequest("alice", "bigger title", turn_id=first.id), sink)
    await settle(after)
    await after.shutdown(0)
    assert (provider.requests[-1].model, provider.requests[-1].size) == (FLASH, None)


async def test_reframe_is_an_edit_of_that_turn_at_another_ratio(
    core: ImagineBot, provider: RecordingProvider
) -> None:
    sink = CollectingSink()
    await core.imagine(ImagineRequest(key(), "alice", "a lighthouse", aspect_ratio="1:1"), sink)
    await settle(core)
    first = sink.deliveries[-1].turn
    await core.reframe(first.id, "16:9", "bob", sink)
    await settle(core)
    request = provider.requests[-1]
    assert request.aspect_ratio == "16:9"
    assert request.prompt == (
        "Recompose this image at a 16:9 aspect ratio, keeping everything else the same."
    )
    assert request.history[-1].result.data == provider.results[0].image.data
    made = sink.deliveries[-1].turn
    assert (made.parent_id, made.aspect_ratio, made.kind.value) == (first.id, "16:9", "edit")


def test_made_with_names_model_size_and_provider() -> None:
    assert made_with(PRO, "2K", "gmi") == "Gemini 3 Pro Image · 2K · via GMI Cloud"
    assert made_with(FLASH, None, "nexconn") == "Gemini 2.5 Flash Image · via Nexconn"


async def test_reframe_recomposes_the_image_it_was_chosen_under_even_if_an_edit_lands_first(
    core: ImagineBot, provider: RecordingProvider
) -> None:
    sink = CollectingSink()
    await core.imagine(ImagineRequest(key(), "alice", "a lighthouse"), sink)
    await settle(core)
    first = sink.deliveries[-1].turn
    gate = provider.hold()
    await core.edit(EditRequest("alice", "make it blue", turn_id=first.id), sink)
    await core.reframe(first.id, "16:9", "alice", sink)  # chosen under the first image
    gate.set()
    await settle(core)
    blue, reframed = provider.requests[-2], provider.requests[-1]
    assert blue.prompt == "make it blue"
    assert reframed.history[-1].result.data == provider.results[0].image.data
    assert sink.deliveries[-1].turn.parent_id == first.id
