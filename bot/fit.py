"""Fitting an image under a platform's upload limit, keeping the original in the store.

A provider's answer may be under our 48 MiB answer cap and still over what a platform
accepts in one upload (Discord: the `attachment_size_limit` each interaction carries,
10 MiB without boosts). Rather than failing at upload, the image is re-encoded — losslessly
first, then as WebP at falling quality, then smaller — and the caption says so. Only the
posted copy changes: the turn keeps the original, and later edits start from it.
"""

from __future__ import annotations

from dataclasses import dataclass

from bot.models import Image
from bot.providers import offload

__all__ = ["Fitted", "fit_for_upload"]


@dataclass(frozen=True, slots=True)
class Fitted:
    image: Image
    note: str | None = None
    """For the caption, when the posted copy is not the original."""


def _mb(size: int) -> str:
    return f"{size / (1024 * 1024):.0f} MB" if size >= 1024 * 1024 else f"{size // 1024} KB"


async def fit_for_upload(image: Image, limit: int, platform: str) -> Fitted:
    """`image` itself when it fits; else a re-encoded copy (off the loop) with a note.

    Raises `ValueError` when nothing fits (an adapter reports it as a failed delivery).
    """
    if image.size <= limit:
        return Fitted(image)
    ok, value = await offload.run(offload.shrink_to_fit, image.data, limit)
    if not ok:
        raise ValueError(f"image of {image.size} bytes does not fit {limit}: {value}")
    data, mime, how = value
    note = (
        f"Posted {how} to fit {platform}'s {_mb(limit)} upload limit; "
        "the full-size original is kept for your next edits."
    )
    return Fitted(await Image.from_bytes(data, mime), note)
