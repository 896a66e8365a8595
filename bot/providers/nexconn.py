"""Nexconn's OpenAI-style API for Gemini 2.5 Flash Image, translated into a `Provider`.

What the Nexconn documentation says, and what we do with it:

- Host `https://api-xmodel.nexconn.ai`; every path adds `/v1/…`. Authentication is one
  header. The documentation shows `Authorization: <api-key>`; the vendor it resells expects
  `Authorization: Bearer <api-key>`. We send `Bearer` and make the scheme a setting
  (`auth_scheme=""` sends the bare key).
- **Models**: `model` is the provider's id from `bot.catalog` (Gemini 3 Pro Image is
  `gemini-3.0-pro-image-preview` here, `gemini-3-pro-image-preview` at Google).
- **Size**: when a size is chosen (`1K`, `2K`, `4K`), `image_config` also carries
  `image_size` (`{aspect_ratio, image_size}`) on every endpoint. The field is *unconfirmed*:
  Nexconn's schema list names a `Gemini30ProImageConfig` without documenting it; we send
  Google's `imageSize` in the snake case the rest of `image_config` uses. No size chosen: no
  `image_size` field.
- **Text to image**: `POST /v1/images/generations` with JSON
  `{model, prompt, n, image_config: {aspect_ratio}}`. The answer is
  `{created, data: [{b64_json}], output_format: "png", usage: {input_tokens, output_tokens,
  total_tokens}}`. We use it when there is nothing to edit (no history, no reference image).
- **Chat** (the default for edits and every multi-turn conversation):
  `POST /v1/chat/completions` in the OpenAI chat shape. A user message's content is a list
  of `{type: "text", text}` and `{type: "image_url", image_url: {url}}` parts, where the URL
  may be a `data:image/png;base64,…` URL. `image_config: {aspect_ratio}` goes at the top
  level and `modalities: ["image", "text"]` asks for an image. The answer carries its images
  in `choices[0].message.images[]` as `{type: "image_url", image_url: {url: "data:…"}}`;
  `message.content` holds the model's words and may be empty.
- **Edits**: `POST /v1/images/edits` with JSON (not multipart) `{model, prompt, image}`,
  where `image` is a list of https or data URLs. Same answer as text to image. The edits
  documentation lists no aspect ratio field; we send `image_config: {aspect_ratio}` exactly as
  generations takes it (same gateway, same model config), so a chosen ratio is not lost.

Why chat is the default for edits: the server keeps no state, so a conversation is only as
good as what each request carries. The chat endpoint takes the whole history — every
earlier instruction with the image it produced — so after "now in watercolor" and then
"make the cup blue" the model still knows the picture should stay watercolor. The edits
endpoint sees one instruction and the last image only; it cannot know what was asked
before. It stays reachable (`mode="edits"`) for accounts or models where chat is not
offered, and then acts single-turn: the parent's image plus any new reference images, both
as they are.

What a chat edit sends, so its size does not grow with the thread's depth:

- every earlier instruction as text, and the model's earlier words as text;
- **the image being edited** (the latest turn's result) as it is, byte for byte, as a data
  URL;
- **new reference images** (attached to this edit) as they are;
- **older images** — the results of earlier turns and the reference images of every
  earlier turn — at reduced size, as a `data:image/jpeg;base64,…` URL: a JPEG whose long
  side is at most 512 px, at quality 85, lowered step by step (75, 65, 50) and then made
  a quarter smaller at a time until it is at most 40 KB; transparency is flattened onto
  white. An older image already within 512 px and 40 KB, or one whose copy would not be
  smaller, is sent as it is. The copies are made once per image (by its sha256), in
  memory and off the event loop, and never stored.

With 1.5 MB images a depth-8 edit therefore sends the edited image plus at most seven
40 KB copies (and the instructions), instead of eight full images.

Failures: the API answers 400, 401, 429 and 500 with `{"error": {"message", "type"}}` (a
flat `{"message"}` is accepted too, the documentation does not pin it down). A 400 whose
`type` or `code` is `content_policy_violation`, or whose message speaks of safety, policy or
blocking, is the safety filter, not a malformed request. A 200 with an empty `data` list or
no `message.images` is the model declining; its text is shown to the user.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Awaitable, Callable, Mapping
from types import MappingProxyType
from typing import Any, Final

import httpx

from bot.catalog import ModelNotSold, model_info
from bot.errors import (
    ImagineError,
    InvalidProviderResponse,
    NoImageReturned,
    SafetyBlocked,
)
from bot.models import HistoryTurn, Image, ImageRequest, ImageResult, Usage
from bot.providers.base import Capabilities, ProviderCall
from bot.providers.http import (
    MAX_RESPONSE_BYTES,
    RetryPolicy,
    data_url,
    decode_image,
    default_error,
    error_message,
    make_client,
    request_json,
)
from bot.providers.shrink import Shrinker

DEFAULT_POLICY: Final = RetryPolicy()
NO_HOOKS: Final = ProviderCall()
DEFAULT_BASE_URL: Final = "https://api-xmodel.nexconn.ai"
MODES: Final = ("chat", "edits")

SHARED_SHRINKER: Final = Shrinker()
"""Reduced copies of older history images, shared by every NexconnProvider of the process."""
NO_IMAGES: Final[Mapping[str, Image]] = MappingProxyType({})

GENERATIONS_PATH: Final = "/v1/images/generations"
EDITS_PATH: Final = "/v1/images/edits"
CHAT_PATH: Final = "/v1/chat/completions"

_SAFETY_CODES: Final = frozenset(
    {"content_policy_violation", "content_filter", "moderation_blocked"}
)
_SAFETY_WORDS: Final = re.compile(
    r"safety|unsafe|polic(?:y|ies)|blocked|moderation|prohibited", re.I
)


def _error_fields(body: Any) -> tuple[str, str]:
    """`type` and `code` of an error body, nested or flat, as lower-case strings."""
    if not isinstance(body, dict):
        return "", ""
    err = body.get("error")
    source = err if isinstance(err, dict) else body
    return str(source.get("type") or "").lower(), str(source.get("code") or "").lower()


def is_safety_refusal(body: Any) -> bool:
    """Whether an error body is the safety filter speaking (by its code or its words)."""
    kind, code = _error_fields(body)
    if kind in _SAFETY_CODES or code in _SAFETY_CODES:
        return True
    return bool(_SAFETY_WORDS.search(error_message(body)))


def map_error(response: httpx.Response, body: Any) -> ImagineError:
    """Nexconn's error answers → the user's error; the safety filter is recognised first."""
    status = response.status_code
    if 400 <= status < 500 and status not in (401, 403, 429) and is_safety_refusal(body):
        detail = f"HTTP {status} from {response.request.url.path}: {error_message(body)}"
        return SafetyBlocked(detail=detail)
    return default_error(response, body)


def _int(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


def parse_usage(body: dict[str, Any]) -> Usage:
    """Chat answers count `prompt_tokens`/`completion_tokens`, the images API
    `input_tokens`/`output_tokens`; either is read from either endpoint."""
    usage = body.get("usage")
    if not isinstance(usage, dict):
        return Usage()
    given_in = usage.get("input_tokens", usage.get("prompt_tokens"))
    given_out = usage.get("output_tokens", usage.get("completion_tokens"))
    inp, out = _int(given_in), _int(given_out)
    total = _int(usage.get("total_tokens")) or inp + out
    return Usage(input_tokens=inp, output_tokens=out, total_tokens=total)


class NexconnProvider:
    """Gemini 2.5 Flash Image through Nexconn: synchronous, images in and out as base64."""

    name = "nexconn"
    capabilities = Capabilities(max_reference_images=3)

    def __init__(
        self,
        api_key: str,
        base_url: str = DEFAULT_BASE_URL,
        *,
        mode: str = "chat",
        auth_scheme: str = "Bearer",
        transport: httpx.AsyncBaseTransport | None = None,
        policy: RetryPolicy = DEFAULT_POLICY,
        timeout: float = 120.0,
        max_response_bytes: int = MAX_RESPONSE_BYTES,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        shrinker: Shrinker | None = None,
    ) -> None:
        if mode not in MODES:
            raise ValueError(f"Nexconn mode must be one of {', '.join(MODES)}, not {mode!r}")
        authorization = f"{auth_scheme} {api_key}" if auth_scheme else api_key
        self.mode = mode
        self._policy = policy
        self._limit = max_response_bytes
        self._sleep = sleep
        self._shrinker = shrinker if shrinker is not None else SHARED_SHRINKER
        self._later: set[asyncio.Future[Image]] = set()
        self._client = make_client(
            base_url, {"Authorization": authorization}, timeout=timeout, transport=transport
        )

    async def aclose(self) -> None:
        for task in self._later:
            task.cancel()
        await asyncio.gather(*self._later, return_exceptions=True)
        await self._client.aclose()

    async def generate(self, request: ImageRequest, call: ProviderCall = NO_HOOKS) -> ImageResult:
        if not request.history and not request.references:
            return await self._generate(request)
        if self.mode == "edits":
            return await self._edit(request)
        return await self._chat(request)

    async def _post(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        answer = await request_json(
            self._client,
            "POST",
            path,
            json_body=body,
            policy=self._policy,
            map_error=map_error,
            limit=self._limit,
            sleep=self._sleep,
        )
        if not isinstance(answer, dict):
            raise InvalidProviderResponse(detail=f"{path}: answer is {type(answer).__name__}")
        error = answer.get("error")
        if error and not answer.get("data") and not answer.get("choices"):
            # Some gateways report a failure inside a 200.
            if is_safety_refusal(answer):
                raise SafetyBlocked(detail=f"{path}: {error_message(answer)}")
            raise InvalidProviderResponse(detail=f"{path}: error in a 200: {error_message(answer)}")
        return answer

    # --- /v1/images/generations and /v1/images/edits -------------------------------------

    async def _generate(self, request: ImageRequest) -> ImageResult:
        body = {
            "model": self._model(request),
            "prompt": request.prompt,
            "n": 1,
            "image_config": image_config(request),
        }
        return await self._images_answer(GENERATIONS_PATH, await self._post(GENERATIONS_PATH, body))

    async def _edit(self, request: ImageRequest) -> ImageResult:
        sources: list[Image] = []
        if request.history:
            sources.append(request.history[-1].result)
        sources.extend(request.references)
        body = {
            "model": self._model(request),
            "prompt": request.prompt,
            "image": [await data_url(image) for image in sources],
            "image_config": image_config(request),
        }
        return await self._images_answer(EDITS_PATH, await self._post(EDITS_PATH, body))

    def _model(self, request: ImageRequest) -> str:
        model = model_info(request.model).provider_id(self.name)
        if model is None:
            raise ModelNotSold(request.model, self.name)
        return model

    async def _images_answer(self, path: str, answer: dict[str, Any]) -> ImageResult:
        data = answer.get("data")
        if data is not None and not isinstance(data, list):
            raise InvalidProviderResponse(detail=f"{path}: `data` is {type(data).__name__}")
        images: list[Image] = []
        for item in data or ():
            encoded = item.get("b64_json") if isinstance(item, dict) else None
            if encoded is None and isinstance(item, dict):
                url = item.get("url")
                encoded = url if isinstance(url, str) and url.startswith("data:") else None
            if encoded is None:
                raise InvalidProviderResponse(
                    detail=f"{path}: item without b64_json: {item!r:.200}"
                )
            images.append(await decode_image(encoded))
        text = _text_of(answer.get("text") or answer.get("revised_prompt"))
        if not images:
            raise NoImageReturned(text, detail=f"{path}: empty data")
        return ImageResult(images=tuple(images), text=text, usage=parse_usage(answer))

    # --- /v1/chat/completions --------------------------------------------------------------

    def _shrink_ahead(self, last: tuple[HistoryTurn, ...], references: tuple[Image, ...]) -> None:
        """Make, once this edit is sent, the reduced copies the next edit will need (the image
        edited now and the new references become older images then), so it does not wait."""
        for image in (*(turn.result for turn in last), *references):
            task = asyncio.ensure_future(self._shrinker.smaller(image))
            self._later.add(task)
            task.add_done_callback(self._later.discard)

    async def idle(self) -> None:
        """Wait for copies made ahead of the next edit (tests, benchmarks)."""
        while self._later:
            await asyncio.gather(*self._later, return_exceptions=True)

    async def _older_images(self, history: tuple[HistoryTurn, ...]) -> dict[str, Image]:
        """sha256 → the reduced copy of every history image but the one being edited."""
        older: dict[str, Image] = {}
        for index, turn in enumerate(history):
            for reference in turn.references:
                older.setdefault(reference.sha256, reference)
            if index < len(history) - 1:
                older.setdefault(turn.result.sha256, turn.result)
        copies = await asyncio.gather(*(self._shrinker.smaller(image) for image in older.values()))
        return dict(zip(older, copies, strict=True))

    async def _chat(self, request: ImageRequest) -> ImageResult:
        smaller = await self._older_images(request.history)
        messages: list[dict[str, Any]] = []
        for index, turn in enumerate(request.history):
            latest = index == len(request.history) - 1
            messages.extend(await _turn_messages(turn, smaller, latest=latest))
        messages.append(
            {"role": "user", "content": await _user_content(request.prompt, request.references)}
        )
        body = {
            "model": self._model(request),
            "messages": messages,
            "modalities": ["image", "text"],
            "image_config": image_config(request),
        }
        answer = await self._post(CHAT_PATH, body)
        self._shrink_ahead(request.history[-1:], request.references)
        choices = answer.get("choices")
        if not isinstance(choices, list) or not choices or not isinstance(choices[0], dict):
            raise InvalidProviderResponse(detail=f"{CHAT_PATH}: no choices")
        choice = choices[0]
        message = choice.get("message")
        if not isinstance(message, dict):
            raise InvalidProviderResponse(detail=f"{CHAT_PATH}: choice without a message")
        text = _text_of(message.get("content"))
        urls = _image_urls(message.get("images")) + _image_urls(message.get("content"))
        images = [await decode_image(url) for url in urls]
        if not images:
            finish = str(choice.get("finish_reason") or "")
            if finish == "content_filter":
                raise SafetyBlocked(detail=f"{CHAT_PATH}: finish_reason content_filter: {text}")
            raise NoImageReturned(text, detail=f"{CHAT_PATH}: no images, finish_reason {finish}")
        return ImageResult(images=tuple(images), text=text, usage=parse_usage(answer))


def image_config(request: ImageRequest) -> dict[str, Any]:
    """`image_config`: the ratio, and the size when one was chosen (`image_size`,
    *unconfirmed*: Nexconn's schema names a `Gemini30ProImageConfig` but not its fields)."""
    config: dict[str, Any] = {"aspect_ratio": request.aspect_ratio}
    if request.size is not None:
        config["image_size"] = request.size
    return config


async def _user_content(
    text: str, references: tuple[Image, ...], smaller: Mapping[str, Image] = NO_IMAGES
) -> list[dict[str, Any]]:
    parts: list[dict[str, Any]] = [{"type": "text", "text": text}]
    for image in references:
        sent = smaller.get(image.sha256, image)
        parts.append({"type": "image_url", "image_url": {"url": await data_url(sent)}})
    return parts


async def _turn_messages(
    turn: HistoryTurn, smaller: Mapping[str, Image], *, latest: bool
) -> list[dict[str, Any]]:
    """One earlier turn as the chat API expects it: the ask, then the answer with its image
    (reduced, unless it is the latest: the image being edited goes as it is)."""
    answer: list[dict[str, Any]] = []
    if turn.text.strip():
        answer.append({"type": "text", "text": turn.text})
    result = turn.result if latest else smaller.get(turn.result.sha256, turn.result)
    answer.append({"type": "image_url", "image_url": {"url": await data_url(result)}})
    return [
        {"role": "user", "content": await _user_content(turn.prompt, turn.references, smaller)},
        {"role": "assistant", "content": answer},
    ]


def _text_of(content: Any) -> str:
    """`message.content` as text: a string, or the text parts of a list of parts."""
    if isinstance(content, str):
        return content.strip()
    if isinstance(content, list):
        texts = [
            str(part.get("text"))
            for part in content
            if isinstance(part, dict) and part.get("type") == "text" and part.get("text")
        ]
        return "\n".join(texts).strip()
    return ""


def _image_urls(parts: Any) -> list[str]:
    """`[{type: "image_url", image_url: {url}}]` → the URLs (a bare string URL is accepted)."""
    if not isinstance(parts, list):
        return []
    urls: list[str] = []
    for part in parts:
        if not isinstance(part, dict) or part.get("type", "image_url") != "image_url":
            continue
        inner = part.get("image_url")
        url = inner.get("url") if isinstance(inner, dict) else inner
        if not isinstance(url, str) or not url:
            raise InvalidProviderResponse(detail=f"image part without a URL: {part!r:.200}")
        if not url.startswith("data:"):
            raise InvalidProviderResponse(detail=f"image is a link, not data: {url[:80]}")
        urls.append(url)
    return urls


__all__ = ["NexconnProvider", "is_safety_refusal", "map_error", "parse_usage"]
