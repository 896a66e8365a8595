"""Smaller copies of older history images, for providers that get the whole history inline.

A stateless chat API (Nexconn) receives every earlier image of a thread again with each edit.
The model needs those images for context (what the picture looked like two edits ago), not
for their pixels: a copy whose long side is at most `LONG_SIDE` px, as JPEG, keeps what it
shows at a few percent of the bytes (at most `BUDGET`). Copies are made once per image (by
sha256) and kept in memory, in a worker process for big images, never on the event loop.
"""

from __future__ import annotations

import asyncio
import io
from collections import OrderedDict
from typing import Any, Final

from bot.models import Image
from bot.providers import offload

LONG_SIDE: Final = 512
"""Longest side, in pixels, of an older history image as sent."""
BUDGET: Final = 40 * 1024
"""Most bytes a reduced copy may take: quality (then size) falls until it fits, so even a
photo full of fine detail stays small: seven of them are under a fifth of one 1.5 MB image."""
QUALITY_STEPS: Final = (85, 75, 65, 50)


def shrink(raw: bytes, long_side: int, budget: int) -> offload.Outcome:
    """`(True, (bytes, mime))` of a JPEG whose long side is at most `long_side` and whose
    size is at most `budget` when it can be, or `(True, None)` when the original is small
    already (within `long_side` and `budget`) or the copy would not be smaller.

    Quality falls through `QUALITY_STEPS` until the copy fits, then the side shrinks by a
    quarter at a time. Transparency is flattened onto white: JPEG has none, and the model
    only needs to see the picture. A worker function (module level, picklable; `offload`).
    """
    from PIL import Image as PILImage

    try:
        with PILImage.open(io.BytesIO(raw)) as opened:
            width, height = opened.size
            if max(width, height) <= long_side and len(raw) <= budget:
                return True, None
            opened.draft("RGB", (long_side, long_side))  # JPEG: decode at a reduced scale
            image = opened.convert("RGBA")
    except Exception as exc:  # Pillow raises many types for broken files
        return False, f"cannot shrink: {type(exc).__name__}: {exc}"
    flat = PILImage.new("RGB", image.size, (255, 255, 255))
    flat.paste(image, mask=image.getchannel("A"))
    side = long_side
    while True:
        sized = flat.copy()
        sized.thumbnail((side, side), PILImage.Resampling.LANCZOS)
        for quality in QUALITY_STEPS:
            buffer = io.BytesIO()
            sized.save(buffer, format="JPEG", quality=quality, optimize=True)
            data = buffer.getvalue()
            if len(data) <= budget:
                break
        if len(data) <= budget or side <= 64:
            break
        side = side * 3 // 4
    return True, (None if len(data) >= len(raw) else (data, "image/jpeg"))


class Shrinker:
    """Older history images at reduced size, each made once (by sha256) and remembered."""

    def __init__(
        self, long_side: int = LONG_SIDE, budget: int = BUDGET, max_entries: int = 512
    ) -> None:
        self.long_side = long_side
        self.budget = budget
        self._max = max_entries
        self._done: OrderedDict[str, Image] = OrderedDict()
        self._in_flight: dict[str, asyncio.Task[Image]] = {}

    async def smaller(self, image: Image) -> Image:
        """The reduced copy of `image` (or `image` itself when it is small already or
        cannot be read: the provider then judges it, as it would have before)."""
        done = self._done.get(image.sha256)
        if done is not None:
            self._done.move_to_end(image.sha256)
            return done
        task = self._in_flight.get(image.sha256)
        if task is None:
            task = asyncio.ensure_future(self._make(image))
            self._in_flight[image.sha256] = task
            task.add_done_callback(lambda _: self._in_flight.pop(image.sha256, None))
        return await asyncio.shield(task)

    async def _make(self, image: Image) -> Image:
        args: tuple[Any, ...] = (image.data, self.long_side, self.budget)
        if image.size < offload.LARGE:
            ok, value = await asyncio.to_thread(shrink, *args)
        else:
            ok, value = await offload.run(shrink, *args)
        result = image
        if ok and value is not None:
            data, mime = value
            result = await Image.from_bytes(data, mime)
        self._done[image.sha256] = result
        while len(self._done) > self._max:
            self._done.popitem(last=False)
        return result


__all__ = ["BUDGET", "LONG_SIDE", "Shrinker", "shrink"]
