"""CPU-bound decoding of large provider answers, off the event loop *and* off its GIL.

`json.loads` of a 2 MB answer and `base64.b64decode` of the image inside it hold the GIL
for 10–30 ms each, so moving them to a thread does not help: with 16 answers landing at
once the loop stalled for 335 ms in the benchmark (BENCHMARKS.md), long enough to delay
Discord heartbeats and 3 s deadlines. Above `LARGE` bytes they run in a small pool of worker
processes instead; the loop only pays for copying the result back (well under a
millisecond). If processes cannot be started, a thread is the fallback.

The worker functions return `(True, value)` or `(False, reason)` rather than raising: our
error types take keyword-only arguments and do not survive pickling.
"""

from __future__ import annotations

import asyncio
import atexit
import base64
import binascii
import hashlib
import json
import logging
import multiprocessing
import os
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from typing import Any, TypeVar

log = logging.getLogger(__name__)

LARGE = 256 * 1024
"""Bodies and base64 strings from this size on are decoded in a worker process."""

T = TypeVar("T")
Outcome = tuple[bool, Any]

_pool: ProcessPoolExecutor | None = None
_disabled = False


def _workers() -> int:
    return max(1, min(4, os.cpu_count() or 1))


def _get_pool() -> ProcessPoolExecutor | None:
    global _pool, _disabled
    if _pool is None and not _disabled:
        try:
            # forkserver: never fork the bot itself (its threads hold locks); workers import
            # only this module's dependencies
            context = multiprocessing.get_context("forkserver")
            _pool = ProcessPoolExecutor(max_workers=_workers(), mp_context=context)
        except (OSError, ValueError, NotImplementedError) as exc:
            log.warning("no worker processes (%s); decoding large answers in threads", exc)
            _disabled = True
    return _pool


def shutdown() -> None:
    """Stop the workers (at exit, and in tests that want a clean slate)."""
    global _pool
    if _pool is not None:
        _pool.shutdown(wait=False, cancel_futures=True)
        _pool = None


atexit.register(shutdown)


async def run(fn: Callable[..., T], *args: Any) -> T:
    """Run a picklable function in a worker process, or in a thread if there is none."""
    global _disabled
    pool = _get_pool()
    if pool is not None:
        try:
            return await asyncio.get_running_loop().run_in_executor(pool, fn, *args)
        except (BrokenProcessPool, OSError) as exc:
            log.warning("worker processes failed (%s); decoding in threads from now on", exc)
            shutdown()
            _disabled = True
    return await asyncio.to_thread(fn, *args)


# --- worker functions (module level, so they pickle by name) -------------------------------


def parse_json(raw: bytes) -> Outcome:
    try:
        return True, json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        return False, f"malformed JSON: {exc}"


def decode_base64(data: str) -> Outcome:
    """Base64 or a data URL → `(bytes, sha256)`; the hash is taken here, where it is free."""
    payload = data.split(",", 1)[1] if data.startswith("data:") else data
    try:
        raw = base64.b64decode(payload, validate=True)
    except (binascii.Error, ValueError) as exc:
        return False, f"invalid base64 image: {exc}"
    return True, (raw, hashlib.sha256(raw).hexdigest())


def verify_image(raw: bytes, max_pixels: int) -> Outcome:
    """`(True, (width, height))` when `raw` is one complete image Pillow decodes whole.

    The size is read from the header first, so a decompression bomb (a tiny file that
    claims 20000 × 20000) is refused before its pixels exist; then `verify()` checks the
    structure (chunks, CRCs) and a fresh `load()` decodes every pixel: a PNG cut short has
    the right magic bytes and header, but fails here. Pillow's process-wide limits and
    warning filters are left alone (this may run in a thread).
    """
    import io

    from PIL import Image

    try:
        with Image.open(io.BytesIO(raw)) as probe:
            width, height = probe.size
            if width * height > max_pixels:
                return False, f"too many pixels: {width}x{height}"
            probe.verify()
        with Image.open(io.BytesIO(raw)) as image:
            image.load()
    except Image.DecompressionBombError as exc:
        return False, f"too many pixels: {exc}"
    except Exception as exc:  # Pillow raises many types for broken files
        return False, f"not a complete image: {type(exc).__name__}: {exc}"
    return True, (width, height)


def shrink_to_fit(raw: bytes, limit: int) -> Outcome:
    """Re-encode an image to at most `limit` bytes: `(True, (bytes, mime, how))`.

    Lossless first (a PNG recompressed at the highest level), then WebP at falling
    quality, then JPEG, then smaller, until it fits. `how` says what was done, for the
    caption.
    """
    import io

    from PIL import Image

    def encode(image: Image.Image, fmt: str, **options: Any) -> bytes:
        buffer = io.BytesIO()
        image.save(buffer, format=fmt, **options)
        return buffer.getvalue()

    try:
        with Image.open(io.BytesIO(raw)) as opened:
            image = opened.convert("RGBA" if "A" in opened.getbands() else "RGB")
    except Exception as exc:
        return False, f"cannot re-encode: {type(exc).__name__}: {exc}"
    png = encode(image, "PNG", optimize=True, compress_level=9)
    if len(png) <= limit:
        return True, (png, "image/png", "recompressed losslessly")
    scale = 1.0
    while scale > 0.1:
        sized = image
        if scale < 1.0:
            size = (max(1, round(image.width * scale)), max(1, round(image.height * scale)))
            sized = image.resize(size, Image.Resampling.LANCZOS)
        for quality in (92, 85, 75, 60):
            webp = encode(sized, "WEBP", quality=quality, method=4)
            if len(webp) <= limit:
                how = f"as WebP at quality {quality}"
                if scale < 1.0:
                    how += f", {sized.width}×{sized.height}"
                return True, (webp, "image/webp", how)
        scale *= 0.75
    return False, f"no encoding under {limit} bytes"


def dumps(body: Any) -> bytes:
    """Compact UTF-8 JSON, byte for byte what httpx sends for `json=`."""
    return json.dumps(body, ensure_ascii=False, separators=(",", ":"), allow_nan=False).encode()


def encode_base64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")
