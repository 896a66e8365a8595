"""The demo provider: every edit's image reads clearly, however long the thread."""

from __future__ import annotations

import io

import pytest
from PIL import Image as PILImage

from bot import errors
from bot.models import ASPECT_SIZES, HistoryTurn, Image, ImageRequest, ImageResult
from bot.providers.demo import BAND_COLOUR, DemoProvider
from tests.fakes.hostile_images import bomb_png

PROMPTS = [
    "a cosy cabin in a snowy forest at dusk",
    "make the sky purple",
    "add a red door and a tiny dog waiting outside",
    "watercolor style, soft edges",
    "make it gold",
]


def _turn(prompt: str, result: ImageResult, provider: str = "demo") -> HistoryTurn:
    return HistoryTurn(
        prompt=prompt,
        references=(),
        result=result.image,
        text=result.text,
        provider=provider,
        provider_state=result.provider_state,
    )


async def _thread(prompts: list[str], aspect_ratio: str = "1:1", cap: int = 8) -> list[ImageResult]:
    provider, history, results = DemoProvider(), list[HistoryTurn](), list[ImageResult]()
    for prompt in prompts:
        request = ImageRequest(
            prompt=prompt, aspect_ratio=aspect_ratio, model="demo", history=tuple(history[-cap:])
        )
        result = await provider.generate(request)
        results.append(result)
        history.append(_turn(prompt, result))
    return results


def _png(data: bytes) -> PILImage.Image:
    assert data.startswith(b"\x89PNG\r\n\x1a\n")
    image = PILImage.open(io.BytesIO(data))
    assert image.format == "PNG"
    image.load()
    return image.convert("RGB")


def _band_top(image: PILImage.Image) -> int:
    """The first row of the instruction band, found from its right edge (never text)."""
    width, height = image.size
    y = height - 1
    while y > 0 and image.getpixel((width - 1, y - 1)) == BAND_COLOUR:
        y -= 1
    return y


def _upload(size: tuple[int, int] = (640, 480)) -> Image:
    out = io.BytesIO()
    PILImage.new("RGB", size, (90, 140, 60)).save(out, format="PNG")
    return Image.of(out.getvalue())


async def test_the_latest_instruction_sits_on_a_clean_band_after_many_edits() -> None:
    last = _png((await _thread(PROMPTS))[-1].image.data)
    # the same instruction as the only edit of an unrelated upload: nothing in common but
    # the text, so an identical band means nothing earlier shows through it
    alone = await DemoProvider().generate(
        ImageRequest(prompt=PROMPTS[-1], aspect_ratio="1:1", model="demo", references=(_upload(),))
    )
    single = _png(alone.image.data)
    width, height = single.size
    top = _band_top(single)
    assert 40 < height - top < height // 4  # one line of large text, not a sliver
    band = (0, top, width, height)
    assert last.crop(band).tobytes() == single.crop(band).tobytes()
    assert last.getpixel((width - 1, top - 1)) != BAND_COLOUR  # the band starts there
    # legible: white text on the dark band, with plenty of it
    assert sum(single.crop(band).convert("L").histogram()[200:]) > 500


async def test_earlier_captions_are_not_drawn_over() -> None:
    """An edit redraws from a clean picture: the previous image's caption band is gone."""
    long = "add a stone wall, a winding path, some sheep, a rainbow and a small boat in the bay"
    results = await _thread(["a lighthouse", long, "make it blue"])
    long_edit, short_edit = _png(results[1].image.data), _png(results[2].image.data)
    width, _ = long_edit.size
    top_long, top_short = _band_top(long_edit), _band_top(short_edit)
    assert top_short > top_long  # two lines of instruction, then one
    # where the long instruction's band was, the next image shows the picture again
    assert all(
        short_edit.getpixel((x, y)) != BAND_COLOUR
        for y in range(top_long, top_short)
        for x in (0, width // 2, width - 1)
    )


async def test_threads_draw_the_same_every_time_and_past_the_history_cap() -> None:
    prompts = [
        "a red fox",
        *[
            f"edit {i}: make it {c}"
            for i, c in enumerate(
                ["blue", "green", "pink", "gold", "sepia", "grey", "white", "orange", "purple"], 1
            )
        ],
    ]
    full = await _thread(prompts, cap=64)
    capped = await _thread(prompts, cap=8)
    parent_only = await _thread(prompts, cap=1)
    assert [r.image.sha256 for r in full] == [r.image.sha256 for r in capped]
    assert [r.image.sha256 for r in full] == [r.image.sha256 for r in parent_only]


@pytest.mark.parametrize("aspect_ratio", sorted(ASPECT_SIZES))
async def test_every_aspect_ratio_gives_a_valid_png_of_its_size(aspect_ratio: str) -> None:
    results = await _thread(PROMPTS[:3], aspect_ratio=aspect_ratio)
    for result in results:
        assert result.image.mime == "image/png"
        assert _png(result.image.data).size == ASPECT_SIZES[aspect_ratio]


async def test_an_edit_of_another_providers_image_starts_from_it() -> None:
    other = ImageResult(images=(_upload((300, 300)),))
    history = (_turn("a meadow", other, provider="gemini"),)
    result = await DemoProvider().generate(
        ImageRequest(prompt="make it pink", aspect_ratio="4:3", model="demo", history=history)
    )
    image = _png(result.image.data)
    assert image.size == ASPECT_SIZES["4:3"]
    # the middle is the upload's green tinted towards pink, not a demo gradient
    middle = image.getpixel((image.width // 2, image.height // 2))
    expected = (90 * 0.65 + 235 * 0.35, 140 * 0.65 + 120 * 0.35, 60 * 0.65 + 180 * 0.35)
    assert isinstance(middle, tuple)
    assert all(abs(got - want) < 3 for got, want in zip(middle, expected, strict=True))


async def test_a_bomb_in_the_history_is_refused_unread() -> None:
    bomb = ImageResult(images=(Image.of(bomb_png(), "image/png"),))
    history = (_turn("a meadow", bomb, provider="gemini"),)
    with pytest.raises(errors.ImageTooManyPixels):
        await DemoProvider().generate(
            ImageRequest(prompt="make it blue", aspect_ratio="1:1", model="demo", history=history)
        )
