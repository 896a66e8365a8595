"""Reference images from Discord attachments: checked from metadata, then streamed capped.

`check` is instant (no I/O), so commands run it before deferring and answer a bad file with
an ephemeral message; `download` runs after the defer and still enforces the size while
streaming (metadata can lie) and trusts the bytes, not the name, for the type.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Sequence

import aiohttp

from bot.errors import InternalError
from bot.inputs import check_attachments, image_from_upload, read_capped
from bot.models import Image

from .runtime import AttachmentRef

log = logging.getLogger(__name__)

CHUNK = 64 * 1024
DOWNLOAD_TIMEOUT = aiohttp.ClientTimeout(total=60, sock_connect=10, sock_read=30)
_IMAGE_EXTENSIONS = frozenset({".png", ".jpg", ".jpeg", ".webp", ".heic", ".heif"})


def check(refs: Sequence[AttachmentRef]) -> None:
    """Count, size and type from metadata alone; raises the core's error."""
    check_attachments([(ref.filename, ref.content_type, ref.size) for ref in refs])


def looks_like_image(ref: AttachmentRef) -> bool:
    """For picking the images of someone else's message (the "Edit image" menu)."""
    if ref.content_type:
        return ref.content_type.lower().startswith("image/")
    return os.path.splitext(ref.filename)[1].lower() in _IMAGE_EXTENSIONS


async def download_one(session: aiohttp.ClientSession, ref: AttachmentRef) -> Image:
    try:
        async with session.get(ref.url, timeout=DOWNLOAD_TIMEOUT) as response:
            if response.status != 200:
                raise InternalError(detail=f"attachment download: HTTP {response.status}")
            data = await read_capped(response.content.iter_chunked(CHUNK))
    except (aiohttp.ClientError, TimeoutError) as exc:
        raise InternalError(detail=f"attachment download failed: {exc!r}") from exc
    return await image_from_upload(data, ref.filename)


async def download(
    session: aiohttp.ClientSession, refs: Sequence[AttachmentRef]
) -> tuple[Image, ...]:
    """All of them at once; the first failure wins (each is a user-facing error)."""
    if not refs:
        return ()
    return tuple(await asyncio.gather(*(download_one(session, ref) for ref in refs)))
