"""GMI Cloud's request queue for Gemini 2.5 Flash Image, translated into one provider.

What GMI documents, and what this module does with it:

- Base URL `https://console.gmicloud.ai`, every call under `/api/v1/ie/requestqueue/apikey`,
  authenticated with `Authorization: Bearer <api key>`. The key is sent to that origin only:
  upload targets and generated media live on cloud storage (signed URLs), which must never
  see it.
- Submit: `POST /requests` with `{"model": "gemini-2.5-flash-image", "payload": {"prompt",
  "image": [up to 3 reference image URLs], "aspect_ratio": "1:1" | "3:2" | …}}`. The answer is
  `{"request_id", "status": "queued", …}`; it may already say `success`.
- Status: `GET /requests/{request_id}` → `status` is `queued` or `processing` (the SDK also
  knows `created` and `dispatched`) while waiting, then `success`, `failed` or `cancelled`.
  On success `outcome.media_urls` is `[{"id", "url"}]` and `outcome.next_turn_contents` is the
  conversation so far. Each output image costs 1290 tokens.
- Generated media sit on cloud storage for a limited time: every URL is downloaded at once.
- Reference images must be URLs: `POST /upload-url {"file_type": "png"}` →
  `{"upload_url", "public_url"}`; `PUT` the bytes to `upload_url`, then pass `public_url`.
- Multi-turn editing: copy the previous `next_turn_contents` into `payload.contents` and fill
  the new instruction into the last user turn (its empty `text` part; a new reference image
  goes into a `fileData {mimeType, fileUri}` part). Empty `text`/`fileUri` parts are ignored
  by the server, and with `contents` present `prompt` and `image` are ignored, so only
  `contents` and `aspect_ratio` are sent. The contents are stored verbatim as the turn's
  `provider_state`; a thread that was started with another provider continues here as a single
  turn with the parent's image uploaded as a reference.
- Input images: `payload.image` takes at most 3. A continuation carries the previous image in
  `contents` (the conversation), so up to 3 new references still fit. A turn continued from
  another provider's thread sends the parent's image in `payload.image` too, so it leaves
  room for 2 new references: more is refused (`TooManyImagesForEdit`) before anything is
  uploaded or submitted, never silently cut.
- The model's words in its last turn of `next_turn_contents` are the result's `text`.
- Errors: non-2xx answers carry an `error` field; 401 is a bad key; 429 limits apply to the
  whole organisation; 5xx is the service. A `failed` request states its reason in `outcome`
  (`outcome.error` / `outcome.message`) or in a top-level `error` — which one is unconfirmed, so
  both are read. Reasons about safety, blocking or policy are the safety filter; an "unknown
  error, try again" is transient and the request is submitted again (at most `max_resubmits`
  times, each new id reported through `ProviderCall.on_submitted`).
- A `cancelled` request (cancelled on GMI's side, e.g. from the console) ends the job with
  `bot.errors.Cancelled`. Cancelling our own task (`asyncio.CancelledError`) stops polling at
  once; GMI documents no cancel call, so the remote request simply runs out.

Resuming: the `request_id` is handed to `ProviderCall.on_submitted` before the first poll, so
the caller stores it durably; after a restart `ProviderCall(resume_id=...)` polls that id
instead of submitting again.
"""

from __future__ import annotations

import asyncio
import copy
import logging
import random
import re
import time
from collections.abc import Awaitable, Callable, Generator, Iterator
from dataclasses import dataclass
from typing import Any, Final, TypeGuard

import httpx

from bot.errors import (
    Cancelled,
    ImagineError,
    InvalidProviderResponse,
    NoImageReturned,
    ProviderRejected,
    ProviderTimeout,
    ProviderUnavailable,
    SafetyBlocked,
    TooManyImages,
    TooManyImagesForEdit,
)
from bot.models import Image, ImageRequest, ImageResult, Usage
from bot.providers.base import Capabilities, ProviderCall
from bot.providers.http import (
    RetryPolicy,
    attempt_timeout,
    default_error,
    error_message,
    image_from_download,
    make_client,
    read_limited,
    request_json,
)

log = logging.getLogger(__name__)

DEFAULT_BASE_URL: Final = "https://console.gmicloud.ai"
PREFIX: Final = "/api/v1/ie/requestqueue/apikey"
DEFAULT_MODEL: Final = "gemini-2.5-flash-image"
TOKENS_PER_IMAGE: Final = 1290
MAX_REFERENCES: Final = 3
MAX_DOWNLOAD_BYTES: Final = 32 * 1024 * 1024
"""Largest generated image we download (a 1K PNG is about 2 MB; GCS inputs may be 30 MB)."""

PENDING: Final = frozenset({"queued", "processing", "created", "dispatched"})

_FILE_TYPES: Final = {
    "image/png": "png",
    "image/jpeg": "jpeg",
    "image/webp": "webp",
    "image/heic": "heic",
    "image/heif": "heif",
}
_SAFETY: Final = re.compile(
    r"safety|unsafe|blocked|block_reason|polic(?:y|ies)|prohibited|moderation|harm", re.I
)
_TRANSIENT: Final = re.compile(
    r"unknown error|try again|retry|temporar|internal error|overloaded|unavailable|timed? ?out",
    re.I,
)
_NO_IMAGE: Final = re.compile(r"no[ _]image", re.I)

Sleep = Callable[[float], Awaitable[None]]
Clock = Callable[[], float]


@dataclass(frozen=True, slots=True)
class PollPolicy:
    """When to ask GMI whether a request is done.

    Poll k (k = 1, 2, …) happens `t_k` seconds after submission, where the intervals grow
    from `first_interval` by `factor` up to `max_interval`, and the last poll is at `deadline`
    (then `ProviderTimeout`). Jitter moves each poll by up to ±`jitter` × its interval around
    that fixed schedule (it does not accumulate), which spreads many clients apart (GMI's rate
    limit is per organisation) while keeping the bound on polls below.

    The defaults give intervals 1.5, 2.475, 4.084, 4.5, 4.5, … and so polls at
    1.5, 3.98, 8.06, 12.56, 17.06, 21.56, 26.06, 30.56 s (then every 4.5 s up to 300 s):

    - Poll count: a job of 5–30 s is seen by the 8th poll, jitter included
      (30.56 − 0.1 × 4.5 = 30.11 ≥ 30); one of 5 s needs 3 polls, 10 s needs 4, 20 s needs 6.
    - Detection delay: at most one interval, ≤ 4.5 s (5.4 s if jitter moves both of its
      ends apart); a 20 s job is seen at 21.56 s (1.56 s, 7.8 %), a 30 s job at 30.56 s
      (1.9 %), an 8 s job at 8.06 s (0.8 %).
      Over jobs spread evenly from 5 to 30 s the mean delay is 2.2 s, 12.6 % of the mean job
      time (mean of delay/job 15.8 %).
    - The limit of the goal: a delay ≤ 10 % for *every* job length means each poll at most
      1.1 × the previous one, and 5 s → 30 s then takes ln 6 / ln 1.1 ≈ 19 polls, so no
      schedule meets both that and 8 polls. With 8 polls between 5 and 30 s the intervals
      average ≥ 3.1 s; even the best schedule of this shape (2.5, 6.5, 10.5, … every 4 s)
      only reaches 11 % of mean job time, and gives up the short first interval that makes
      fast and cached answers quick. The defaults keep that interval and stay within 2 points.
    """

    first_interval: float = 1.5
    factor: float = 1.65
    max_interval: float = 4.5
    jitter: float = 0.1
    deadline: float = 300.0


def poll_schedule(policy: PollPolicy, rng: random.Random | None = None) -> list[float]:
    """Seconds after submission at which to poll, in order; the last one is the deadline.

    Without `rng` (or with `jitter == 0`) the schedule is the nominal one, so it can be
    checked exactly.
    """
    offsets: list[float] = []
    interval = max(policy.first_interval, 0.01)
    nominal = 0.0
    while True:
        nominal += interval
        if nominal >= policy.deadline:
            offsets.append(policy.deadline)
            return offsets
        shift = 0.0
        if rng is not None and policy.jitter > 0:
            shift = rng.uniform(-policy.jitter, policy.jitter) * interval
        offsets.append(nominal + shift)
        interval = min(policy.max_interval, interval * policy.factor)


_RETRY: Final = RetryPolicy()
_POLL: Final = PollPolicy()
_NO_CALL: Final = ProviderCall()


class _OriginBearer(httpx.Auth):
    """`Authorization: Bearer` for the API origin only, never for storage hosts."""

    def __init__(self, api_key: str, base_url: str) -> None:
        self._header = f"Bearer {api_key}"
        self._origin = _origin(httpx.URL(base_url))

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        if _origin(request.url) == self._origin:
            request.headers["Authorization"] = self._header
        yield request


def _origin(url: httpx.URL) -> tuple[str, str, int | None]:
    default = {"http": 80, "https": 443}.get(url.scheme)
    return url.scheme, url.host, url.port or default


def _map_error(response: httpx.Response, body: Any) -> ImagineError:
    """GMI's error answers: the shared mapping, plus safety refusals given as a 4xx."""
    reason = error_message(body)
    status = response.status_code
    if 400 <= status < 500 and status not in (401, 403, 429) and _SAFETY.search(reason):
        return SafetyBlocked(detail=f"HTTP {response.status_code}: {reason}")
    return default_error(response, body)


def _failure_reason(answer: dict[str, Any]) -> str:
    """The reason of a `failed` request: in `outcome` or top-level (unconfirmed which)."""
    outcome = answer.get("outcome")
    reasons: list[str] = []
    if isinstance(outcome, str):
        reasons.append(outcome)
    elif isinstance(outcome, dict):
        reasons.append(error_message(outcome))
        for key in ("reason", "error_message", "detail"):
            if isinstance(outcome.get(key), str):
                reasons.append(outcome[key])
    reasons.append(error_message(answer))
    if isinstance(answer.get("reason"), str):
        reasons.append(answer["reason"])
    return next((r.strip() for r in reasons if r and r.strip()), "")


class _Resubmit(Exception):
    """A `failed` request whose reason says it is worth submitting again."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def _model_text(contents: Any) -> str:
    """Text the model wrote in its last turn of `next_turn_contents` (its thoughts left out):
    shown with the image, as Nexconn's and Gemini's words are."""
    if not isinstance(contents, list):
        return ""
    for turn in reversed(contents):
        if isinstance(turn, dict) and turn.get("role") == "model":
            parts = turn.get("parts")
            if not isinstance(parts, list):
                return ""
            texts = [
                p["text"]
                for p in parts
                if isinstance(p, dict) and isinstance(p.get("text"), str) and not p.get("thought")
            ]
            return "\n".join(t.strip() for t in texts if t.strip())
    return ""


def continue_contents(
    state: list[Any], prompt: str, references: list[tuple[str, str]]
) -> list[Any]:
    """`next_turn_contents` with the new instruction (and references) in the last user turn.

    `references` are `(mime, public_url)` pairs. The stored state is copied, never changed.
    """
    contents = copy.deepcopy(state)
    last = contents[-1] if contents else None
    if not (isinstance(last, dict) and last.get("role") == "user"):
        last = {"role": "user", "parts": []}
        contents.append(last)
    parts = last.get("parts")
    if not isinstance(parts, list):
        parts = last["parts"] = []
    empty_text = next(
        (p for p in parts if isinstance(p, dict) and "text" in p and not p["text"]), None
    )
    if empty_text is not None:
        empty_text["text"] = prompt
    else:
        parts.insert(0, {"text": prompt})
    slots = [
        p["fileData"]
        for p in parts
        if isinstance(p, dict)
        and isinstance(p.get("fileData"), dict)
        and not p["fileData"].get("fileUri")
    ]
    for mime, url in references:
        if slots:
            slot = slots.pop(0)
            slot["mimeType"], slot["fileUri"] = mime, url
        else:
            parts.append({"fileData": {"mimeType": mime, "fileUri": url}})
    return contents


class GmiProvider:
    """Gemini 2.5 Flash Image through GMI Cloud's asynchronous request queue."""

    name = "gmi"
    capabilities = Capabilities(max_reference_images=MAX_REFERENCES)

    def __init__(
        self,
        api_key: str,
        base_url: str = DEFAULT_BASE_URL,
        *,
        transport: httpx.AsyncBaseTransport | None = None,
        policy: RetryPolicy = _RETRY,
        poll: PollPolicy = _POLL,
        timeout: float = 60.0,
        sleep: Sleep = asyncio.sleep,
        clock: Clock = time.monotonic,
        rng: random.Random | None = None,
        max_resubmits: int = 2,
    ) -> None:
        self._client = make_client(base_url, {}, timeout=timeout, transport=transport)
        self._client.auth = _OriginBearer(api_key, base_url)
        self._policy = policy
        self._poll = poll
        self._sleep = sleep
        self._clock = clock
        self._rng = rng if rng is not None else random.Random()
        self._max_resubmits = max_resubmits

    async def aclose(self) -> None:
        await self._client.aclose()

    async def generate(
        self,
        request: ImageRequest,
        call: ProviderCall = _NO_CALL,
    ) -> ImageResult:
        payload: dict[str, Any] | None = None
        answer: dict[str, Any] | None = None
        started = self._clock()
        deadline = started + self._poll.deadline
        resubmits = 0
        if call.resume_id:
            request_id = call.resume_id
            log.info("gmi: resuming request %s", request_id)
        else:
            payload = await self._payload(request)
            started = self._clock()
            request_id, answer = await self._submit(request, payload, call)
        while True:
            try:
                answer = await self._wait(request_id, answer, started, deadline)
            except _Resubmit as failure:
                if resubmits >= self._max_resubmits:
                    raise ProviderUnavailable(
                        detail=f"GMI request {request_id} failed {resubmits + 1} times: "
                        f"{failure.reason}"
                    ) from None
                resubmits += 1
                log.warning("gmi: request %s failed (%s), resubmitting", request_id, failure)
                if payload is None:
                    payload = await self._payload(request)
                started = self._clock()
                request_id, answer = await self._submit(request, payload, call)
                continue
            return await self._result(request_id, answer)

    # --- requests ------------------------------------------------------------------------

    async def _api(self, method: str, path: str, body: Any = None) -> dict[str, Any]:
        answer = await request_json(
            self._client,
            method,
            PREFIX + path,
            json_body=body,
            policy=self._policy,
            map_error=_map_error,
            sleep=self._sleep,
        )
        if not isinstance(answer, dict):
            raise InvalidProviderResponse(detail=f"{method} {path}: answer is not an object")
        return answer

    async def _submit(
        self, request: ImageRequest, payload: dict[str, Any], call: ProviderCall
    ) -> tuple[str, dict[str, Any]]:
        answer = await self._api(
            "POST", "/requests", {"model": request.model or DEFAULT_MODEL, "payload": payload}
        )
        request_id = answer.get("request_id")
        if not isinstance(request_id, str) or not request_id:
            raise InvalidProviderResponse(
                detail=f"submit answer without request_id: {answer!r:.200}"
            )
        log.info("gmi: submitted %s (%s)", request_id, answer.get("status"))
        await call.on_submitted(request_id)
        return request_id, answer

    async def _wait(
        self, request_id: str, answer: dict[str, Any] | None, started: float, deadline: float
    ) -> dict[str, Any]:
        """Poll until the request is finished; return the `success` answer."""
        schedule: Iterator[float] = iter(poll_schedule(self._poll, self._rng))
        while True:
            if answer is not None:
                status = answer.get("status")
                if status == "success":
                    return answer
                if status == "failed":
                    raise self._failed(request_id, answer)
                if status == "cancelled":
                    raise Cancelled(detail=f"GMI request {request_id} was cancelled")
                if status not in PENDING:
                    log.warning("gmi: request %s has unknown status %r", request_id, status)
            now = self._clock()
            if now >= deadline:
                raise ProviderTimeout(
                    detail=f"GMI request {request_id} unfinished after {now - started:.0f} s"
                )
            target = next((started + t for t in schedule if started + t > now), deadline)
            await self._sleep(min(target, deadline) - now)
            answer = await self._api("GET", f"/requests/{request_id}")

    def _failed(self, request_id: str, answer: dict[str, Any]) -> Exception:
        reason = _failure_reason(answer)
        detail = f"GMI request {request_id} failed: {(reason or repr(answer))[:300]}"
        if _SAFETY.search(reason):
            return SafetyBlocked(detail=detail)
        if _NO_IMAGE.search(reason):
            return NoImageReturned(detail=detail)
        if _TRANSIENT.search(reason):
            return _Resubmit(reason)
        if reason:
            return ProviderRejected(reason, detail=detail)
        return ProviderUnavailable(detail=detail)

    async def _result(self, request_id: str, answer: dict[str, Any]) -> ImageResult:
        outcome = answer.get("outcome")
        if not isinstance(outcome, dict):
            outcome = {}
        contents = outcome.get("next_turn_contents")
        media = outcome.get("media_urls")
        urls: list[str] = []
        for item in media if isinstance(media, list) else []:
            url = item.get("url") if isinstance(item, dict) else item
            if isinstance(url, str) and url:
                urls.append(url)
        if not urls:
            raise NoImageReturned(
                _model_text(contents), detail=f"GMI request {request_id}: success without media"
            )
        images = await asyncio.gather(*(self._download(url) for url in urls))
        tokens = TOKENS_PER_IMAGE * len(images)
        return ImageResult(
            images=tuple(images),
            text=_model_text(contents),
            usage=Usage(output_tokens=tokens, total_tokens=tokens),
            provider_state=contents,
            provider_request_id=request_id,
        )

    # --- payloads and storage -------------------------------------------------------------

    async def _payload(self, request: ImageRequest) -> dict[str, Any]:
        parent = request.history[-1] if request.history else None
        state = parent.provider_state if parent is not None else None
        if parent is not None and parent.provider == self.name and _is_contents(state):
            # The previous image travels in the conversation (`contents`), not as an input.
            refs = request.references
            if len(refs) > MAX_REFERENCES:
                raise TooManyImages(len(refs), MAX_REFERENCES, detail="GMI continuation")
            urls = await asyncio.gather(*(self._upload(image) for image in refs))
            pairs = [(image.mime, url) for image, url in zip(refs, urls, strict=True)]
            return {
                "contents": continue_contents(state, request.prompt, pairs),
                "aspect_ratio": request.aspect_ratio,
            }
        references = request.references
        if parent is not None:  # another provider's thread: one turn, edit the parent's image
            if len(references) + 1 > MAX_REFERENCES:
                raise TooManyImagesForEdit(
                    len(references),
                    MAX_REFERENCES,
                    detail=f"GMI takes {MAX_REFERENCES} input images; the parent image of a "
                    f"{parent.provider} turn plus {len(references)} references do not fit",
                )
            references = (parent.result, *references)
        elif len(references) > MAX_REFERENCES:
            raise TooManyImages(len(references), MAX_REFERENCES, detail="GMI payload.image")
        payload: dict[str, Any] = {"prompt": request.prompt}
        if references:
            payload["image"] = list(
                await asyncio.gather(*(self._upload(image) for image in references))
            )
        payload["aspect_ratio"] = request.aspect_ratio
        return payload

    async def _upload(self, image: Image) -> str:
        """Put an image where GMI can read it; return its public URL."""
        file_type = _FILE_TYPES.get(image.mime, image.mime.rpartition("/")[2] or "png")
        answer = await self._api("POST", "/upload-url", {"file_type": file_type})
        upload_url, public_url = answer.get("upload_url"), answer.get("public_url")
        if not (isinstance(upload_url, str) and upload_url):
            raise InvalidProviderResponse(detail=f"upload-url answer: {answer!r:.200}")
        if not (isinstance(public_url, str) and public_url):
            raise InvalidProviderResponse(detail=f"upload-url answer: {answer!r:.200}")
        await self._storage("PUT", upload_url, image.data, {"Content-Type": image.mime})
        return public_url

    async def _download(self, url: str) -> Image:
        return await image_from_download(await self._storage("GET", url))

    async def _storage(
        self,
        method: str,
        url: str,
        content: bytes | None = None,
        headers: dict[str, str] | None = None,
    ) -> bytes:
        """One request to cloud storage (signed URLs: no API key, no JSON)."""
        if httpx.URL(url).scheme not in ("http", "https"):
            raise InvalidProviderResponse(detail=f"{method} {url:.200}: not an http(s) URL")
        try:
            async with asyncio.timeout(attempt_timeout(self._client)):
                async with self._client.stream(method, url, content=content, headers=headers) as r:
                    if not r.is_success:
                        raise ProviderUnavailable(
                            detail=f"{method} {r.request.url.host}{r.request.url.path}: "
                            f"HTTP {r.status_code}"
                        )
                    return await read_limited(r, MAX_DOWNLOAD_BYTES)
        except TimeoutError as exc:
            raise ProviderTimeout(detail=f"{method} {url:.200}: no full answer in time") from exc
        except httpx.TimeoutException as exc:
            raise ProviderTimeout(detail=f"{method} {url:.200}: {type(exc).__name__}") from exc
        except httpx.TransportError as exc:
            raise ProviderUnavailable(detail=f"{method} {url:.200}: {exc!r}") from exc


def _is_contents(state: Any) -> TypeGuard[list[Any]]:
    return isinstance(state, list) and bool(state) and all(isinstance(t, dict) for t in state)
