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
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Final
from urllib.parse import quote

import httpx

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
        if "data" in inline:  # an image other than the result, kept in the state itself
            parts.append(part)
            continue
        if inline.pop("sha256", None) != turn.result.sha256:
            # An unsigned thought image: neither the store nor the state keeps it.
            log.debug("dropping an unsigned thought image of an earlier Gemini answer")
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
