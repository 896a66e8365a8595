"""Checks and parsing of what users type and attach: pure functions, one error each.

Adapters call `check_attachment` with the platform's metadata *before* downloading, read
with `read_capped` (which enforces the size while streaming) and turn the bytes into an
`Image` with `image_from_upload`, which trusts the bytes, not the file name, and decodes the
whole image (in a worker thread) before a job is accepted: a cut-off file or a decompression
bomb (a few KB that decode to 20000×20000) is refused here and never reaches a provider.
"""

from __future__ import annotations

import asyncio
import io
import re
import struct
import threading
import unicodedata
from collections.abc import AsyncIterable, Sequence

from PIL import Image as PILImage

from bot.errors import (
    MAX_IMAGE_BYTES,
    MAX_IMAGE_PIXELS,
    MAX_PROMPT_CHARS,
    MAX_REFERENCE_IMAGES,
    SUPPORTED_MIME_TYPES,
    AspectRatioFlag,
    DamagedImage,
    EmptyPrompt,
    ImageTooLarge,
    ImageTooManyPixels,
    NotAnImage,
    PromptTooLong,
    TooManyImages,
    UnknownAspectRatio,
    UnsupportedImageType,
)
from bot.models import ASPECT_RATIOS, Image
from bot.providers.http import sniff_mime

_AR_FLAG = re.compile(
    r"(?:^|(?<=\s))--(?:ar|aspect|aspect-ratio)(?:=(\S*)|(?=\s|$)(?:\s+(?!--)(\S+))?)",
    re.IGNORECASE,
)
"""`--ar 16:9`, `--ar=16:9` (and `--aspect`, `--aspect-ratio`); the value is group 1 or 2,
neither when the flag ends the text or another `--flag` follows it."""
_AR_ALIASES = {"square": "1:1", "portrait": "9:16", "landscape": "16:9", "wide": "21:9"}


_BLANK_LETTERS = frozenset("\u034f\u115f\u1160\u2800\u3164\uffa0")
"""Characters outside category Cf that still draw nothing: the combining grapheme joiner,
the Hangul fillers and the blank Braille pattern (popular for "empty" messages)."""


def _invisible(char: str) -> bool:
    """Draws nothing: format characters (zero-width space and joiners, BOM, word joiner,
    bidi marks, tags), variation selectors, whitespace, and the blank letters above."""
    code = ord(char)
    return (
        char.isspace()
        or unicodedata.category(char) == "Cf"
        or 0xFE00 <= code <= 0xFE0F
        or 0xE0100 <= code <= 0xE01EF
        or char in _BLANK_LETTERS
    )


def clean_prompt(text: str | None) -> str:
    """Strip and check a prompt or an edit instruction. A prompt of nothing but invisible
    characters is empty; in any other prompt they stay (a ZWJ inside an emoji sequence and
    a variation selector after a heart mean something)."""
    prompt = (text or "").strip()
    if not prompt or all(_invisible(char) for char in prompt):
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
    """`"a cat --ar 16:9"` → `("a cat", "16:9")`; the ratio is validated, the prompt is not.

    `--ar` with no value, or given twice, is an `AspectRatioFlag` error (never part of
    the prompt)."""
    matches = list(_AR_FLAG.finditer(text))
    if not matches:
        return text.strip(), None
    if len(matches) > 1:
        raise AspectRatioFlag(twice=True)
    match = matches[0]
    value = match.group(1) if match.group(1) is not None else match.group(2)
    if not value:
        raise AspectRatioFlag(twice=False)
    ratio = parse_aspect_ratio(value)
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
    await asyncio.to_thread(check_decodes, data, mime, name)
    return await Image.from_bytes(data, mime)


_DECODING = threading.BoundedSemaphore(2)
"""Full decodes at once: a 50-megapixel image takes up to 200 MB while it is checked."""

_DECODE_ERRORS = (OSError, SyntaxError, ValueError, EOFError, IndexError, struct.error)
"""What Pillow raises for bytes that are not a whole image (`verify` raises SyntaxError)."""


def check_decodes(data: bytes, mime: str, name: str = "") -> None:
    """The whole image decodes and its pixel count is sane; blocking (run it in a thread).

    The size is read from the header before any pixel is decoded, so a decompression bomb
    costs nothing. HEIC/HEIF cannot be decoded here (Pillow has no HEVC decoder): their
    declared sizes are checked instead and the provider decodes them."""
    if mime in ("image/heic", "image/heif"):
        _check_heif_size(data)
        return
    try:
        with PILImage.open(io.BytesIO(data)) as image:
            _check_pixels(*image.size)
            image.verify()
        with _DECODING, PILImage.open(io.BytesIO(data)) as image:
            image.load()
    except (PILImage.DecompressionBombError, PILImage.DecompressionBombWarning) as exc:
        # Pillow's own bound (`PIL.Image.MAX_IMAGE_PIXELS`) is checked when the file is
        # opened, so a bomb far beyond ours is refused before its size reaches us
        raise ImageTooManyPixels(detail=f"{name}: {exc}") from None
    except _DECODE_ERRORS as exc:
        raise DamagedImage(name, detail=f"{name} ({mime}, {len(data)} bytes): {exc!r}") from None


def _check_pixels(width: int, height: int) -> None:
    if width * height > MAX_IMAGE_PIXELS:
        raise ImageTooManyPixels(width, height, detail=f"declared {width}×{height}")


def _check_heif_size(data: bytes) -> None:
    """Every `ispe` (image spatial extents) property of a HEIF file: version/flags, width,
    height as 32-bit big-endian numbers."""
    start = data.find(b"ispe")
    while start != -1:
        fields = data[start + 8 : start + 16]
        if len(fields) == 8:
            _check_pixels(*struct.unpack(">II", fields))
        start = data.find(b"ispe", start + 4)
