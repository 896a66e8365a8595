"""Smaller copies of older history images, for providers that get the whole history inline.

A stateless chat API (Nexconn) receives every earlier image of a thread again with each edit.
The model needs those images for context (what the picture looked like two edits ago), not
for their pixels: a copy whose long side is at most `LONG_SIDE` px, as JPEG, keeps what it
shows at a few percent of the bytes (at most `BUDGET`). Copies are made once per image (by
sha256) and kept in memory, in a worker process for big images, never on the event loop.

An image with no smaller copy — small already, or one Pillow cannot read (HEIC/HEIF without
an HEVC decoder, a corrupt or oversized file) — is remembered by a marker ("send as is"), not
by its bytes: the memory holds only reduced copies, at most `max_entries` of them and
`max_bytes` in all.
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
        self,
        long_side: int = LONG_SIDE,
        budget: int = BUDGET,
        max_entries: int = 512,
        max_bytes: int = 16 * 1024 * 1024,
    ) -> None:
        self.long_side = long_side
        self.budget = budget
        self._max = max_entries
        self._max_bytes = max_bytes
        self._done: OrderedDict[str, Image | None] = OrderedDict()
        """sha256 → the reduced copy, or None: no smaller copy, send the image as is."""
        self._bytes = 0
        self._in_flight: dict[str, asyncio.Task[Image]] = {}

    @property
    def cached_bytes(self) -> int:
        """Bytes of the reduced copies held (markers hold none)."""
        return self._bytes

    def known(self, sha256: str) -> bool:
        """Whether the image's outcome (a copy, or "send as is") is remembered."""
        return sha256 in self._done

    async def smaller(self, image: Image) -> Image:
        """The reduced copy of `image` (or `image` itself when it is small already or
        cannot be read: the provider then judges it, as it would have before)."""
        if image.sha256 in self._done:
            self._done.move_to_end(image.sha256)
            done = self._done[image.sha256]
            return image if done is None else done
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
        copy: Image | None = None  # unreadable, small already, or no smaller: as is
        if ok and value is not None:
            data, mime = value
            copy = await Image.from_bytes(data, mime)
        self._remember(image.sha256, copy)
        return image if copy is None else copy

    def _remember(self, sha256: str, copy: Image | None) -> None:
        """Keep `copy` (None: "send as is", no bytes held), the oldest dropped while there
        are more than `max_entries` or the copies take more than `max_bytes`."""
        old = self._done.pop(sha256, None)
        self._bytes += (copy.size if copy is not None else 0) - (old.size if old is not None else 0)
        self._done[sha256] = copy
        while len(self._done) > self._max or self._bytes > self._max_bytes:
            _, dropped = self._done.popitem(last=False)
            self._bytes -= dropped.size if dropped is not None else 0


__all__ = ["BUDGET", "LONG_SIDE", "Shrinker", "shrink"]
