"""The HTTP plumbing every provider shares: one client, retries, limits, base64 off the loop.

Providers translate their documentation into requests and answers; this module owns the
parts that are the same everywhere: what is retried (429 honouring Retry-After, 5xx,
timeouts, connection failures) and what never is (safety blocks and other 4xx), how big an
answer may be, and how base64 images are decoded without blocking the event loop.
"""

from __future__ import annotations

import asyncio
import logging
import math
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from typing import Any

import httpx

from bot import metrics
from bot.errors import (
    MAX_IMAGE_PIXELS,
    BadApiKey,
    BrokenImage,
    ImagineError,
    InvalidProviderResponse,
    ProviderRejected,
    ProviderTimeout,
    ProviderUnavailable,
    RateLimited,
)
from bot.models import Image, now
from bot.providers import offload

log = logging.getLogger(__name__)

MAX_RESPONSE_BYTES = 48 * 1024 * 1024
"""Largest provider answer we read: a few 1K PNGs in base64 fit many times over."""


IDEMPOTENT_METHODS = frozenset({"GET", "HEAD", "OPTIONS", "PUT", "DELETE"})
"""Methods whose repetition changes nothing at the provider (RFC 9110 §9.2.2)."""

NOT_SENT = (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout)
"""Failures before a request left this machine: trying again can never charge twice."""

ErrorMapper = Callable[[httpx.Response, Any], ImagineError]
"""Turns a non-retryable error answer (status, parsed body or None) into a user error."""


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    attempts: int = 4
    """Tries in all, the first included."""
    base_delay: float = 0.5
    max_delay: float = 20.0
    max_retry_after: float = 60.0
    """A Retry-After longer than this is not waited out: the user is told when to retry."""

    def backoff(self, attempt: int) -> float:
        """Full jitter: uniform in [0, min(cap, base * 2**attempt)]."""
        return random.uniform(0, min(self.max_delay, self.base_delay * (2**attempt)))


def make_client(
    base_url: str,
    headers: dict[str, str],
    *,
    timeout: float = 120.0,
    transport: httpx.AsyncBaseTransport | None = None,
) -> httpx.AsyncClient:
    """The one client a provider keeps for its lifetime (connection pooling, timeouts)."""
    return httpx.AsyncClient(
        base_url=base_url.rstrip("/"),
        headers={"User-Agent": "imagine-bot/0.1", **headers},
        timeout=httpx.Timeout(timeout, connect=10.0),
        limits=httpx.Limits(max_connections=64, max_keepalive_connections=16),
        transport=transport,
    )


def attempt_timeout(client: httpx.AsyncClient) -> float | None:
    """Most seconds one request may take in all, answer included.

    httpx's timeouts bound each wait for the next bytes, not their sum: a server trickling
    a byte a second would hold a request (and the user) forever. The client's read timeout,
    the `timeout` a provider was built with, bounds the whole attempt as well.
    """
    return client.timeout.read


def retry_after_seconds(response: httpx.Response) -> float | None:
    """Parse Retry-After as seconds or as an HTTP date."""
    value = response.headers.get("retry-after")
    if not value:
        return None
    try:
        seconds = float(value)
    except ValueError:
        pass
    else:
        # "inf" or "1e999" parse as floats, but no one can wait that long (and
        # `RateLimited` cannot say it): treat them like any unreadable header.
        return max(0.0, seconds) if math.isfinite(seconds) else None
    try:
        return max(0.0, parsedate_to_datetime(value).timestamp() - now())
    except (TypeError, ValueError):
        return None


def error_message(body: Any) -> str:
    """The human part of an error body.

    Accepts `{"error": {"message"}}`, `{"error": "…"}` and a flat `{"message"}`.
    """
    if isinstance(body, dict):
        err = body.get("error")
        if isinstance(err, dict) and isinstance(err.get("message"), str):
            return str(err["message"])
        if isinstance(err, str):
            return err
        if isinstance(body.get("message"), str):
            return str(body["message"])
    return ""


def default_error(response: httpx.Response, body: Any) -> ImagineError:
    """The mapping most APIs share; providers extend it for their safety signals."""
    detail = f"HTTP {response.status_code} from {response.request.url.path}: {error_message(body)}"
    if response.status_code in (401, 403):
        return BadApiKey(detail=detail)
    if response.status_code == 429:
        return RateLimited(retry_after_seconds(response), detail=detail)
    if response.status_code >= 500:
        return ProviderUnavailable(detail=detail)
    return ProviderRejected(error_message(body), detail=detail)


def _approx_size(value: Any) -> int:
    """Roughly how many bytes `value` is as JSON: enough to decide where to encode it."""
    if isinstance(value, str | bytes):
        return len(value)
    if isinstance(value, dict):
        return sum(len(str(k)) + _approx_size(v) for k, v in value.items())
    if isinstance(value, list | tuple):
        return sum(_approx_size(item) for item in value)
    return 8


async def encode_json(body: Any) -> bytes:
    """The compact JSON httpx would send for `json=body`.

    A chat history resent to a stateless provider carries every earlier image as base64
    (megabytes); `json.dumps` of it holds the GIL for hundreds of milliseconds, so large
    bodies are encoded in a worker process (`offload`).
    """
    if _approx_size(body) < offload.LARGE:
        return offload.dumps(body)
    return await offload.run(offload.dumps, body)


async def parse_json(raw: bytes) -> Any:
    """Parse a provider answer; large bodies (base64 images) in a worker process."""
    if len(raw) < offload.LARGE:
        ok, value = offload.parse_json(raw)
    else:
        ok, value = await offload.run(offload.parse_json, raw)
    if not ok:
        raise InvalidProviderResponse(detail=value)
    return value


async def read_limited(response: httpx.Response, limit: int = MAX_RESPONSE_BYTES) -> bytes:
    """Read a streamed body, refusing anything larger than `limit` as it arrives."""
    declared = response.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limit:
        raise InvalidProviderResponse(detail=f"answer of {declared} bytes exceeds {limit}")
    chunks: list[bytes] = []
    total = 0
    async for chunk in response.aiter_bytes():
        total += len(chunk)
        if total > limit:
            raise InvalidProviderResponse(detail=f"answer larger than {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


async def request_json(
    client: httpx.AsyncClient,
    method: str,
    url: str,
    *,
    json_body: Any = None,
    policy: RetryPolicy = RetryPolicy(),
    map_error: ErrorMapper = default_error,
    limit: int = MAX_RESPONSE_BYTES,
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    idempotent: bool | None = None,
) -> Any:
    """Send a request with bounded retries and return the parsed JSON body.

    Retried: 429 (waiting Retry-After when it is short), 5xx, connection failures, and —
    for idempotent requests only (GET by default) — timeouts and broken answers. A POST
    that was sent and then timed out may be generating (and billing) already, so it is
    not sent again: the user gets the timeout message and may retry knowingly.
    Not retried: every other 4xx, including safety refusals. The final failure is mapped to
    the user-facing error by `map_error`. Each attempt as a whole is bounded by
    `attempt_timeout(client)`.
    """
    if idempotent is None:
        idempotent = method.upper() in IDEMPOTENT_METHODS
    content = None if json_body is None else await encode_json(json_body)  # once, for all tries
    headers = None if content is None else {"Content-Type": "application/json"}
    last: ImagineError = ProviderUnavailable(detail="no attempt made")
    for attempt in range(policy.attempts):
        final = attempt == policy.attempts - 1
        try:
            async with asyncio.timeout(attempt_timeout(client)):
                async with client.stream(method, url, content=content, headers=headers) as response:
                    raw = await read_limited(response, limit)
        except TimeoutError:
            last = ProviderTimeout(detail=f"{method} {url}: no full answer in time")
            if not idempotent:
                last.maybe_billed = True
                raise last from None
        except httpx.TimeoutException as exc:
            last = ProviderTimeout(detail=f"{method} {url}: {type(exc).__name__}")
            if not idempotent and not isinstance(exc, NOT_SENT):
                last.maybe_billed = True
                raise last from None
        except httpx.TransportError as exc:
            last = ProviderUnavailable(detail=f"{method} {url}: {type(exc).__name__}: {exc}")
            if not idempotent and not isinstance(exc, NOT_SENT):
                last.maybe_billed = True
                raise last from None
        else:
            if response.is_success:
                return await parse_json(raw)
            try:  # error bodies can be large too (an HTML page, a dump): same path
                body: Any = await parse_json(raw) if raw else None
            except InvalidProviderResponse:
                body = None
            error = map_error(response, body)
            retryable = response.status_code == 429 or response.status_code >= 500
            if not retryable:
                raise error
            last = error
            wait = retry_after_seconds(response) if response.status_code == 429 else None
            if wait is None and isinstance(error, RateLimited):
                wait = error.retry_after  # a provider's own hint, e.g. Google's RetryInfo
            if wait is not None and wait > policy.max_retry_after:
                raise error
            if not final:
                log.warning("%s %s → %s, retrying", method, url, response.status_code)
                metrics.retried("rate_limited" if response.status_code == 429 else "server_error")
                await sleep(wait if wait is not None else policy.backoff(attempt))
                continue
        if not final:
            log.warning("%s, retrying", last)
            metrics.retried("timeout" if isinstance(last, ProviderTimeout) else "connection")
            await sleep(policy.backoff(attempt))
    raise last


# --- images --------------------------------------------------------------------------------

_MAGIC: tuple[tuple[bytes, int, str], ...] = (
    (b"\x89PNG\r\n\x1a\n", 0, "image/png"),
    (b"\xff\xd8\xff", 0, "image/jpeg"),
    (b"WEBP", 8, "image/webp"),
    (b"GIF8", 0, "image/gif"),
)


def sniff_mime(data: bytes) -> str | None:
    """The image type the bytes say they are, whatever a header or file name claims."""
    for magic, offset, mime in _MAGIC:
        if data[offset : offset + len(magic)] == magic:
            if mime == "image/webp" and data[:4] != b"RIFF":
                continue
            return mime
    if data[4:8] == b"ftyp":
        brand = data[8:12]
        if brand in (b"heic", b"heix", b"hevc", b"hevx", b"heim", b"heis"):
            return "image/heic"
        if brand in (b"mif1", b"msf1", b"heif"):
            return "image/heif"
    return None


async def decode_image(data: str) -> Image:
    """Base64 (or a data URL) → Image, validated by its magic bytes, never on the loop's GIL
    when large (see `offload`)."""
    if not isinstance(data, str) or not data:
        raise InvalidProviderResponse(detail="image field is empty or not a string")
    if len(data) < offload.LARGE:
        ok, value = offload.decode_base64(data)
    else:
        ok, value = await offload.run(offload.decode_base64, data)
    if not ok:
        raise InvalidProviderResponse(detail=value)
    raw, sha256 = value
    mime = sniff_mime(raw[:64])
    if mime is None:
        raise InvalidProviderResponse(detail=f"decoded {len(raw)} bytes are not an image")
    await verify_whole(raw, mime)
    return Image(data=raw, mime=mime, sha256=sha256)


async def verify_whole(raw: bytes, mime: str) -> None:
    """Raise `BrokenImage` unless every pixel decodes: an answer is never stored, posted or
    fed back to the model half-made. Off the loop; big ones in a worker process."""
    if mime in ("image/heic", "image/heif"):
        return  # Pillow cannot decode these without a plugin; the magic bytes must do
    if len(raw) < offload.LARGE:
        ok, value = await asyncio.to_thread(offload.verify_image, raw, MAX_IMAGE_PIXELS)
    else:
        ok, value = await offload.run(offload.verify_image, raw, MAX_IMAGE_PIXELS)
    if not ok:
        raise BrokenImage(detail=f"{len(raw)} bytes of {mime}: {value}")


async def b64encode(image: Image) -> str:
    """Base64 of an image (history sent back to stateless providers), large ones in a worker."""
    if image.size < offload.LARGE:
        return offload.encode_base64(image.data)
    return await offload.run(offload.encode_base64, image.data)


async def data_url(image: Image) -> str:
    return f"data:{image.mime};base64,{await b64encode(image)}"


async def image_from_download(raw: bytes) -> Image:
    """Bytes downloaded from a provider's storage → Image, refusing non-images."""
    mime = sniff_mime(raw[:64])
    if mime is None:
        raise InvalidProviderResponse(detail=f"download of {len(raw)} bytes is not an image")
    await verify_whole(raw, mime)
    return await Image.from_bytes(raw, mime)
