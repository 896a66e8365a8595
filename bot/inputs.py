"""Checks and parsing of what users type and attach: pure functions, one error each.

Adapters call `check_attachment` with the platform's metadata *before* downloading, read
with `read_capped` (which enforces the size while streaming) and turn the bytes into an
`Image` with `image_from_upload`, which trusts the bytes, not the file name.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterable, Sequence

from bot.errors import (
    MAX_IMAGE_BYTES,
    MAX_PROMPT_CHARS,
    MAX_REFERENCE_IMAGES,
    SUPPORTED_MIME_TYPES,
    EmptyPrompt,
    ImageTooLarge,
    NotAnImage,
    PromptTooLong,
    TooManyImages,
    UnknownAspectRatio,
    UnsupportedImageType,
)
from bot.models import ASPECT_RATIOS, Image
from bot.providers.http import sniff_mime

_AR_FLAG = re.compile(r"(?:^|\s)--(?:ar|aspect|aspect-ratio)(?:\s+|=)(\S+)", re.IGNORECASE)
_AR_ALIASES = {"square": "1:1", "portrait": "9:16", "landscape": "16:9", "wide": "21:9"}


def clean_prompt(text: str | None) -> str:
    """Strip and check a prompt or an edit instruction."""
    prompt = (text or "").strip()
    if not prompt:
        raise EmptyPrompt()
    if len(prompt) > MAX_PROMPT_CHARS:
        raise PromptTooLong(len(prompt))
    return prompt


def parse_aspect_ratio(value: str | None) -> str | None:
    """`None` stays `None` (use the default or the parent's); anything else must be known."""
    if value is None:
        return None
    ratio = value.strip().lower().replace("x", ":").replace("/", ":")
    ratio = _AR_ALIASES.get(ratio, ratio)
    if ratio not in ASPECT_RATIOS:
        raise UnknownAspectRatio(value)
    return ratio


def split_prompt_flags(text: str) -> tuple[str, str | None]:
    """`"a cat --ar 16:9"` → `("a cat", "16:9")`; the ratio is validated, the prompt is not."""
    match = _AR_FLAG.search(text)
    if not match:
        return text.strip(), None
    ratio = parse_aspect_ratio(match.group(1))
    prompt = (text[: match.start()] + " " + text[match.end() :]).strip()
    return " ".join(prompt.split()) if "\n" not in prompt else prompt, ratio


def check_reference_count(count: int, limit: int = MAX_REFERENCE_IMAGES) -> None:
    if count > limit:
        raise TooManyImages(count, limit)


def check_attachment(name: str, content_type: str | None, size: int | None) -> None:
    """Refuse from metadata alone, before a single byte is downloaded."""
    if size is not None and size > MAX_IMAGE_BYTES:
        raise ImageTooLarge(size)
    if content_type:
        mime = content_type.split(";", 1)[0].strip().lower()
        if not mime.startswith("image/"):
            raise NotAnImage(name)
        if mime not in SUPPORTED_MIME_TYPES:
            raise UnsupportedImageType(mime)


def check_attachments(metadata: Sequence[tuple[str, str | None, int | None]]) -> None:
    check_reference_count(len(metadata))
    for name, content_type, size in metadata:
        check_attachment(name, content_type, size)


async def read_capped(chunks: AsyncIterable[bytes], limit: int = MAX_IMAGE_BYTES) -> bytes:
    """Collect a download, stopping as soon as it passes `limit` (metadata can lie)."""
    parts: list[bytes] = []
    total = 0
    async for chunk in chunks:
        total += len(chunk)
        if total > limit:
            raise ImageTooLarge(total)
        parts.append(chunk)
    return b"".join(parts)


async def image_from_upload(data: bytes, name: str = "") -> Image:
    """Bytes a user uploaded → Image. An HTML login page or a PDF is refused here."""
    if len(data) > MAX_IMAGE_BYTES:
        raise ImageTooLarge(len(data))
    mime = sniff_mime(data[:64])
    if mime is None:
        raise NotAnImage(name)
    if mime not in SUPPORTED_MIME_TYPES:
        raise UnsupportedImageType(mime)
    return await Image.from_bytes(data, mime)
