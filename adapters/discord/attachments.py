"""Reference images from Discord attachments: checked from metadata, then streamed capped.

`check` is instant (no I/O), so commands run it before deferring and answer a bad file with
an ephemeral message; `download` runs after the defer and still enforces the size while
streaming (metadata can lie), trusts the bytes, not the name, for the type, and has the
whole image decoded (`bot.inputs.image_from_upload`) before a job is accepted.

Only Discord's CDN hosts (`DISCORD_CDN_HOSTS`) are fetched from, redirects included: a URL
anywhere else is refused without a request, so the bot can never be made to fetch from an
internal address. Every download has a total time limit, and all of one request's together.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Collection, Sequence
from urllib.parse import urljoin, urlparse

import aiohttp

from bot.errors import ImagineError
from bot.inputs import check_attachments, image_from_upload, read_capped
from bot.models import Image

from .runtime import AttachmentRef

log = logging.getLogger(__name__)

CDN_HOSTS = frozenset({"cdn.discordapp.com", "media.discordapp.net"})
"""Where Discord serves attachments (the default of `DISCORD_CDN_HOSTS`)."""
CHUNK = 64 * 1024
DOWNLOAD_TIMEOUT = aiohttp.ClientTimeout(total=60, sock_connect=10, sock_read=30)
TOTAL_TIMEOUT = 90.0
"""Seconds all the attachments of one request may take together."""
MAX_REDIRECTS = 3
_IMAGE_EXTENSIONS = frozenset({".png", ".jpg", ".jpeg", ".webp", ".heic", ".heif"})


class UntrustedAttachment(ImagineError):
    """An attachment URL that is not on Discord's CDN: never fetched."""

    code = "untrusted_attachment"

    def __init__(self, name: str, *, detail: str | None = None) -> None:
        super().__init__(
            f"I can only use images uploaded to Discord, and “{name}” is not on Discord's "
            "file server. Attach the image itself.",
            detail=detail,
        )


class AttachmentDownloadFailed(ImagineError):
    code = "discord_download_failed"
    retryable = True

    def __init__(self, name: str = "", *, detail: str | None = None) -> None:
        what = f"“{name}”" if name else "your images"
        super().__init__(
            f"I couldn't download {what} from Discord. Please attach it again.", detail=detail
        )


def trusted(url: str, hosts: Collection[str] = CDN_HOSTS) -> bool:
    """Whether `url` is an http(s) URL on one of `hosts` (exactly; the port is ignored)."""
    try:
        parsed = urlparse(url)
        host = (parsed.hostname or "").lower()
    except ValueError:
        return False
    return parsed.scheme in ("https", "http") and bool(host) and host in hosts


def check(refs: Sequence[AttachmentRef], hosts: Collection[str] = CDN_HOSTS) -> None:
    """Count, size, type and host from metadata alone; raises the core's error."""
    check_attachments([(ref.filename, ref.content_type, ref.size) for ref in refs])
    for ref in refs:
        if not trusted(ref.url, hosts):
            raise UntrustedAttachment(ref.filename, detail=f"attachment URL {_where(ref.url)}")


def _where(url: str) -> str:
    """The scheme and host of a URL, for the log (the query of a CDN link is a signature)."""
    try:
        parsed = urlparse(url)
        return f"{parsed.scheme}://{parsed.hostname or '?'}"
    except ValueError:
        return "(unparsable)"


def looks_like_image(ref: AttachmentRef) -> bool:
    """For picking the images of someone else's message (the "Edit image" menu)."""
    if ref.content_type:
        return ref.content_type.lower().startswith("image/")
    return os.path.splitext(ref.filename)[1].lower() in _IMAGE_EXTENSIONS


async def download_one(
    session: aiohttp.ClientSession, ref: AttachmentRef, hosts: Collection[str] = CDN_HOSTS
) -> Image:
    url = ref.url
    try:
        for _ in range(MAX_REDIRECTS + 1):
            if not trusted(url, hosts):
                raise UntrustedAttachment(ref.filename, detail=f"attachment URL {_where(url)}")
            async with session.get(
                url, timeout=DOWNLOAD_TIMEOUT, allow_redirects=False
            ) as response:
                if response.status in (301, 302, 303, 307, 308) and "Location" in response.headers:
                    url = urljoin(url, response.headers["Location"])
                    continue
                if response.status != 200:
                    raise AttachmentDownloadFailed(
                        ref.filename, detail=f"attachment download: HTTP {response.status}"
                    )
                data = await read_capped(response.content.iter_chunked(CHUNK))
                break
        else:
            raise AttachmentDownloadFailed(ref.filename, detail="attachment: too many redirects")
    except (aiohttp.ClientError, TimeoutError) as exc:
        raise AttachmentDownloadFailed(
            ref.filename, detail=f"attachment download failed: {type(exc).__name__}"
        ) from None
    return await image_from_upload(data, ref.filename)


async def download(
    session: aiohttp.ClientSession,
    refs: Sequence[AttachmentRef],
    hosts: Collection[str] = CDN_HOSTS,
    *,
    total: float = TOTAL_TIMEOUT,
) -> tuple[Image, ...]:
    """All of them at once; the first failure wins (each is a user-facing error)."""
    if not refs:
        return ()
    for ref in refs:  # before any request: one bad URL and nothing is fetched
        if not trusted(ref.url, hosts):
            raise UntrustedAttachment(ref.filename, detail=f"attachment URL {_where(ref.url)}")
    try:
        async with asyncio.timeout(total):
            return tuple(await asyncio.gather(*(download_one(session, ref, hosts) for ref in refs)))
    except TimeoutError:
        name = refs[0].filename if len(refs) == 1 else ""
        raise AttachmentDownloadFailed(name, detail=f"downloads took over {total} s") from None
