"""An answer that is not a whole, sane image is a failure of its own: never stored or posted."""

from __future__ import annotations

import asyncio
import functools
import io

import pytest
from PIL import Image as PILImage

from bot.core import ImagineBot, ImagineRequest
from bot.errors import BrokenImage
from bot.models import JobStatus, ThreadKey, new_id
from bot.providers.http import RetryPolicy
from bot.providers.nexconn import NexconnProvider
from bot.store import Store
from tests.fakes.collecting_sink import CollectingSink
from tests.fakes.nexconn_server import FakeNexconn, images_answer
from tests.fakes.scripted_json_server import Reply, png

KEY = "nx-test-key"


@functools.cache
def bomb() -> bytes:
    """48 kB of PNG that decodes to 20000 × 20000 pixels (400 megapixels)."""
    buffer = io.BytesIO()
    PILImage.new("1", (20000, 20000)).save(buffer, format="PNG")
    return buffer.getvalue()


def cut_short() -> bytes:
    """A real PNG cut to 120 bytes: right magic bytes, right header, no pixels."""
    return png((10, 200, 30), size=(64, 64))[:120]


@pytest.mark.parametrize("answer", [cut_short, bomb], ids=["cut-short", "bomb"])
async def test_a_broken_answer_fails_with_its_own_message(
    answer: object, sqlite_store: Store
) -> None:
    assert callable(answer)
    fake = FakeNexconn(KEY)
    await fake.start()
    provider = NexconnProvider(KEY, fake.base_url, policy=RetryPolicy(attempts=1))
    core = ImagineBot(sqlite_store, provider, model="gemini-2.5-flash-image")
    sink = CollectingSink()
    try:
        fake.script(Reply(200, images_answer(answer())))
        key = ThreadKey("test", "team", "channel", new_id())
        job = await core.imagine(ImagineRequest(key, "alice", "a fox"), sink)
        await asyncio.wait_for(core.idle(), 30)
    finally:
        await core.shutdown(0)
        await provider.aclose()
        await fake.close()

    assert sink.errors == ["The image provider sent a broken image. Please try again."]
    assert sink.errors == [BrokenImage().user_message]
    assert sink.deliveries == []  # nothing posted
    stored = await sqlite_store.get_job(job.id)
    assert stored is not None and stored.status is JobStatus.FAILED and stored.turn_id is None
    assert await sqlite_store.latest_turn(stored.thread_id) is None  # nothing to edit later
    assert BrokenImage.retryable  # a new attempt may well come back whole
    assert len(fake.requests) == 1
