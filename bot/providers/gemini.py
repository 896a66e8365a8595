"""Google's Gemini API (`generateContent`) for the Gemini image models, as a `Provider`.

What Google's documentation says, and what we do with it:

- `POST {base}/v1beta/models/{model}:generateContent`, authenticated by the header
  `x-goog-api-key: <key>`.
- The body is `{contents, generationConfig}`. `contents` is the conversation, oldest first:
  `{role: "user" | "model", parts: [...]}` where a part is `{text}` or an inline image
  `{inline_data: {mime_type, data}}` (base64). `generationConfig.responseModalities:
  ["TEXT", "IMAGE"]` asks for an image, `generationConfig.imageConfig.aspectRatio` sets its
  shape.
- The answer is `candidates[0].content.parts[]`, each `{text}` or
  `{inlineData: {mimeType, data}}` (the REST answer is camelCase; snake_case is accepted
  too), with `candidates[0].finishReason` and `usageMetadata` token counts. A prompt
  blocked before generation has `promptFeedback.blockReason` and no candidates.
- Multi-turn is stateless: every request carries the whole conversation, the model's own
  turns with their images included. The model may sign its parts with a `thoughtSignature`;
  each must be sent back exactly as received, on the part it came on.

How a conversation is kept: a turn's `provider_state` is the model's answer parts exactly as
received, except that the result image's base64 `data` (the first non-thought image, which
the store keeps by its hash and hands back as the turn's result) is replaced by a marker
`{mimeType, sha256}`, so the database does not hold a second copy of it. Every other image
part the next turn must echo — a second or third image of the answer, or a thought image
that carries a `thoughtSignature` — is kept whole, data and signature, because the core
gives a provider only the result image back (Gemini 3 image models refuse a history with a
signed part missing). Unsigned thought images are kept as markers and left out of the
history. When the conversation continues, the marker is swapped back for the result image's
base64 and the parts — text, images, signatures and all — go back as the `model` turn. A
turn made by another provider has no such parts; it is sent as its text plus its result
image.

What an edit sends, so its size does not grow with the thread's depth: the image being
edited (the latest turn's result, with that turn's other parts) and the new reference
images go inline as before; every other image of the history — earlier results, images an
earlier answer's state kept whole, reference images of earlier turns — goes up once through
Google's Files API (`bot.providers.files`, the SDK's resumable upload) and is named by a
`fileData: {mimeType, fileUri}` part in its place, on the same part, so its
`thoughtSignature` and `thought` flag are echoed exactly as before. Uploads are remembered in
memory per API key and base URL by sha256, made concurrently, and done again when Google
has expired the file (48 h): before use when its `expirationTime` is within the hour, and
after the fact when Google answers 403 PERMISSION_DENIED / 404 NOT_FOUND whose message speaks
of a file (or a 400 saying a file expired or is not found) to a request that named files —
those are uploaded again and the request is sent once more; any other 403/404 (a model not
found, the API not enabled) is the user's error at once. Images under 32 KB stay inline. If
the Files API refuses an upload (a gateway without it), the images go inline, and none is
offered to it again for ten minutes.

The model is the provider's id from `bot.catalog`; a chosen size goes in
`generationConfig.imageConfig.imageSize` (`1K`, `2K`, `4K`; google-genai's
`ImageConfig.image_size`), left out when none is chosen.

Finish and block reasons (every member of the google-genai SDK's `FinishReason` and
`BlockedReason`, 3.6.1):

- `SAFETY`, `IMAGE_SAFETY` (finish or block): the safety filter, `SafetyBlocked`.
- Refusals that will repeat — `RECITATION`, `IMAGE_RECITATION`, `BLOCKLIST`,
  `PROHIBITED_CONTENT`, `IMAGE_PROHIBITED_CONTENT`, `SPII`, `MODEL_ARMOR`, `ESCALATION`,
  `LANGUAGE`, and the block reasons `JAILBREAK`, `OTHER`, `BLOCKED_REASON_UNSPECIFIED` —
  are `ModelRefused`, with a short why where the reason names one (never "the safety
  filter": `blockReason: OTHER` is not it).
- `PUP_LIMITED_DISABLED`: Google limited or disabled the account; the user is told an admin
  must check it (`ProviderAccountBlocked`), the log says what to check, at ERROR.
- `MISSING_THOUGHT_SIGNATURE` (or a 400 that speaks of a thought signature): we sent a
  history without a signature, a bug of ours — logged as one at ERROR; the user gets
  `InternalError`'s sentence.
- Anything else (`STOP`, `MAX_TOKENS`, `OTHER`, `IMAGE_OTHER`, `NO_IMAGE`, the tool-call and
  malformed-response reasons, `CONTINUATION`, unknown values): the images are used; with no
  image it is `NoImageReturned` (retryable), showing the model's words if any.

Failures: errors come as `{"error": {"code", "message", "status"}}`. 400 INVALID_ARGUMENT is
a request the model refuses (shown to the user), except "API key not valid", which Google
also sends as 400 and which is a configuration problem; 401/403 PERMISSION_DENIED is a bad
key; 429 RESOURCE_EXHAUSTED is rate limiting (its `RetryInfo.retryDelay` is honoured);
500, 503 UNAVAILABLE and 504 DEADLINE_EXCEEDED mean the service is down or slow.
"""

from __future__ import annotations

import asyncio
import logging
import math
import re
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, Final
from urllib.parse import quote

import httpx

from bot.catalog import ModelNotSold, model_info
from bot.errors import (
    BadApiKey,
    ImagineError,
    InternalError,
    InvalidProviderResponse,
    ModelRefused,
    NoImageReturned,
    ProviderAccountBlocked,
    ProviderRejected,
    ProviderUnavailable,
    RateLimited,
    SafetyBlocked,
)
from bot.models import HistoryTurn, Image, ImageRequest, ImageResult, Usage
from bot.providers import offload
from bot.providers.base import Capabilities, ProviderCall
from bot.providers.files import FileCache, GeminiFiles, Uploaded, scope_of
from bot.providers.http import (
    MAX_RESPONSE_BYTES,
    RetryPolicy,
    b64encode,
    decode_image,
    error_message,
    make_client,
    request_json,
    retry_after_seconds,
    sniff_mime,
)

log = logging.getLogger(__name__)

DEFAULT_POLICY: Final = RetryPolicy()
NO_HOOKS: Final = ProviderCall()
DEFAULT_BASE_URL: Final = "https://generativelanguage.googleapis.com"

_RECITATION: Final = "the result would copy existing work too closely"
_PROHIBITED: Final = "it may contain prohibited content"
_BLOCKLIST: Final = "it contains a term on a blocklist"
_MODEL_ARMOR: Final = "a content screening policy on the provider account blocked it"

REFUSAL_FINISH_REASONS: Final[dict[str, str]] = {
    "RECITATION": _RECITATION,
    "IMAGE_RECITATION": _RECITATION,
    "BLOCKLIST": _BLOCKLIST,
    "PROHIBITED_CONTENT": _PROHIBITED,
    "IMAGE_PROHIBITED_CONTENT": _PROHIBITED,
    "SPII": "it may contain sensitive personal information",
    "MODEL_ARMOR": _MODEL_ARMOR,
    "ESCALATION": "a content escalation rule blocked it",
    "LANGUAGE": "the model doesn't support the language it is written in",
}
"""`finishReason` values of a refusal that will repeat → why, for `ModelRefused`."""

SAFETY_FINISH_REASONS: Final = frozenset({"SAFETY", "IMAGE_SAFETY"})
"""`finishReason` values that mean the safety filter stopped the answer."""

ACCOUNT_FINISH_REASONS: Final = frozenset({"PUP_LIMITED_DISABLED"})
"""`finishReason` values that mean Google restricted the account: an admin must act."""

BUG_FINISH_REASONS: Final = frozenset({"MISSING_THOUGHT_SIGNATURE"})
"""`finishReason` values that mean our request was wrong: a bug of ours."""

RETRYABLE_FINISH_REASONS: Final = frozenset(
    {
        "FINISH_REASON_UNSPECIFIED",
        "STOP",
        "MAX_TOKENS",
        "OTHER",
        "IMAGE_OTHER",
        "NO_IMAGE",
        "MALFORMED_FUNCTION_CALL",
        "UNEXPECTED_TOOL_CALL",
        "TOO_MANY_TOOL_CALLS",
        "MALFORMED_RESPONSE",
        "CONTINUATION",
    }
)
"""`finishReason` values after which an answer with an image is used, and one without an
image is `NoImageReturned` (worth a retry): the model stopped, ran out of room, or slipped.
We declare no tools, so a tool-call reason is a glitch of the model, not a refusal."""

FINISH_REASONS: Final = (
    frozenset(REFUSAL_FINISH_REASONS)
    | SAFETY_FINISH_REASONS
    | ACCOUNT_FINISH_REASONS
    | BUG_FINISH_REASONS
    | RETRYABLE_FINISH_REASONS
)
"""Every `FinishReason` of the google-genai SDK (3.6.1); an unknown one is logged."""

REFUSAL_BLOCK_REASONS: Final[dict[str, str]] = {
    "PROHIBITED_CONTENT": _PROHIBITED,
    "BLOCKLIST": _BLOCKLIST,
    "MODEL_ARMOR": _MODEL_ARMOR,
    "JAILBREAK": "it looks like an attempt to get around the model's rules",
    "OTHER": "",
    "BLOCKED_REASON_UNSPECIFIED": "",
}
"""`promptFeedback.blockReason` values that are a refusal, not the safety filter."""

SAFETY_BLOCK_REASONS: Final = frozenset({"SAFETY", "IMAGE_SAFETY"})

BLOCK_REASONS: Final = frozenset(REFUSAL_BLOCK_REASONS) | SAFETY_BLOCK_REASONS
"""Every `BlockedReason` of the google-genai SDK (3.6.1)."""

STATE_VERSION: Final = 1

UPLOAD_MIN_BYTES: Final = 32 * 1024
"""History images from this size on go up through the Files API; smaller ones stay inline
(their bytes cost less than an upload's round trip)."""

SHARED_FILES: Final = FileCache()
"""Uploads remembered by every GeminiProvider of this process, per API key and base URL."""

NO_IMAGES: Final[Mapping[str, Image]] = MappingProxyType({})

_INLINE_KEYS: Final = ("inlineData", "inline_data")
_MIME_KEYS: Final = ("mimeType", "mime_type")
_SIGNATURE_KEYS: Final = ("thoughtSignature", "thought_signature")
_SAFETY_WORDS: Final = re.compile(r"safety|unsafe|prohibited|blocked", re.I)
_BAD_KEY: Final = re.compile(r"api key not valid|api key expired|api_key_invalid", re.I)
_SIGNATURE_WORDS: Final = re.compile(r"thought[_ ]?signature", re.I)


@dataclass(frozen=True, slots=True)
class Answer:
    """A successful `generateContent` answer, read."""

    images: tuple[Image, ...]
    text: str
    stored_parts: tuple[dict[str, Any], ...]
    finish_reason: str


def _details(body: Any) -> list[dict[str, Any]]:
    err = body.get("error") if isinstance(body, dict) else None
    details = err.get("details") if isinstance(err, dict) else None
    return [d for d in details if isinstance(d, dict)] if isinstance(details, list) else []


def _retry_delay(body: Any) -> float | None:
    """`google.rpc.RetryInfo.retryDelay` ("37s", "0.5s") in seconds."""
    for detail in _details(body):
        if str(detail.get("@type", "")).endswith("google.rpc.RetryInfo"):
            delay = str(detail.get("retryDelay", "")).strip().removesuffix("s")
            try:
                seconds = float(delay)
            except ValueError:
                return None
            return max(0.0, seconds) if math.isfinite(seconds) else None
    return None


def _is_bad_key(body: Any) -> bool:
    if _BAD_KEY.search(error_message(body)):
        return True
    return any(str(d.get("reason", "")).upper() == "API_KEY_INVALID" for d in _details(body))


def map_error(response: httpx.Response, body: Any) -> ImagineError:
    """Google's `{"error": {code, message, status}}` → the user's error."""
    status = response.status_code
    message = error_message(body)
    err = body.get("error") if isinstance(body, dict) else None
    google_status = str(err.get("status", "")) if isinstance(err, dict) else ""
    detail = f"HTTP {status} {google_status} from {response.request.url.path}: {message}"
    if status in (401, 403) or (status == 400 and _is_bad_key(body)):
        return BadApiKey(detail=detail)
    if status == 429:
        wait = retry_after_seconds(response)
        return RateLimited(wait if wait is not None else _retry_delay(body), detail=detail)
    if status >= 500:
        return ProviderUnavailable(detail=detail)
    if _SIGNATURE_WORDS.search(message):
        return _our_bug(detail)
    if _SAFETY_WORDS.search(message):
        return SafetyBlocked(detail=detail)
    return ProviderRejected(message, detail=detail)


def _our_bug(detail: str) -> InternalError:
    """Google says the history we sent lacks a `thoughtSignature`: that is our bug."""
    log.error(
        "bug: Gemini refused the conversation we sent because a thoughtSignature is missing "
        "(every part of an earlier answer must go back with its signature exactly as "
        "received): %s",
        detail,
    )
    return InternalError(detail=f"bug: missing thoughtSignature in the history sent: {detail}")


def _blocked_prompt(block: str) -> ImagineError:
    """`promptFeedback.blockReason` → the user's error: only SAFETY is the safety filter."""
    detail = f"prompt blocked: blockReason {block}"
    if block in SAFETY_BLOCK_REASONS:
        return SafetyBlocked(detail=detail)
    if block not in BLOCK_REASONS:
        log.warning("Gemini blocked a prompt for a reason we do not know: %r", block)
    return ModelRefused(REFUSAL_BLOCK_REASONS.get(block, ""), detail=detail)


def _finish_error(finish: str, text: str) -> ImagineError | None:
    """The error a `finishReason` is whatever the answer holds, or None."""
    detail = f"finishReason {finish}" + (f": {text}" if text else "")
    if finish in SAFETY_FINISH_REASONS:
        return SafetyBlocked(detail=detail)
    if finish in REFUSAL_FINISH_REASONS:
        return ModelRefused(REFUSAL_FINISH_REASONS[finish], detail=detail)
    if finish in ACCOUNT_FINISH_REASONS:
        log.error(
            "Google has limited or disabled the Gemini account behind GEMINI_API_KEY for "
            "Prohibited Use Policy violations (finishReason %s): every request will fail until "
            "an admin checks the project's policy notices in Google AI Studio or the Cloud "
            "console (appeal, or configure another key)",
            finish,
        )
        return ProviderAccountBlocked(detail=detail)
    if finish in BUG_FINISH_REASONS:
        return _our_bug(detail)
    if finish and finish not in FINISH_REASONS:
        log.warning("Gemini answered with a finishReason we do not know: %r", finish)
    return None


def parse_usage(body: dict[str, Any]) -> Usage:
    meta = body.get("usageMetadata")
    if not isinstance(meta, dict):
        return Usage()

    def count(key: str) -> int:
        value = meta.get(key)
        return value if isinstance(value, int) and not isinstance(value, bool) else 0

    inp, out = count("promptTokenCount"), count("candidatesTokenCount")
    return Usage(
        input_tokens=inp, output_tokens=out, total_tokens=count("totalTokenCount") or inp + out
    )


def _signed(part: dict[str, Any]) -> bool:
    return any(part.get(key) for key in _SIGNATURE_KEYS)


def _inline_key(part: dict[str, Any]) -> str | None:
    return next((key for key in _INLINE_KEYS if isinstance(part.get(key), dict)), None)


def _mime_of(inline: dict[str, Any]) -> str | None:
    return next((str(inline[key]) for key in _MIME_KEYS if key in inline), None)


Files = Mapping[str, Uploaded]
"""sha256 → the file Google holds for that image; an image not in it goes inline."""

NO_FILES: Final[Files] = MappingProxyType({})


async def _image_part(image: Image, files: Files) -> dict[str, Any]:
    uploaded = files.get(image.sha256)
    if uploaded is not None:
        return uploaded.part()
    return {"inline_data": {"mime_type": image.mime, "data": await b64encode(image)}}


async def _user_content(
    text: str, references: tuple[Image, ...], files: Files = NO_FILES
) -> dict[str, Any]:
    parts: list[dict[str, Any]] = [{"text": text}]
    parts.extend([await _image_part(image, files) for image in references])
    return {"role": "user", "parts": parts}


def _stored_parts(turn: HistoryTurn) -> list[dict[str, Any]] | None:
    """The parts our own earlier answer stored, or None when the turn is not ours."""
    state = turn.provider_state
    if turn.provider != GeminiProvider.name or not isinstance(state, dict):
        return None
    parts = state.get("parts")
    if not isinstance(parts, list) or not all(isinstance(p, dict) for p in parts):
        return None
    return parts


def _swap_image(part: dict[str, Any], key: str, image: dict[str, Any]) -> dict[str, Any]:
    """`part` with its image field replaced by `image` (an `inline_data` or `fileData`
    part's one field), every other key — `thoughtSignature`, `thought` — kept as it was."""
    [(new_key, value)] = image.items()
    return {(new_key if k == key else k): (value if k == key else v) for k, v in part.items()}


async def _model_content(
    turn: HistoryTurn, files: Files = NO_FILES, decoded: Mapping[str, Image] = NO_IMAGES
) -> dict[str, Any]:
    """An earlier answer as a `model` turn: the stored parts with the image put back, by
    `fileData` when it was uploaded, inline otherwise."""
    stored = _stored_parts(turn)
    if stored is None:
        parts: list[dict[str, Any]] = [{"text": turn.text}] if turn.text.strip() else []
        parts.append(await _image_part(turn.result, files))
        return {"role": "model", "parts": parts}
    parts = []
    has_image = False
    for part in stored:
        key = _inline_key(part)
        if key is None:
            parts.append(part)  # text, thoughts, signatures: exactly as received
            continue
        inline = dict(part[key])
        data = inline.get("data")
        if data is not None:  # an image other than the result, kept in the state itself
            kept = decoded.get(data) if isinstance(data, str) else None
            uploaded = files.get(kept.sha256) if kept is not None else None
            parts.append(part if uploaded is None else _swap_image(part, key, uploaded.part()))
            continue
        if inline.pop("sha256", None) != turn.result.sha256:
            # An unsigned thought image: neither the store nor the state keeps it.
            log.debug("dropping an unsigned thought image of an earlier Gemini answer")
            continue
        uploaded = files.get(turn.result.sha256)
        if uploaded is not None:
            parts.append(_swap_image(part, key, uploaded.part()))
        else:
            inline["data"] = await b64encode(turn.result)
            parts.append({**part, key: inline})
        has_image = True
    if not has_image:
        parts.append(await _image_part(turn.result, files))
    return {"role": "model", "parts": parts}


async def _stored_image(inline: dict[str, Any]) -> Image | None:
    """An image kept whole in a turn's state (base64 `data`), decoded off the loop."""
    data = inline.get("data")
    if not isinstance(data, str):
        return None
    run = offload.decode_base64
    ok, value = run(data) if len(data) < offload.LARGE else await offload.run(run, data)
    if not ok:
        return None
    raw, sha256 = value
    mime = _mime_of(inline) or sniff_mime(raw[:64])
    return Image(data=raw, mime=mime, sha256=sha256) if mime else None


async def history_images(
    history: tuple[HistoryTurn, ...], min_bytes: int
) -> tuple[list[Image], dict[str, Image]]:
    """The images of a history worth uploading, and the state-kept ones by their base64.

    Every image of the history except the latest answer's (the image being edited, which
    goes inline as it is): each turn's reference images, each earlier turn's result and the
    images its state kept whole. Images under `min_bytes` stay inline: an upload's round
    trip costs more than their bytes.
    """
    found: dict[str, Image] = {}
    decoded: dict[str, Image] = {}
    for index, turn in enumerate(history):
        for reference in turn.references:
            found.setdefault(reference.sha256, reference)
        if index == len(history) - 1:
            continue
        found.setdefault(turn.result.sha256, turn.result)
        for part in _stored_parts(turn) or ():
            key = _inline_key(part)
            if key is None:
                continue
            data = part[key].get("data")
            if not isinstance(data, str) or len(data) * 3 // 4 < min_bytes or data in decoded:
                continue
            image = await _stored_image(part[key])
            if image is not None:
                decoded[data] = image
                found.setdefault(image.sha256, image)
    return [image for image in found.values() if image.size >= min_bytes], decoded


async def read_answer(body: Any) -> Answer:
    """Read `candidates[0]`; raise the user's error when it holds no usable image."""
    if not isinstance(body, dict):
        raise InvalidProviderResponse(detail=f"answer is {type(body).__name__}, not an object")
    feedback = body.get("promptFeedback")
    block = feedback.get("blockReason") if isinstance(feedback, dict) else None
    candidates = body.get("candidates")
    if block and not candidates:
        raise _blocked_prompt(str(block))
    if not candidates:
        raise NoImageReturned(detail="no candidates in the answer")
    if not isinstance(candidates, list) or not isinstance(candidates[0], dict):
        raise InvalidProviderResponse(detail="`candidates` is not a list of objects")
    candidate = candidates[0]
    finish = str(candidate.get("finishReason") or "")
    content = candidate.get("content")
    raw_parts = content.get("parts") if isinstance(content, dict) else None
    if raw_parts is None:
        raw_parts = []
    if not isinstance(raw_parts, list) or not all(isinstance(p, dict) for p in raw_parts):
        raise InvalidProviderResponse(detail="`content.parts` is not a list of objects")

    texts = [
        str(p["text"]) for p in raw_parts if isinstance(p.get("text"), str) and not p.get("thought")
    ]
    text = "\n".join(t.strip() for t in texts if t.strip())
    error = _finish_error(finish, text)
    if error is not None:
        raise error

    decoded: list[Image | None] = []
    for part in raw_parts:
        key = _inline_key(part)
        decoded.append(None if key is None else await decode_image(part[key].get("data")))
    images = [
        image
        for part, image in zip(raw_parts, decoded, strict=True)
        if image is not None and not part.get("thought")
    ]
    if not images:
        raise NoImageReturned(text, detail=f"no image part, finishReason {finish or 'none'}")
    result_sha = images[0].sha256
    stored: list[dict[str, Any]] = []
    for part, image in zip(raw_parts, decoded, strict=True):
        key = _inline_key(part)
        if key is None or image is None:
            stored.append(part)
        elif image.sha256 != result_sha and (_signed(part) or not part.get("thought")):
            stored.append(part)  # not the result: the store will not give it back, keep it
        else:
            marker = {k: v for k, v in part[key].items() if k != "data"}
            if _mime_of(marker) is None:
                marker["mimeType"] = image.mime
            marker["sha256"] = image.sha256
            stored.append({**part, key: marker})
    return Answer(images=tuple(images), text=text, stored_parts=tuple(stored), finish_reason=finish)


class _FileGone(ImagineError):
    """Google no longer has a file the request named: upload again and retry once."""

    def __init__(self, error: ImagineError) -> None:
        super().__init__(error.user_message, detail=error.detail)
        self.error = error


_FILE_GONE_WORDS: Final = re.compile(
    r"file.*(not exist|not found|expired|no longer|inactive|not active)", re.I
)
_FILE_WORDS: Final = re.compile(r"\bfiles?\b|file_?data|file_?uri", re.I)


def file_gone(response: httpx.Response, body: Any) -> bool:
    """Whether an error answer to a request naming files means one of them is gone.

    Google answers 403 PERMISSION_DENIED ("You do not have permission to access the File …
    or it may not exist") for a file that expired or belongs to another project, 404
    NOT_FOUND ("File files/… is not found") for a deleted one. A 403 or 404 that does not
    speak of a file — "models/… is not found", "Generative Language API has not been used
    in project …" — is no file's fault: uploading the history again would not help.
    """
    err = body.get("error") if isinstance(body, dict) else None
    google_status = str(err.get("status", "")) if isinstance(err, dict) else ""
    message = error_message(body)
    if response.status_code in (403, 404) or google_status in ("NOT_FOUND", "PERMISSION_DENIED"):
        return bool(_FILE_WORDS.search(message))
    return response.status_code == 400 and bool(_FILE_GONE_WORDS.search(message))


def _map_error_naming_files(response: httpx.Response, body: Any) -> ImagineError:
    error = map_error(response, body)
    return _FileGone(error) if file_gone(response, body) else error


def generation_config(request: ImageRequest) -> dict[str, Any]:
    """`generationConfig`: an image, its ratio, and its size when one was chosen
    (`imageConfig.imageSize`, as google-genai's `ImageConfig.image_size`)."""
    image_config: dict[str, Any] = {"aspectRatio": request.aspect_ratio}
    if request.size is not None:
        image_config["imageSize"] = request.size
    return {"responseModalities": ["TEXT", "IMAGE"], "imageConfig": image_config}


class GeminiProvider:
    """Gemini image models through Google's own API: synchronous; history images by
    `fileData` (the Files API), the image being edited and new references inline."""

    name = "gemini"
    capabilities = Capabilities(max_reference_images=3)

    def __init__(
        self,
        api_key: str,
        base_url: str = DEFAULT_BASE_URL,
        *,
        transport: httpx.AsyncBaseTransport | None = None,
        policy: RetryPolicy = DEFAULT_POLICY,
        timeout: float = 120.0,
        max_response_bytes: int = MAX_RESPONSE_BYTES,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        files: FileCache | None = None,
        upload_min_bytes: int = UPLOAD_MIN_BYTES,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._policy = policy
        self._limit = max_response_bytes
        self._sleep = sleep
        self._upload_min = upload_min_bytes
        self._client = make_client(
            base_url, {"x-goog-api-key": api_key}, timeout=timeout, transport=transport
        )
        self._later: set[asyncio.Task[None]] = set()
        self._files = GeminiFiles(
            self._client,
            scope_of(api_key, base_url),
            cache=files if files is not None else SHARED_FILES,
            map_error=map_error,
            policy=policy,
            sleep=sleep,
            clock=clock,
        )

    async def aclose(self) -> None:
        for task in self._later:
            task.cancel()
        await asyncio.gather(*self._later, return_exceptions=True)
        await self._files.aclose()
        await self._client.aclose()

    async def idle(self) -> None:
        """Wait for the uploads started ahead of the next edit (tests, benchmarks)."""
        while self._later:
            await asyncio.gather(*self._later, return_exceptions=True)

    async def generate(self, request: ImageRequest, call: ProviderCall = NO_HOOKS) -> ImageResult:
        result = await self._generate_with_files(request)
        if request.history:
            self._upload_ahead((request.history[-1].result, *request.references))
        return result

    def _upload_ahead(self, images: tuple[Image, ...]) -> None:
        """Upload, once this edit is answered, the images that go inline in it (the edited
        one, new references): the next edit names them by file, so its request does not
        wait for their upload. A failure here costs nothing: the next edit tries again."""
        for image in images:
            if image.size < self._upload_min:
                continue
            task = asyncio.ensure_future(self._quietly(image))
            self._later.add(task)
            task.add_done_callback(self._later.discard)

    async def _quietly(self, image: Image) -> None:
        try:
            await self._files.ensure(image)
        except ImagineError as exc:
            log.info("uploading an image ahead of the next edit failed: %s", exc.detail)

    async def _generate_with_files(self, request: ImageRequest) -> ImageResult:
        model = model_info(request.model).provider_id(self.name)
        if model is None:
            raise ModelNotSold(request.model, self.name)
        older, decoded = await history_images(request.history, self._upload_min)
        files = await self._upload(older)
        try:
            return await self._generate(request, model, files, decoded, named_once=False)
        except _FileGone as gone:
            log.info("Gemini no longer has a file we named (%s); uploading again", gone.detail)
            for sha256 in files:
                self._files.forget(sha256)
            files = await self._upload(older)
            return await self._generate(request, model, files, decoded, named_once=True)

    async def _upload(self, images: list[Image]) -> dict[str, Uploaded]:
        """Every image's file, uploading the ones not remembered, all at once."""
        found = await asyncio.gather(*(self._files.ensure(image) for image in images))
        return {image.sha256: up for image, up in zip(images, found, strict=True) if up}

    async def _generate(
        self,
        request: ImageRequest,
        model: str,
        files: Files,
        decoded: Mapping[str, Image],
        *,
        named_once: bool,
    ) -> ImageResult:
        contents: list[dict[str, Any]] = []
        for turn in request.history:
            contents.append(await _user_content(turn.prompt, turn.references, files))
            contents.append(await _model_content(turn, files, decoded))
        contents.append(await _user_content(request.prompt, request.references))
        body = {"contents": contents, "generationConfig": generation_config(request)}
        path = f"/v1beta/models/{quote(model.removeprefix('models/'), safe='')}:generateContent"
        answer_body = await request_json(
            self._client,
            "POST",
            path,
            json_body=body,
            policy=self._policy,
            map_error=map_error if named_once or not files else _map_error_naming_files,
            limit=self._limit,
            sleep=self._sleep,
        )
        answer = await read_answer(answer_body)
        return ImageResult(
            images=answer.images,
            text=answer.text,
            usage=parse_usage(answer_body),
            provider_state={"v": STATE_VERSION, "parts": list(answer.stored_parts)},
        )
