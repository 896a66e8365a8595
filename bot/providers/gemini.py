"""Google's Gemini API (`generateContent`) for Gemini 2.5 Flash Image, as a `Provider`.

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
  too), with `candidates[0].finishReason` (`STOP`, `IMAGE_SAFETY`, `PROHIBITED_CONTENT`,
  `SAFETY`, `BLOCKLIST`, `SPII`, `NO_IMAGE`, …) and `usageMetadata` token counts. A prompt
  blocked before generation has `promptFeedback.blockReason` and no candidates.
- Multi-turn is stateless: every request carries the whole conversation, the model's own
  turns with their images included. The model may sign its parts with a `thoughtSignature`;
  each must be sent back exactly as received, on the part it came on.

How a conversation is kept: a turn's `provider_state` is the model's answer parts exactly as
received, except that each inline image's base64 `data` is replaced by a marker
`{mimeType, sha256}`. The store already keeps the image by its hash (it is the turn's
result), so the database does not hold a second, base64 copy. When the conversation
continues, the marker is swapped back for the result image's base64 and the parts — text,
signatures and all — go back as the `model` turn. A turn made by another provider has no
such parts; it is sent as its text plus its result image.

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
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Final
from urllib.parse import quote

import httpx

from bot.errors import (
    BadApiKey,
    ImagineError,
    InvalidProviderResponse,
    NoImageReturned,
    ProviderRejected,
    ProviderUnavailable,
    RateLimited,
    SafetyBlocked,
)
from bot.models import HistoryTurn, Image, ImageRequest, ImageResult, Usage
from bot.providers.base import Capabilities, ProviderCall
from bot.providers.http import (
    MAX_RESPONSE_BYTES,
    RetryPolicy,
    b64encode,
    decode_image,
    error_message,
    make_client,
    request_json,
    retry_after_seconds,
)

log = logging.getLogger(__name__)

DEFAULT_POLICY: Final = RetryPolicy()
NO_HOOKS: Final = ProviderCall()
DEFAULT_BASE_URL: Final = "https://generativelanguage.googleapis.com"

SAFETY_FINISH_REASONS: Final = frozenset(
    {
        "IMAGE_SAFETY",
        "PROHIBITED_CONTENT",
        "SAFETY",
        "BLOCKLIST",
        "SPII",
        "IMAGE_PROHIBITED_CONTENT",
    }
)
"""`finishReason` values that mean the safety filter stopped the answer."""

STATE_VERSION: Final = 1

_INLINE_KEYS: Final = ("inlineData", "inline_data")
_MIME_KEYS: Final = ("mimeType", "mime_type")
_SAFETY_WORDS: Final = re.compile(r"safety|unsafe|prohibited|blocked", re.I)
_BAD_KEY: Final = re.compile(r"api key not valid|api key expired|api_key_invalid", re.I)


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
    if _SAFETY_WORDS.search(message):
        return SafetyBlocked(detail=detail)
    return ProviderRejected(message, detail=detail)


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


def _inline_key(part: dict[str, Any]) -> str | None:
    return next((key for key in _INLINE_KEYS if isinstance(part.get(key), dict)), None)


def _mime_of(inline: dict[str, Any]) -> str | None:
    return next((str(inline[key]) for key in _MIME_KEYS if key in inline), None)


async def _user_content(text: str, references: tuple[Image, ...]) -> dict[str, Any]:
    parts: list[dict[str, Any]] = [{"text": text}]
    for image in references:
        parts.append({"inline_data": {"mime_type": image.mime, "data": await b64encode(image)}})
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


async def _model_content(turn: HistoryTurn) -> dict[str, Any]:
    """An earlier answer as a `model` turn: the stored parts with the image put back."""
    result_data = await b64encode(turn.result)
    stored = _stored_parts(turn)
    if stored is None:
        parts: list[dict[str, Any]] = [{"text": turn.text}] if turn.text.strip() else []
        parts.append({"inline_data": {"mime_type": turn.result.mime, "data": result_data}})
        return {"role": "model", "parts": parts}
    parts = []
    has_image = False
    for part in stored:
        key = _inline_key(part)
        if key is None:
            parts.append(part)  # text, thoughts, signatures: exactly as received
            continue
        inline = dict(part[key])
        if inline.pop("sha256", None) != turn.result.sha256:
            # A thought image or a second image: the store does not keep it.
            log.debug("dropping an image part of an earlier Gemini answer not kept by the store")
            continue
        inline["data"] = result_data
        parts.append({**part, key: inline})
        has_image = True
    if not has_image:
        parts.append({"inline_data": {"mime_type": turn.result.mime, "data": result_data}})
    return {"role": "model", "parts": parts}


async def read_answer(body: Any) -> Answer:
    """Read `candidates[0]`; raise the user's error when it holds no usable image."""
    if not isinstance(body, dict):
        raise InvalidProviderResponse(detail=f"answer is {type(body).__name__}, not an object")
    feedback = body.get("promptFeedback")
    block = feedback.get("blockReason") if isinstance(feedback, dict) else None
    candidates = body.get("candidates")
    if block and not candidates:
        raise SafetyBlocked(detail=f"prompt blocked: {block}")
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
    if finish in SAFETY_FINISH_REASONS:
        raise SafetyBlocked(detail=f"finishReason {finish}: {text}")

    images: list[Image] = []
    stored: list[dict[str, Any]] = []
    for part in raw_parts:
        key = _inline_key(part)
        if key is None:
            stored.append(part)
            continue
        inline = part[key]
        image = await decode_image(inline.get("data"))
        marker = {k: v for k, v in inline.items() if k != "data"}
        if _mime_of(marker) is None:
            marker["mimeType"] = image.mime
        marker["sha256"] = image.sha256
        stored.append({**part, key: marker})
        if not part.get("thought"):
            images.append(image)
    if not images:
        raise NoImageReturned(text, detail=f"no image part, finishReason {finish or 'none'}")
    return Answer(images=tuple(images), text=text, stored_parts=tuple(stored), finish_reason=finish)


class GeminiProvider:
    """Gemini 2.5 Flash Image through Google's own API: synchronous, base64 in and out."""

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
    ) -> None:
        self._policy = policy
        self._limit = max_response_bytes
        self._sleep = sleep
        self._client = make_client(
            base_url, {"x-goog-api-key": api_key}, timeout=timeout, transport=transport
        )

    async def aclose(self) -> None:
        await self._client.aclose()

    async def generate(self, request: ImageRequest, call: ProviderCall = NO_HOOKS) -> ImageResult:
        contents: list[dict[str, Any]] = []
        for turn in request.history:
            contents.append(await _user_content(turn.prompt, turn.references))
            contents.append(await _model_content(turn))
        contents.append(await _user_content(request.prompt, request.references))
        body = {
            "contents": contents,
            "generationConfig": {
                "responseModalities": ["TEXT", "IMAGE"],
                "imageConfig": {"aspectRatio": request.aspect_ratio},
            },
        }
        model = quote(request.model.removeprefix("models/"), safe="")
        answer_body = await request_json(
            self._client,
            "POST",
            f"/v1beta/models/{model}:generateContent",
            json_body=body,
            policy=self._policy,
            map_error=map_error,
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
