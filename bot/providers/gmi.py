"""GMI Cloud's request queue for Gemini image models, translated into one provider.

What GMI documents, and what this module does with it:

- Base URL `https://console.gmicloud.ai`, every call under `/api/v1/ie/requestqueue/apikey`,
  authenticated with `Authorization: Bearer <api key>`. The key is sent to that origin only:
  upload targets and generated media live on cloud storage (signed URLs), which must never
  see it.
- Submit: `POST /requests` with `{"model", "payload": {"prompt", "image": [up to 3 reference
  image URLs], "aspect_ratio": "1:1" | "3:2" | …, "image_size"?}}`. The answer is
  `{"request_id", "status": "queued", …}`; it may already say `success`.
- `model` is GMI's id for the requested model, looked up in `bot.catalog` (the same as
  Google's today, e.g. `gemini-3-pro-image-preview`); a model GMI does not sell is refused
  by the core before it gets here, so an id the table lacks is sent as it is.
- Output size (`1K`/`2K`/`4K`, Gemini 3 Pro and 3.1 Flash): GMI's field for it is
  *unconfirmed*. We send `payload.image_size` — Google's `imageConfig.imageSize` in the
  snake_case GMI uses for `aspect_ratio` — and only when the user chose a size, so requests
  without one are exactly what GMI documents. If GMI calls it something else it either
  answers 400 naming the field (the user sees the provider's reason, an input error: not
  retried) or ignores it and makes its default size; `_sized` is the one place to change.
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
instead of submitting again. A resumed job polls on the schedule of its original submission
time when this provider instance submitted it (a resume within the same process), else on a
schedule starting now; `ProviderCall` carries no submission time, so after a real restart it
is the latter. Its deadline counts from the resume.

Polling (`poll_schedule`, a pure function of the learned durations and `PollPolicy`):

- Why not a fixed schedule: a delay ≤ 10 % of the job for *every* length needs each poll at
  most 1.1 × the previous one, and 5 s → 30 s then takes ln 6 / ln 1.1 ≈ 19 polls; with 8
  polls the fixed schedule (1.5, 3.98, 8.06, 12.56, 17.06 … s) sees a 5 s job 3.06 s late
  (61 %), a 10 s job 26 %, a 15 s job 14 %. No fixed schedule fits every job length.
- But one model's jobs do not take every length. `DurationEstimator` keeps the last 20
  durations of successful jobs per model and size (in memory: a restart relearns within 5
  jobs); `expect` turns them into a band `low`..`high` where the next job should finish:
  the range of the samples without outliers (quartiles ± 1.5 IQR: a job stuck in GMI's
  queue), widened by range / (n − 1) at each end, at least ±10 % around the median.
- The schedule then spends its polls on that band: polls a·1.1^i see any job in it with a
  delay under 10 %, and ±30 % around the median (low/high ≈ 2) takes 8 of them, so no poll
  is left before the band; a narrower band needs fewer and the spare ones go before it, as
  the fixed schedule would place them (1.5 s, 3.98 s, …). After the band the intervals grow
  by `factor` up to `max_interval` again (4.5 s) until the deadline. With no history (fewer
  than 5 jobs) the schedule is the fixed one.
- Durations are measured by the polls themselves: the middle of the interval between the last
  poll that saw the job running and the one that saw it done (±5 % inside the band). A job
  outside the band is seen by a sparse poll; its middle would be a guess, so it counts as the
  nearest duration a poll on target would still have missed, and the band grows towards such
  jobs step by step. Samples seen through the fixed schedule count only until 5 seen
  through a learned one exist, so a coarse start does not linger for 20 jobs.
- Jitter: sparse polls move by up to ±10 % of their interval, as before; the band moves as a
  whole by up to ±1 % (`jitter` × `target`) of its offsets, which keeps its 1.1 ratios, so
  concurrent jobs of one model still spread apart without uncovering the band.
- Limits. Jobs outside the learned band pay: with a 5 s median a 1 s job is seen at about
  3.5 s, a 30 s one after 15 polls (the band's 8 and the tail's); with a 30 s median nothing
  polls before about 21 s. A band wider than 8 polls can cover (high/low above 2.1, about
  ±35 % around the median) is covered around the median, and the jobs at its ends miss
  10 %. Twenty samples locate a band's ends only to a few per cent, so a job drawn from the
  same ±30 % spread lands outside the band (and misses 10 %, half of those with a 9th poll)
  about 1 % of the time; see BENCHMARKS.md. A window of 40 halves that but follows a change
  in GMI's speed half as fast. Durations are learned per model and size; edits and new
  images of one model share them.
"""

from __future__ import annotations

import asyncio
import copy
import logging
import math
import random
import re
import statistics
import time
from collections import deque
from collections.abc import Awaitable, Callable, Generator, Hashable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Final, TypeGuard

import httpx

from bot.catalog import model_info
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
    """When to ask GMI whether a request is done (the design is in the module docstring).

    The fixed schedule (a model without history; also the polls before a learned band and,
    from the band's last interval, the tail after it): intervals grow from `first_interval`
    by `factor` up to `max_interval`; the last poll is at `deadline` (then `ProviderTimeout`).
    The defaults poll at 1.5, 3.98, 8.06, 12.56, 17.06, 21.56, 26.06, 30.56 s, then every
    4.5 s: a job of 5–30 s is seen by the 8th poll, jitter included (30.56 − 0.45 ≥ 30).

    A learned band gets polls `target` (10 %) apart relative to their offsets, as many as it
    needs up to `max_polls`. `jitter` moves each sparse poll by up to ±`jitter` × its
    interval around the nominal offset (it does not accumulate), and the band as a whole by
    ±`jitter` × `target` of its offsets.
    """

    first_interval: float = 1.5
    factor: float = 1.65
    max_interval: float = 4.5
    jitter: float = 0.1
    deadline: float = 300.0
    target: float = 0.1
    max_polls: int = 8


@dataclass(frozen=True, slots=True)
class Expected:
    """Where the next job of a model is expected to finish, learned from recent jobs.

    `low`..`high` (seconds after submission) is the band the schedule covers densely.
    """

    median: float
    low: float
    high: float
    samples: int


def poll_schedule(
    policy: PollPolicy,
    rng: random.Random | None = None,
    expected: Expected | None = None,
    *,
    deadline: float | None = None,
) -> list[float]:
    """Seconds after submission at which to poll, in order; the last one is the deadline.

    Without `expected` this is the fixed geometric schedule; with it, dense polls around the
    expected finish (see the module docstring). `deadline` overrides the policy's (a resumed
    job's deadline counts from the resume). Without `rng` (or with `jitter == 0`) the
    schedule is the nominal one, so it can be checked exactly. A pure function.
    """
    horizon = policy.deadline if deadline is None else deadline
    if expected is None:
        return _until(_fixed(policy, rng), horizon)
    return _until(_adaptive(policy, expected, rng), horizon)


def _until(offsets: Iterable[float], horizon: float) -> list[float]:
    """`offsets` below `horizon`, then `horizon` itself."""
    kept: list[float] = []
    for offset in offsets:
        if offset >= horizon:
            break
        kept.append(offset)
    kept.append(horizon)
    return kept


def _jittered(
    nominal: float, interval: float, policy: PollPolicy, rng: random.Random | None
) -> float:
    if rng is None or policy.jitter <= 0:
        return nominal
    return nominal + rng.uniform(-policy.jitter, policy.jitter) * interval


def _fixed(policy: PollPolicy, rng: random.Random | None) -> Iterator[float]:
    """Intervals from `first_interval`, × `factor` up to `max_interval`; jitter around each
    nominal offset (it does not accumulate). Endless: `_until` cuts it."""
    interval = max(policy.first_interval, 0.01)
    nominal = 0.0
    while True:
        nominal += interval
        yield _jittered(nominal, interval, policy, rng)
        interval = min(policy.max_interval, interval * policy.factor)


def _tail(
    start: float, interval: float, policy: PollPolicy, rng: random.Random | None
) -> Iterator[float]:
    """After the band: intervals grow by `factor` from the band's last one up to
    `max_interval` (or stay, if the band's were already longer)."""
    nominal = start
    ceiling = max(policy.max_interval, interval)
    while True:
        interval = min(ceiling, interval * policy.factor)
        nominal += interval
        yield _jittered(nominal, interval, policy, rng)


def _adaptive(policy: PollPolicy, expected: Expected, rng: random.Random | None) -> Iterator[float]:
    """Sparse polls before the band, a geometric band over `low`..`high`, a sparse tail."""
    low = max(expected.low, 0.05)
    high = max(expected.high, low)
    ratio = 1.0 + max(policy.target, 0.01)
    shift = policy.jitter * policy.target if rng is not None else 0.0
    # Polls a·r^i (i < k) see a job in [a/r, a·r^(k-1)] at most r× its length; the band shift
    # f ∈ [1 - shift, 1 + shift] must not uncover either end: r^k ≥ high/low · (1+s)/(1-s).
    need = high / low * (1 + shift) / (1 - shift)
    count = max(1, math.ceil(math.log(need) / math.log(ratio) - 1e-9))
    count = min(count, max(1, policy.max_polls))
    # The polls see [start, start·capacity] on target wherever the shift puts them. Spare
    # coverage is shared by both ends; a band too wide for the budget is covered around the
    # median, where most jobs finish, and its ends pay.
    capacity = ratio**count * (1 - shift) / (1 + shift)
    if capacity >= high / low:
        start = low / math.sqrt(capacity * low / high)
    else:
        start = min(max(expected.median / math.sqrt(capacity), low), high / capacity)
    first = start * ratio / (1 + shift)
    factor = 1 + rng.uniform(-shift, shift) if rng is not None and shift > 0 else 1.0
    band = [first * ratio**i * factor for i in range(count)]
    # Spare polls go before the band, as the fixed schedule would make them, but only where
    # the band's first poll would not see the job within the target anyway.
    spare = max(0, policy.max_polls - count)
    before = first * (1 - shift) / ratio
    fixed = _fixed(policy, rng)
    for _ in range(spare):
        offset = next(fixed)
        if offset >= before:
            break
        yield offset
    yield from band
    last = band[-1]
    yield from _tail(last, last - last / ratio, policy, rng)


@dataclass(frozen=True, slots=True)
class _Sample:
    seconds: float
    learned: bool
    """Seen through a learned schedule (not the sparse fixed one)."""


def expect(durations: Sequence[float], min_spread: float = 0.1) -> Expected:
    """The band the next duration is expected in, from recent ones (a pure function).

    Samples beyond the quartiles ± 1.5 × IQR (a job stuck in GMI's queue) are left out; the
    band is then the rest's range widened by range / (n − 1) on each side (the unbiased
    estimate of a uniform distribution's ends: n samples fall short of them by about
    range / (n + 1)), and at least ±`min_spread` around the median.
    """
    xs = sorted(durations)
    if not xs:
        raise ValueError("no durations")
    median = statistics.median(xs)
    if len(xs) >= 4:
        q1, _, q3 = statistics.quantiles(xs, n=4)
        fence = 1.5 * (q3 - q1)
        xs = [x for x in xs if q1 - fence <= x <= q3 + fence]
    pad = (xs[-1] - xs[0]) / (len(xs) - 1) if len(xs) > 1 else 0.0
    low = min(xs[0] - pad, median * (1 - min_spread))
    high = max(xs[-1] + pad, median * (1 + min_spread))
    return Expected(median=median, low=max(low, 0.05 * median), high=high, samples=len(xs))


class DurationEstimator:
    """The last `window` durations of successful jobs per key (model and size), in memory.

    A duration comes from the interval between the last poll that saw the job running and
    the one that saw it done (`_estimate`). Samples seen through the sparse fixed schedule
    count only until `min_samples` seen through a learned one exist: they are coarse, and
    would otherwise widen the band for `window` jobs.
    """

    def __init__(
        self, window: int = 20, min_samples: int = 5, target: float = 0.1, min_spread: float = 0.1
    ) -> None:
        self.window = window
        self.min_samples = min_samples
        self.target = target
        self.min_spread = min_spread
        self._samples: dict[Hashable, deque[_Sample]] = {}

    def record(
        self, key: Hashable, unfinished: float, finished: float, expected: Expected | None
    ) -> None:
        """A job was still running `unfinished` s after submission and done `finished` s,
        polled with a schedule learned as `expected` (None: the fixed one)."""
        if not 0 <= unfinished < finished:
            return
        samples = self._samples.setdefault(key, deque(maxlen=self.window))
        samples.append(
            _Sample(_estimate(unfinished, finished, expected, self.target), expected is not None)
        )

    def durations(self, key: Hashable) -> list[float]:
        """The durations `expected` uses: those seen through a learned schedule if there are
        enough, else all."""
        samples = self._samples.get(key, ())
        precise = [s.seconds for s in samples if s.learned]
        if len(precise) >= self.min_samples:
            return precise
        return [s.seconds for s in samples]

    def expected(self, key: Hashable) -> Expected | None:
        """Where the next job for `key` should finish; None until `min_samples` jobs."""
        durations = self.durations(key)
        if len(durations) < self.min_samples:
            return None
        return expect(durations, self.min_spread)


def _estimate(
    unfinished: float, finished: float, expected: Expected | None, target: float
) -> float:
    """A job's duration from the interval it finished in.

    The middle, unless the interval is wide (a job outside the learned band, seen by a
    sparse poll): then the duration nearest the band that the interval allows and that a
    poll on target would still have missed, so the band grows towards such jobs step by
    step instead of jumping to a guess.
    """
    middle = (unfinished + finished) / 2
    if expected is None:
        return middle
    ratio = 1 + target
    if finished <= expected.median:
        return max(middle, finished / ratio)
    if unfinished >= expected.median:
        return min(middle, unfinished * ratio)
    return middle


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
        durations: DurationEstimator | None = None,
    ) -> None:
        self._client = make_client(base_url, {}, timeout=timeout, transport=transport)
        self._client.auth = _OriginBearer(api_key, base_url)
        self._policy = policy
        self._poll = poll
        self._sleep = sleep
        self._clock = clock
        self._rng = rng if rng is not None else random.Random()
        self._max_resubmits = max_resubmits
        self.durations = durations if durations is not None else DurationEstimator()
        """Recent job durations per model and size, which shape the poll schedule."""
        self._submitted: dict[str, float] = {}
        """Request id → when this instance submitted it, for a resume in the same process."""

    async def aclose(self) -> None:
        await self._client.aclose()

    async def generate(
        self,
        request: ImageRequest,
        call: ProviderCall = _NO_CALL,
    ) -> ImageResult:
        key = _duration_key(request)
        payload: dict[str, Any] | None = None
        answer: dict[str, Any] | None = None
        now = self._clock()
        deadline = now + self._poll.deadline
        resubmits = 0
        resumed = bool(call.resume_id)
        if call.resume_id:
            request_id = call.resume_id
            origin = self._submitted.get(request_id)
            started = origin if origin is not None else now
            log.info(
                "gmi: resuming request %s (submitted here: %s)", request_id, origin is not None
            )
        else:
            payload = await self._payload(request)
            started = origin = self._clock()
            request_id, answer = await self._submit(request, payload, call, started)
        while True:
            try:
                answer, seen = await self._wait(
                    request_id, answer, started, deadline, key, None if resumed else 0.0
                )
            except _Resubmit as failure:
                self._submitted.pop(request_id, None)
                if resubmits >= self._max_resubmits:
                    raise ProviderUnavailable(
                        detail=f"GMI request {request_id} failed {resubmits + 1} times: "
                        f"{failure.reason}"
                    ) from None
                resubmits += 1
                log.warning("gmi: request %s failed (%s), resubmitting", request_id, failure)
                if payload is None:
                    payload = await self._payload(request)
                started = origin = self._clock()
                resumed = False
                request_id, answer = await self._submit(request, payload, call, started)
                continue
            except ImagineError:
                self._submitted.pop(request_id, None)
                raise
            self._submitted.pop(request_id, None)
            if seen is not None and origin is not None:  # a resume of unknown age teaches nothing
                self.durations.record(key, *seen)
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
        self, request: ImageRequest, payload: dict[str, Any], call: ProviderCall, started: float
    ) -> tuple[str, dict[str, Any]]:
        answer = await self._api(
            "POST", "/requests", {"model": _gmi_model(request), "payload": payload}
        )
        request_id = answer.get("request_id")
        if not isinstance(request_id, str) or not request_id:
            raise InvalidProviderResponse(
                detail=f"submit answer without request_id: {answer!r:.200}"
            )
        log.info("gmi: submitted %s (%s)", request_id, answer.get("status"))
        self._remember(request_id, started)
        await call.on_submitted(request_id)
        return request_id, answer

    def _remember(self, request_id: str, started: float) -> None:
        """Note when `request_id` was submitted; forget ids older than two deadlines."""
        stale = started - 2 * self._poll.deadline
        for old in [i for i, t in self._submitted.items() if t < stale]:
            del self._submitted[old]
        self._submitted[request_id] = started

    async def _wait(
        self,
        request_id: str,
        answer: dict[str, Any] | None,
        started: float,
        deadline: float,
        key: Hashable,
        unfinished: float | None,
    ) -> tuple[dict[str, Any], tuple[float, float, Expected | None] | None]:
        """Poll until the request is finished; return the `success` answer and, when a poll
        saw it finish, (last offset seen unfinished, offset seen done, the expectation the
        schedule was made from) for the duration estimator.

        `unfinished` is the last offset the request is known to have been running: 0 for a
        fresh submission, None for a resume (until a poll here sees it running)."""
        expected = self.durations.expected(key)
        schedule: Iterator[float] = iter(
            poll_schedule(self._poll, self._rng, expected, deadline=deadline - started)
        )
        polled = False
        sent = started
        while True:
            if answer is not None:
                status = answer.get("status")
                if status == "success":
                    seen = self._clock() - started
                    known = polled and unfinished is not None
                    return answer, ((unfinished or 0.0, seen, expected) if known else None)
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
            if polled:
                unfinished = sent - started
            sent = self._clock()
            answer = await self._api("GET", f"/requests/{request_id}")
            polled = True

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
            return _sized(
                {
                    "contents": continue_contents(state, request.prompt, pairs),
                    "aspect_ratio": request.aspect_ratio,
                },
                request,
            )
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
        return _sized(payload, request)

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


def _gmi_model(request: ImageRequest) -> str:
    """GMI's id for the requested model, from the catalog (the core refuses unsold ones)."""
    model = request.model or DEFAULT_MODEL
    return model_info(model).provider_id("gmi") or model


def _duration_key(request: ImageRequest) -> tuple[str, str | None]:
    """Durations are learned per model and size: a 4K image takes longer than a 1K one."""
    return _gmi_model(request), request.size


def _sized(payload: dict[str, Any], request: ImageRequest) -> dict[str, Any]:
    """The output size as `payload.image_size` (GMI's field is unconfirmed; see the top)."""
    if request.size:
        payload["image_size"] = request.size
    return payload


def _is_contents(state: Any) -> TypeGuard[list[Any]]:
    return isinstance(state, list) and bool(state) and all(isinstance(t, dict) for t in state)
