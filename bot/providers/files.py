"""Google's Files API for Gemini: upload an image once, then reference it by `fileData`.

A thread's edit used to resend every earlier image inline (about 16 MB of base64 at depth 8
with 1.5 MB images). With this module each image goes up once, through the resumable upload
the google-genai SDK uses (`files.upload`, `_api_client.upload_file`):

1. `POST {base}/upload/v1beta/files` with `X-Goog-Upload-Protocol: resumable`,
   `X-Goog-Upload-Command: start`, `X-Goog-Upload-Header-Content-Length: <bytes>`,
   `X-Goog-Upload-Header-Content-Type: <mime>` and the JSON
   `{"file": {"display_name", "mime_type", "size_bytes"}}`; the answer's `X-Goog-Upload-URL`
   header is where the bytes go.
2. `POST <upload url>` with the bytes, `X-Goog-Upload-Command: upload, finalize` and
   `X-Goog-Upload-Offset: 0` (one chunk); the answer is `{"file": {name, uri, mimeType,
   state, expirationTime, …}}` with `X-Goog-Upload-Status: final`.

Like the SDK with a custom base URL, the upload URL is sent to the configured origin (its
scheme and host are replaced by the base URL's), so the API key never goes elsewhere; a base
URL with a path (a gateway at `https://gw/gemini`) keeps it: the upload URL's path is put under
it unless it is there already.

What is remembered: `(scope, sha256) → (uri, mime, expiry)` in memory, where the scope is a
hash of the API key and base URL (a file belongs to the project of the key that made it).
Nothing is persisted: after a restart an image is uploaded again on first use. An entry is
treated as gone an hour before Google's `expirationTime` (files live 48 h), so a request never
names a file that expires while the model reads it.

A refusal is remembered too, for `REFUSAL_MEMORY` (10 minutes): when the Files API refuses an
upload (a gateway without it answers 404, or something that is no upload answer), no image of
that scope is offered to it meanwhile — they go inline, with no request — and after that the
next image tries again. A file Google failed to process is remembered as refused for that
image only.
"""

from __future__ import annotations

import asyncio
import datetime
import hashlib
import logging
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Final

import httpx

from bot.errors import (
    ImagineError,
    InvalidProviderResponse,
    ProviderRejected,
    ProviderTimeout,
    ProviderUnavailable,
    RateLimited,
)
from bot.models import Image
from bot.providers.http import (
    ErrorMapper,
    RetryPolicy,
    parse_json,
    read_limited,
    retry_after_seconds,
)

log = logging.getLogger(__name__)

UPLOAD_PATH: Final = "/upload/v1beta/files"
LIFETIME: Final = 48 * 3600.0
"""How long Google keeps a file (used when an answer has no readable `expirationTime`)."""
MARGIN: Final = 3600.0
"""A file this close to its expiry is uploaded again rather than referenced."""
MAX_ANSWER: Final = 1024 * 1024
PROCESSING_POLLS: Final = (0.2, 0.5, 1.0)
"""Waits before re-reading a file still `PROCESSING` (images are `ACTIVE` at once in practice)."""
REFUSAL_MEMORY: Final = 600.0
"""Seconds a refused upload is remembered: meanwhile the images go inline, untried."""
EVERY_IMAGE: Final = ""
"""The refusal key of a whole scope (its Files API refused), not of one image."""


@dataclass(frozen=True, slots=True)
class Uploaded:
    """A file Google holds for us: what a `fileData` part names."""

    name: str
    uri: str
    mime: str
    expires_at: float
    """Epoch seconds."""

    def part(self) -> dict[str, Any]:
        return {"fileData": {"mimeType": self.mime, "fileUri": self.uri}}


def scope_of(api_key: str, base_url: str) -> str:
    """Which project's files: keys are not kept in memory as dictionary keys."""
    return hashlib.sha256(f"{base_url.rstrip('/')}\0{api_key}".encode()).hexdigest()[:32]


def parse_expiry(value: Any, now: float) -> float:
    """RFC 3339 `expirationTime` (nanoseconds allowed) → epoch seconds; 48 h when unreadable."""
    if isinstance(value, str) and value:
        text = value.strip()
        if "." in text:  # Python reads at most 6 fractional digits
            head, _, tail = text.partition(".")
            digits = "".join(c for c in tail if c.isdigit())
            text = f"{head}.{digits[:6]}{tail[len(digits) :]}"
        try:
            moment = datetime.datetime.fromisoformat(text)
        except ValueError:
            pass
        else:
            if moment.tzinfo is None:
                moment = moment.replace(tzinfo=datetime.UTC)
            return moment.timestamp()
    return now + LIFETIME


class FileCache:
    """`(scope, sha256) → Uploaded`, in memory, least recently used dropped first."""

    def __init__(self, max_entries: int = 4096, clock: Callable[[], float] = time.time) -> None:
        self._entries: OrderedDict[tuple[str, str], Uploaded] = OrderedDict()
        self._refusals: OrderedDict[tuple[str, str], float] = OrderedDict()
        """`(scope, sha256 or EVERY_IMAGE)` → until when (epoch seconds) not to try."""
        self._max = max_entries
        self._clock = clock

    def refused(self, scope: str, sha256: str) -> bool:
        """Whether an upload of this image (or any of this scope) was refused lately."""
        now = self._clock()
        for key in ((scope, EVERY_IMAGE), (scope, sha256)):
            until = self._refusals.get(key)
            if until is not None and until <= now:
                del self._refusals[key]
            elif until is not None:
                return True
        return False

    def refuse(self, scope: str, sha256: str = EVERY_IMAGE) -> None:
        """Remember a refusal for `REFUSAL_MEMORY` seconds: of one image, or of the scope."""
        self._refusals[(scope, sha256)] = self._clock() + REFUSAL_MEMORY
        self._refusals.move_to_end((scope, sha256))
        while len(self._refusals) > self._max:
            self._refusals.popitem(last=False)

    def get(self, scope: str, sha256: str) -> Uploaded | None:
        """The file, unless it is gone or about to be."""
        key = (scope, sha256)
        entry = self._entries.get(key)
        if entry is None:
            return None
        if entry.expires_at - MARGIN <= self._clock():
            del self._entries[key]
            return None
        self._entries.move_to_end(key)
        return entry

    def put(self, scope: str, sha256: str, entry: Uploaded) -> None:
        self._entries[(scope, sha256)] = entry
        self._entries.move_to_end((scope, sha256))
        while len(self._entries) > self._max:
            self._entries.popitem(last=False)

    def forget(self, scope: str, sha256: str) -> None:
        self._entries.pop((scope, sha256), None)

    def __len__(self) -> int:
        return len(self._entries)


def _on_base(url: str, base: httpx.URL) -> httpx.URL:
    """The upload URL on the configured origin (the SDK does this for a custom base URL),
    under the base URL's path: a gateway at `https://gw/gemini` that passes Google's
    `…/upload/v1beta/files?upload_id=…` through gets `https://gw/gemini/upload/…`, one that
    names its own `https://gw/gemini/upload/…` keeps it."""
    parsed = httpx.URL(url)
    prefix = base.path.rstrip("/")
    path = parsed.path
    if prefix and path != prefix and not path.startswith(f"{prefix}/"):
        path = f"{prefix}{path}"
    return parsed.copy_with(scheme=base.scheme, host=base.host, port=base.port, path=path)


def _file_of(body: Any, now: float) -> tuple[Uploaded, str]:
    """`{"file": {...}}` (or the file itself, as `GET files/…` answers) → (file, state)."""
    file = body.get("file", body) if isinstance(body, dict) else None
    if not isinstance(file, dict):
        raise InvalidProviderResponse(detail=f"Files API answer without a file: {body!r:.200}")
    uri, name = file.get("uri"), file.get("name")
    mime = file.get("mimeType") or file.get("mime_type")
    if not (isinstance(uri, str) and uri and isinstance(name, str) and isinstance(mime, str)):
        raise InvalidProviderResponse(detail=f"Files API answer lacks uri/name: {file!r:.200}")
    expires = parse_expiry(file.get("expirationTime") or file.get("expiration_time"), now)
    state = str(file.get("state") or "ACTIVE")
    return Uploaded(name=name, uri=uri, mime=mime, expires_at=expires), state


class GeminiFiles:
    """Uploads for one API key and base URL, each image once, shared by concurrent edits."""

    def __init__(
        self,
        client: httpx.AsyncClient,
        scope: str,
        *,
        cache: FileCache,
        map_error: ErrorMapper,
        policy: RetryPolicy,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._client = client
        self._scope = scope
        self._cache = cache
        self._map_error = map_error
        self._policy = policy
        self._sleep = sleep
        self._clock = clock
        self._in_flight: dict[str, asyncio.Task[Uploaded | None]] = {}

    def forget(self, sha256: str) -> None:
        self._cache.forget(self._scope, sha256)

    async def aclose(self) -> None:
        """Stop uploads still under way (before their client closes)."""
        tasks = list(self._in_flight.values())
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def ensure(self, image: Image) -> Uploaded | None:
        """The file for `image`, uploading it unless a live one is remembered.

        None means "send it inline": the Files API refused it (a gateway without the Files
        API, a file Google failed to process), now or within `REFUSAL_MEMORY` — then no
        request is made. Rate limits, outages and a bad key are raised, as the generation
        itself would meet them too.
        """
        known = self._cache.get(self._scope, image.sha256)
        if known is not None:
            return known
        if self._cache.refused(self._scope, image.sha256):
            return None
        task = self._in_flight.get(image.sha256)
        if task is None:
            task = asyncio.ensure_future(self._upload(image))
            self._in_flight[image.sha256] = task
            task.add_done_callback(lambda _: self._in_flight.pop(image.sha256, None))
        return await asyncio.shield(task)  # one waiter's cancellation stops no other

    async def _upload(self, image: Image) -> Uploaded | None:
        try:
            uploaded, state = await self._retrying(image)
            if state == "PROCESSING":
                uploaded, state = await self._until_active(uploaded)
        except (ProviderRejected, InvalidProviderResponse) as exc:
            self._cache.refuse(self._scope)
            log.warning(
                "Gemini Files API refused an upload; images go inline for the next %.0f "
                "minutes: %s",
                REFUSAL_MEMORY / 60,
                exc.detail,
            )
            return None
        if state not in ("ACTIVE", "STATE_UNSPECIFIED"):
            self._cache.refuse(self._scope, image.sha256)
            log.warning("Gemini file %s is %s, sending the image inline", uploaded.name, state)
            return None
        self._cache.put(self._scope, image.sha256, uploaded)
        return uploaded

    async def _retrying(self, image: Image) -> tuple[Uploaded, str]:
        """Start and finish one upload, the pair again on an outage or a dropped connection
        (a half-made upload is harmless: Google drops it)."""
        last: ImagineError = ProviderUnavailable(detail="no upload attempt made")
        for attempt in range(self._policy.attempts):
            try:
                return await self._upload_once(image)
            except (RateLimited, ProviderUnavailable, ProviderTimeout) as exc:
                last = exc
                wait = exc.retry_after if isinstance(exc, RateLimited) else None
                if wait is not None and wait > self._policy.max_retry_after:
                    raise
            if attempt < self._policy.attempts - 1:
                await self._sleep(wait if wait is not None else self._policy.backoff(attempt))
        raise last

    async def _upload_once(self, image: Image) -> tuple[Uploaded, str]:
        start_headers = {
            "X-Goog-Upload-Protocol": "resumable",
            "X-Goog-Upload-Command": "start",
            "X-Goog-Upload-Header-Content-Length": str(image.size),
            "X-Goog-Upload-Header-Content-Type": image.mime,
        }
        meta = {
            "file": {
                "display_name": f"imagine-{image.sha256[:16]}",
                "mime_type": image.mime,
                "size_bytes": image.size,
            }
        }
        started, _ = await self._send("POST", UPLOAD_PATH, start_headers, json_body=meta)
        upload_url = started.headers.get("x-goog-upload-url")
        if not upload_url:
            raise InvalidProviderResponse(detail="Files API start without X-Goog-Upload-URL")
        target = _on_base(upload_url, self._client.base_url)
        finish_headers = {"X-Goog-Upload-Command": "upload, finalize", "X-Goog-Upload-Offset": "0"}
        done, body = await self._send("POST", str(target), finish_headers, content=image.data)
        status = done.headers.get("x-goog-upload-status")
        if status is not None and status != "final":
            raise ProviderUnavailable(detail=f"Files API upload ended {status!r}, not final")
        return _file_of(body, self._clock())

    async def _until_active(self, uploaded: Uploaded) -> tuple[Uploaded, str]:
        state = "PROCESSING"
        for wait in PROCESSING_POLLS:
            await self._sleep(wait)
            _, body = await self._send("GET", f"/v1beta/{uploaded.name}", {})
            uploaded, state = _file_of(body, self._clock())
            if state != "PROCESSING":
                break
        return uploaded, state

    async def _send(
        self,
        method: str,
        url: str,
        headers: dict[str, str],
        *,
        json_body: Any = None,
        content: bytes | None = None,
    ) -> tuple[httpx.Response, Any]:
        """One request; an error answer is mapped to the user's error and raised."""
        try:
            async with asyncio.timeout(self._client.timeout.read):
                async with self._client.stream(
                    method, url, headers=headers, json=json_body, content=content
                ) as response:
                    raw = await read_limited(response, MAX_ANSWER)
        except (TimeoutError, httpx.TimeoutException) as exc:
            raise ProviderTimeout(detail=f"Files API {method}: {type(exc).__name__}") from None
        except httpx.TransportError as exc:
            detail = f"Files API {method}: {type(exc).__name__}: {exc}"
            raise ProviderUnavailable(detail=detail) from None
        try:
            body = await parse_json(raw) if raw.strip() else None
        except InvalidProviderResponse:
            if response.is_success:
                raise
            body = None
        if response.is_success:
            return response, body
        error = self._map_error(response, body)
        if response.status_code == 429 and not isinstance(error, RateLimited):
            error = RateLimited(retry_after_seconds(response), detail=error.detail)
        raise error


__all__ = ["REFUSAL_MEMORY", "FileCache", "GeminiFiles", "Uploaded", "parse_expiry", "scope_of"]
