"""The Shrinker's memory: a reduced copy is made once and kept; an image it cannot reduce
(HEIC without an HEVC decoder, a corrupt file) is sent as is and its bytes are not kept; the
copies held are bounded in bytes. Through NexconnProvider too, against its loopback fake."""

from __future__ import annotations

import io
import random
from collections.abc import AsyncIterator

import pytest
from PIL import Image as PILImage

from bot.models import Image, ImageRequest, ImageResult
from bot.providers import offload
from bot.providers.nexconn import NexconnProvider
from bot.providers.shrink import BUDGET, Shrinker
from tests.fakes.nexconn_server import FakeNexconn
from tests.fakes.scripted_json_server import b64
from tests.providers.support import FAST, history_turn, within

KEY = "nx-shrink-key"
MODEL = "gemini-2.5-flash-image"


def detailed_png(seed: int, size: tuple[int, int] = (700, 500)) -> bytes:
    """A PNG full of fine detail (noise), wider than 512 px: what a shrink must work on."""
    pixels = random.Random(seed).randbytes(size[0] * size[1] * 3)
    buffer = io.BytesIO()
    PILImage.frombytes("RGB", size, pixels).save(buffer, format="PNG", compress_level=1)
    return buffer.getvalue()


def heic_like(size: int) -> bytes:
    """What an iPhone photo looks like to a Pillow without an HEVC decoder: an ISO-BMFF
    `ftyp heic` box, then bytes it cannot read."""
    ftyp = b"\x00\x00\x00\x18ftypheic\x00\x00\x00\x00mif1heic"
    return ftyp + random.Random(size).randbytes(size - len(ftyp))


def heic(data: bytes) -> Image:
    return Image.of(data, "image/heic")


@pytest.mark.parametrize("size", [64 * 1024, offload.LARGE + 1024])  # thread, worker process
async def test_an_image_that_cannot_be_read_is_sent_as_is_and_its_bytes_not_kept(
    size: int,
) -> None:
    shrinker = Shrinker()
    original = heic(heic_like(size))

    first = await within(shrinker.smaller(original))
    again = await within(shrinker.smaller(original))

    assert first is original and again is original
    assert shrinker.known(original.sha256)  # remembered ("send as is"), not tried again
    assert shrinker.cached_bytes == 0  # and no copy of its bytes held


async def test_many_unreadable_images_hold_no_bytes() -> None:
    shrinker = Shrinker()
    originals = [heic(heic_like(100 * 1024 + n)) for n in range(20)]
    for original in originals:
        assert await within(shrinker.smaller(original)) is original
    assert all(shrinker.known(o.sha256) for o in originals)
    assert shrinker.cached_bytes == 0


async def test_a_normal_image_gets_its_small_copy_once() -> None:
    shrinker = Shrinker()
    original = Image.of(detailed_png(1), "image/png")

    copy = await within(shrinker.smaller(original))
    again = await within(shrinker.smaller(original))

    assert copy.mime == "image/jpeg" and copy.size <= BUDGET < original.size
    assert again is copy  # made once, then remembered
    assert shrinker.cached_bytes == copy.size


async def test_a_small_image_is_sent_as_is_without_keeping_its_bytes() -> None:
    shrinker = Shrinker()
    buffer = io.BytesIO()
    PILImage.new("RGB", (40, 30), (10, 20, 30)).save(buffer, format="PNG")
    original = Image.of(buffer.getvalue(), "image/png")

    assert await within(shrinker.smaller(original)) is original
    assert shrinker.cached_bytes == 0


async def test_the_copies_held_are_bounded_in_bytes() -> None:
    shrinker = Shrinker(max_bytes=2 * BUDGET)
    originals = [Image.of(detailed_png(seed), "image/png") for seed in range(6)]
    copies = [await within(shrinker.smaller(o)) for o in originals]

    assert all(c.mime == "image/jpeg" for c in copies)
    assert 0 < shrinker.cached_bytes <= 2 * BUDGET
    assert shrinker.known(originals[-1].sha256)
    assert not shrinker.known(originals[0].sha256)  # the oldest went first
    # a dropped copy is simply made again, the same bytes
    assert (await within(shrinker.smaller(originals[0]))).data == copies[0].data


# --- through the provider ------------------------------------------------------------------


@pytest.fixture
async def server() -> AsyncIterator[FakeNexconn]:
    fake = FakeNexconn(KEY)
    await fake.start()
    yield fake
    await fake.close()


async def test_a_heic_history_image_goes_as_is_and_a_normal_one_reduced(
    server: FakeNexconn,
) -> None:
    shrinker = Shrinker()
    p = NexconnProvider(KEY, server.base_url, policy=FAST, shrinker=shrinker)
    photo, drawn = heic_like(300 * 1024), detailed_png(2)
    t0 = history_turn("nexconn", "from my phone", ImageResult(images=(heic(photo),)))
    t1 = history_turn("nexconn", "drawn", ImageResult(images=(Image.of(drawn, "image/png"),)))
    edited = Image.of(detailed_png(3), "image/png")
    t2 = history_turn("nexconn", "last", ImageResult(images=(edited,)))
    try:
        for prompt in ("a", "b"):
            await within(p.generate(ImageRequest(prompt, "1:1", MODEL, history=(t0, t1, t2))))
        await within(p.idle())  # the edited image's copy, made ahead of the next edit
    finally:
        await p.aclose()

    for sent in server.requests:
        messages = sent.json["messages"]
        urls = [
            part["image_url"]["url"]
            for message in messages
            if isinstance(message["content"], list)
            for part in message["content"]
            if part["type"] == "image_url"
        ]
        assert urls[0] == f"data:image/heic;base64,{b64(photo)}"  # as it is
        assert urls[1].startswith("data:image/jpeg;base64,")  # reduced
    copies = [await shrinker.smaller(i) for i in (t1.result, edited)]  # remembered ones
    assert all(c.mime == "image/jpeg" for c in copies)
    # the two reduced copies, and none of the photo's bytes
    assert shrinker.cached_bytes == sum(c.size for c in copies) <= 2 * BUDGET
