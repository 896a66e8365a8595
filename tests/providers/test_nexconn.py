"""NexconnProvider against a fake Nexconn API on loopback: wire shape, answers, failures."""

from __future__ import annotations

import asyncio
import base64
from collections.abc import AsyncIterator
from typing import Any

import pytest

from bot.errors import (
    BadApiKey,
    InvalidProviderResponse,
    NoImageReturned,
    ProviderRejected,
    ProviderTimeout,
    ProviderUnavailable,
    RateLimited,
    SafetyBlocked,
)
from bot.models import HistoryTurn, Image, ImageRequest, ImageResult
from bot.providers.base import Provider
from bot.providers.http import RetryPolicy
from bot.providers.nexconn import NexconnProvider
from bot.providers.shrink import BUDGET
from tests.fakes.nexconn_server import (
    CHAT,
    EDITS,
    GENERATIONS,
    FakeNexconn,
    chat_answer,
    error_body,
    images_answer,
)
from tests.fakes.scripted_json_server import Reply, b64, png
from tests.providers.support import FAST, Sleeps, history_turn, image, within

KEY = "nx-test-key"
MODEL = "gemini-2.5-flash-image"


@pytest.fixture
async def server() -> AsyncIterator[FakeNexconn]:
    fake = FakeNexconn(KEY)
    await fake.start()
    yield fake
    await fake.close()


@pytest.fixture
async def sleeps() -> Sleeps:
    return Sleeps()


@pytest.fixture
async def provider(server: FakeNexconn, sleeps: Sleeps) -> AsyncIterator[NexconnProvider]:
    p = NexconnProvider(KEY, server.base_url, policy=FAST, timeout=5.0, sleep=sleeps)
    yield p
    await p.aclose()


def turn(prompt: str, result: ImageResult, refs: tuple[Image, ...] = ()) -> HistoryTurn:
    return history_turn("nexconn", prompt, result, refs)


def data_url_of(data: bytes) -> str:
    return f"data:image/png;base64,{b64(data)}"


def decoded(url: str) -> bytes:
    assert url.startswith("data:image/png;base64,")
    return base64.b64decode(url.split(",", 1)[1])


# --- success -------------------------------------------------------------------------------


async def test_is_a_provider(provider: NexconnProvider) -> None:
    assert isinstance(provider, Provider)
    assert provider.name == "nexconn"
    assert provider.capabilities.max_reference_images == 3


async def test_text_to_image_returns_the_served_bytes_and_sends_the_aspect_ratio(
    server: FakeNexconn, provider: NexconnProvider
) -> None:
    served = png((10, 200, 10), (16, 9))
    server.image = served

    result = await within(provider.generate(ImageRequest("a red fox", "16:9", MODEL)))

    assert result.image.data == served
    assert result.image.mime == "image/png"
    assert result.provider_state is None
    assert (result.usage.input_tokens, result.usage.output_tokens) == (234, 1290)
    assert result.usage.total_tokens == 1524
    [sent] = server.requests
    assert sent.method == "POST" and sent.path == GENERATIONS
    assert sent.headers["authorization"] == f"Bearer {KEY}"
    assert sent.json == {
        "model": MODEL,
        "prompt": "a red fox",
        "n": 1,
        "image_config": {"aspect_ratio": "16:9"},
    }


async def test_bare_key_when_the_auth_scheme_is_empty() -> None:
    fake = FakeNexconn(KEY, scheme="")
    await fake.start()
    p = NexconnProvider(KEY, fake.base_url, auth_scheme="", policy=FAST)
    try:
        result = await within(p.generate(ImageRequest("a cat", "1:1", MODEL)))
        assert result.image.data == fake.image
        assert fake.requests[0].headers["authorization"] == KEY
    finally:
        await p.aclose()
        await fake.close()


async def test_an_edit_carries_the_previous_image_and_the_instruction(
    server: FakeNexconn, provider: NexconnProvider
) -> None:
    first = png((1, 2, 3))
    edited = png((4, 5, 6))
    server.image = edited
    parent = turn("a mug on a table", ImageResult(images=(image(first),), text="A mug."))

    result = await within(
        provider.generate(ImageRequest("make the mug blue", "1:1", MODEL, history=(parent,)))
    )

    assert result.image.data == edited
    [sent] = server.requests
    assert sent.path == CHAT
    body = sent.json
    assert body["model"] == MODEL
    assert body["modalities"] == ["image", "text"]
    assert body["image_config"] == {"aspect_ratio": "1:1"}
    user, assistant, ask = body["messages"]
    assert user == {"role": "user", "content": [{"type": "text", "text": "a mug on a table"}]}
    assert assistant["role"] == "assistant"
    assert {"type": "text", "text": "A mug."} in assistant["content"]
    [previous] = [p for p in assistant["content"] if p["type"] == "image_url"]
    assert decoded(previous["image_url"]["url"]) == first
    assert ask == {"role": "user", "content": [{"type": "text", "text": "make the mug blue"}]}


async def test_reference_images_alone_go_through_chat(
    server: FakeNexconn, provider: NexconnProvider
) -> None:
    ref = png((9, 9, 9))
    await within(
        provider.generate(ImageRequest("in this style", "4:3", MODEL, references=(image(ref),)))
    )
    [sent] = server.requests
    assert sent.path == CHAT
    [ask] = sent.json["messages"]
    assert ask["content"] == [
        {"type": "text", "text": "in this style"},
        {"type": "image_url", "image_url": {"url": data_url_of(ref)}},
    ]


async def test_three_turns_send_the_whole_conversation_again(
    server: FakeNexconn, provider: NexconnProvider
) -> None:
    png1, png2, png3 = png((10, 0, 0)), png((0, 10, 0)), png((0, 0, 10))
    ref = png((7, 7, 7), (4, 4))

    server.script(Reply(200, images_answer(png1)))
    r1 = await within(provider.generate(ImageRequest("a cup of coffee", "1:1", MODEL)))
    t1 = turn("a cup of coffee", r1)

    server.script(Reply(200, chat_answer(png2, "Now in watercolor.")))
    r2 = await within(
        provider.generate(
            ImageRequest("now in watercolor", "1:1", MODEL, references=(image(ref),), history=(t1,))
        )
    )
    t2 = turn("now in watercolor", r2, (image(ref),))

    server.script(Reply(200, chat_answer(png3, "")))
    r3 = await within(
        provider.generate(ImageRequest("make the cup blue", "1:1", MODEL, history=(t1, t2)))
    )

    assert [r.image.data for r in (r1, r2, r3)] == [png1, png2, png3]
    assert [r.path for r in server.requests] == [GENERATIONS, CHAT, CHAT]
    messages = server.requests[2].json["messages"]
    assert [m["role"] for m in messages] == ["user", "assistant", "user", "assistant", "user"]
    assert messages[0]["content"] == [{"type": "text", "text": "a cup of coffee"}]
    assert messages[1]["content"] == [
        {"type": "image_url", "image_url": {"url": data_url_of(png1)}}
    ]
    assert messages[2]["content"] == [
        {"type": "text", "text": "now in watercolor"},
        {"type": "image_url", "image_url": {"url": data_url_of(ref)}},
    ]
    assert messages[3]["content"] == [
        {"type": "text", "text": "Now in watercolor."},
        {"type": "image_url", "image_url": {"url": data_url_of(png2)}},
    ]
    assert messages[4]["content"] == [{"type": "text", "text": "make the cup blue"}]


async def test_edits_mode_sends_the_parent_image_and_new_references(server: FakeNexconn) -> None:
    p = NexconnProvider(KEY, server.base_url, mode="edits", policy=FAST)
    old, parent_png, ref = png((1, 1, 1)), png((2, 2, 2)), png((3, 3, 3))
    t1 = turn("a house", ImageResult(images=(image(old),)))
    t2 = turn("at night", ImageResult(images=(image(parent_png),)))
    try:
        result = await within(
            p.generate(
                ImageRequest("add snow", "9:16", MODEL, references=(image(ref),), history=(t1, t2))
            )
        )
    finally:
        await p.aclose()
    assert result.image.data == server.image
    [sent] = server.requests
    assert sent.path == EDITS
    assert sent.json == {
        "model": MODEL,
        "prompt": "add snow",
        "image": [data_url_of(parent_png), data_url_of(ref)],
        "image_config": {"aspect_ratio": "9:16"},
    }


def test_an_unknown_mode_is_refused() -> None:
    with pytest.raises(ValueError, match="mode"):
        NexconnProvider(KEY, mode="multipart")


# --- refusals ------------------------------------------------------------------------------

SAFETY_SENTENCE = (
    "The image model's safety filter blocked this request. "
    "Try rewording the prompt or using a different image."
)


@pytest.mark.parametrize(
    "body",
    [
        error_body("Your request was rejected.", "content_policy_violation"),
        error_body("Rejected.", "invalid_request_error", code="content_policy_violation"),
        {"message": "The prompt was blocked by the safety system."},
        error_body("This request violates our usage policy."),
    ],
    ids=["type", "code", "flat-message", "policy-words"],
)
async def test_a_safety_refusal_is_a_safety_block_and_is_not_retried(
    server: FakeNexconn, provider: NexconnProvider, body: Any
) -> None:
    server.script(Reply(400, body))
    with pytest.raises(SafetyBlocked) as caught:
        await within(provider.generate(ImageRequest("something", "1:1", MODEL)))
    assert caught.value.user_message == SafetyBlocked().user_message == SAFETY_SENTENCE
    assert len(server.requests) == 1


async def test_another_400_shows_the_providers_reason(
    server: FakeNexconn, provider: NexconnProvider
) -> None:
    server.script(Reply(400, {"message": "aspect_ratio 7:1 is not supported"}))
    with pytest.raises(ProviderRejected) as caught:
        await within(provider.generate(ImageRequest("x", "1:1", MODEL)))
    assert caught.value.user_message == (
        "The image provider rejected this request: aspect_ratio 7:1 is not supported"
    )
    assert len(server.requests) == 1


async def test_empty_data_is_no_image(server: FakeNexconn, provider: NexconnProvider) -> None:
    server.script(Reply(200, images_answer(None)))
    with pytest.raises(NoImageReturned) as caught:
        await within(provider.generate(ImageRequest("x", "1:1", MODEL)))
    assert caught.value.user_message == NoImageReturned().user_message
    assert caught.value.user_message == (
        "The model didn't return an image this time. Try rephrasing the prompt."
    )


async def test_a_chat_answer_without_images_shows_the_models_words(
    server: FakeNexconn, provider: NexconnProvider
) -> None:
    server.script(Reply(200, chat_answer(None, "I can only describe that scene, not draw it.")))
    with pytest.raises(NoImageReturned) as caught:
        await within(provider.generate(ImageRequest("x", "1:1", MODEL, references=(image(png()),))))
    assert caught.value.model_text == "I can only describe that scene, not draw it."
    assert caught.value.user_message == (
        'The model answered without an image: "I can only describe that scene, not draw it."'
    )


async def test_a_refused_key_is_a_bad_api_key(server: FakeNexconn) -> None:
    p = NexconnProvider("wrong-key", server.base_url, policy=FAST)
    try:
        with pytest.raises(BadApiKey) as caught:
            await within(p.generate(ImageRequest("x", "1:1", MODEL)))
    finally:
        await p.aclose()
    assert caught.value.user_message == BadApiKey().user_message
    assert caught.value.user_message == (
        "The bot isn't set up correctly for its image provider. "
        "An admin has been told to check the logs."
    )
    assert "Invalid API key provided" in caught.value.detail
    assert "wrong-key" not in caught.value.user_message
    assert len(server.requests) == 1


# --- retries -------------------------------------------------------------------------------


async def test_429_waits_retry_after_then_succeeds(
    server: FakeNexconn, provider: NexconnProvider, sleeps: Sleeps
) -> None:
    server.script(
        Reply(429, error_body("Rate limit", "rate_limit_error"), headers={"Retry-After": "3"})
    )
    result = await within(provider.generate(ImageRequest("x", "1:1", MODEL)))
    assert result.image.data == server.image
    assert len(server.requests) == 2
    assert sleeps.waits == [3.0]


async def test_429_with_a_real_short_retry_after(server: FakeNexconn) -> None:
    p = NexconnProvider(KEY, server.base_url, policy=FAST)
    server.script(Reply(429, error_body("Rate limit"), headers={"Retry-After": "1"}))
    loop = asyncio.get_running_loop()
    try:
        started = loop.time()
        await within(p.generate(ImageRequest("x", "1:1", MODEL)))
        elapsed = loop.time() - started
    finally:
        await p.aclose()
    assert len(server.requests) == 2
    assert elapsed >= 0.95


async def test_429_every_time_tells_the_user_when_to_retry(
    server: FakeNexconn, provider: NexconnProvider, sleeps: Sleeps
) -> None:
    server.script(*[Reply(429, error_body("Rate limit"), headers={"Retry-After": "7"})] * 3)
    with pytest.raises(RateLimited) as caught:
        await within(provider.generate(ImageRequest("x", "1:1", MODEL)))
    assert caught.value.user_message == RateLimited(7).user_message
    assert (
        caught.value.user_message
        == "The image provider is rate limiting us. Please try again in 7 seconds."
    )
    assert len(server.requests) == FAST.attempts
    assert sleeps.waits == [7.0, 7.0]


async def test_500_every_time_is_unavailable_after_exactly_the_policys_attempts(
    server: FakeNexconn,
) -> None:
    policy = RetryPolicy(attempts=4, base_delay=0.01, max_delay=0.02)
    p = NexconnProvider(KEY, server.base_url, policy=policy)
    server.script(*[Reply(500, error_body("internal error", "server_error"))] * 10)
    try:
        with pytest.raises(ProviderUnavailable) as caught:
            await within(p.generate(ImageRequest("x", "1:1", MODEL)))
    finally:
        await p.aclose()
    assert len(server.requests) == policy.attempts == 4
    assert caught.value.user_message == ProviderUnavailable().user_message
    assert caught.value.user_message == (
        "The image provider is unavailable right now. Please try again in a few minutes."
    )


async def test_a_slow_generate_times_out_and_is_not_sent_again(server: FakeNexconn) -> None:
    policy = RetryPolicy(attempts=2, base_delay=0.01, max_delay=0.02)
    p = NexconnProvider(KEY, server.base_url, policy=policy, timeout=0.2)
    server.script(*[Reply(200, images_answer(server.image), delay=3.0)] * 2)
    try:
        with pytest.raises(ProviderTimeout) as caught:
            await within(p.generate(ImageRequest("x", "1:1", MODEL)))
    finally:
        await p.aclose()
    assert len(server.requests) == 1  # it may be generating (and billing) already
    assert caught.value.user_message == ProviderTimeout().user_message
    assert (
        caught.value.user_message == "The image provider took too long to answer. Please try again."
    )


# --- broken answers ------------------------------------------------------------------------

UNREADABLE = "The image provider sent an answer I couldn't read. Please try again."


@pytest.mark.parametrize(
    "reply",
    [
        Reply(200, raw=b'{"data": [{"b64_json": '),
        Reply(200, images_answer(None, b64_json="not base64!!")),
        Reply(200, images_answer(b"GIF? no, just text, not an image")),
        Reply(200, ["not", "an", "object"]),
    ],
    ids=["malformed-json", "invalid-base64", "not-an-image", "not-an-object"],
)
async def test_broken_answers_are_invalid_responses(
    server: FakeNexconn, provider: NexconnProvider, reply: Reply
) -> None:
    server.script(reply)
    with pytest.raises(InvalidProviderResponse) as caught:
        await within(provider.generate(ImageRequest("x", "1:1", MODEL)))
    assert caught.value.user_message == InvalidProviderResponse().user_message == UNREADABLE


async def test_a_chat_image_that_is_not_base64_is_an_invalid_response(
    server: FakeNexconn, provider: NexconnProvider
) -> None:
    server.script(Reply(200, chat_answer(None, url="data:image/png;base64,@@@@")))
    with pytest.raises(InvalidProviderResponse):
        await within(provider.generate(ImageRequest("x", "1:1", MODEL, references=(image(png()),))))


async def test_an_oversized_answer_is_refused(server: FakeNexconn) -> None:
    p = NexconnProvider(KEY, server.base_url, policy=FAST, max_response_bytes=4096)
    server.script(Reply(200, images_answer(None, b64_json="A" * 8192)))
    try:
        with pytest.raises(InvalidProviderResponse) as caught:
            await within(p.generate(ImageRequest("x", "1:1", MODEL)))
    finally:
        await p.aclose()
    assert caught.value.user_message == UNREADABLE
    assert "4096" in caught.value.detail


# --- edits that stay small as threads grow (issue 12) --------------------------------------


def detailed_png(seed: int, size: tuple[int, int] = (700, 500)) -> bytes:
    """A PNG full of fine detail (noise), wider than 512 px: what a shrink must work on."""
    import io
    import random

    from PIL import Image as PILImage

    pixels = random.Random(seed).randbytes(size[0] * size[1] * 3)
    buffer = io.BytesIO()
    PILImage.frombytes("RGB", size, pixels).save(buffer, format="PNG", compress_level=1)
    return buffer.getvalue()


def url_bytes(url: str) -> tuple[str, bytes]:
    head, _, payload = url.partition(",")
    return head, base64.b64decode(payload)


def pixels_of(data: bytes) -> tuple[int, int]:
    import io

    from PIL import Image as PILImage

    with PILImage.open(io.BytesIO(data)) as opened:
        return opened.size


def image_urls(content: list[dict[str, Any]]) -> list[str]:
    return [p["image_url"]["url"] for p in content if p["type"] == "image_url"]


async def test_chat_sends_older_images_reduced_and_the_edited_one_as_it_is(
    server: FakeNexconn, provider: NexconnProvider
) -> None:
    r0, r1, r2 = detailed_png(0), detailed_png(1), detailed_png(2)
    old_ref, new_ref = detailed_png(3, (600, 900)), detailed_png(4, (640, 640))
    t0 = turn("a harbour", ImageResult(images=(image(r0),)))
    t1 = turn("in this style", ImageResult(images=(image(r1),), text="Styled."), (image(old_ref),))
    t2 = turn("at dusk", ImageResult(images=(image(r2),)))

    await within(
        provider.generate(
            ImageRequest(
                "add boats", "1:1", MODEL, references=(image(new_ref),), history=(t0, t1, t2)
            )
        )
    )

    [sent] = server.requests
    messages = sent.json["messages"]
    assert [m["role"] for m in messages] == ["user", "assistant"] * 3 + ["user"]
    older = [
        image_urls(messages[1]["content"])[0],  # turn 0's result
        image_urls(messages[2]["content"])[0],  # turn 1's reference
        image_urls(messages[3]["content"])[0],  # turn 1's result
    ]
    for url, original in zip(older, (r0, old_ref, r1), strict=True):
        head, data = url_bytes(url)
        assert head == "data:image/jpeg;base64"
        assert max(pixels_of(data)) <= 512
        assert len(data) <= BUDGET < len(original)
    assert pixels_of(url_bytes(older[1])[1]) == (341, 512)  # the ratio is kept
    [edited] = image_urls(messages[5]["content"])
    assert edited == f"data:image/png;base64,{b64(r2)}"  # byte for byte
    assert {"type": "text", "text": "Styled."} in messages[3]["content"]
    assert image_urls(messages[6]["content"]) == [f"data:image/png;base64,{b64(new_ref)}"]


async def test_the_reduced_copies_are_the_same_on_every_edit(
    server: FakeNexconn, provider: NexconnProvider
) -> None:
    t0 = turn("a", ImageResult(images=(image(detailed_png(5)),)))
    t1 = turn("b", ImageResult(images=(image(detailed_png(6)),)))
    for prompt in ("c", "d"):
        await within(provider.generate(ImageRequest(prompt, "1:1", MODEL, history=(t0, t1))))
    first, second = (r.json["messages"][1]["content"] for r in server.requests)
    assert first == second


async def test_edits_mode_still_sends_images_as_they_are(server: FakeNexconn) -> None:
    p = NexconnProvider(KEY, server.base_url, mode="edits", policy=FAST)
    old, parent_png = detailed_png(7), detailed_png(8)
    t1 = turn("a", ImageResult(images=(image(old),)))
    t2 = turn("b", ImageResult(images=(image(parent_png),)))
    try:
        await within(p.generate(ImageRequest("c", "1:1", MODEL, history=(t1, t2))))
    finally:
        await p.aclose()
    assert server.requests[0].json["image"] == [data_url_of(parent_png)]


# --- models and sizes ----------------------------------------------------------------------

PRO = "gemini-3-pro-image-preview"


@pytest.mark.parametrize("mode", ["chat", "edits"])
@pytest.mark.parametrize(
    ("model", "size", "sent_model", "config"),
    [
        (MODEL, None, MODEL, {"aspect_ratio": "3:4"}),
        (PRO, "2K", "gemini-3.0-pro-image-preview", {"aspect_ratio": "3:4", "image_size": "2K"}),
        (
            "gemini-3.1-flash-image-preview",
            "4K",
            "gemini-3.1-flash-image-preview",
            {"aspect_ratio": "3:4", "image_size": "4K"},
        ),
    ],
)
async def test_each_endpoint_carries_nexconns_model_id_and_the_size(
    server: FakeNexconn,
    mode: str,
    model: str,
    size: str | None,
    sent_model: str,
    config: dict[str, str],
) -> None:
    p = NexconnProvider(KEY, server.base_url, mode=mode, policy=FAST)
    parent = turn("a", ImageResult(images=(image(png((1, 2, 3))),)))
    try:
        await within(p.generate(ImageRequest("a kite", "3:4", model, size=size)))
        await within(p.generate(ImageRequest("red", "3:4", model, size=size, history=(parent,))))
    finally:
        await p.aclose()
    generation, edit = server.requests
    assert generation.path == GENERATIONS
    assert edit.path == (CHAT if mode == "chat" else EDITS)
    for sent in (generation, edit):
        assert sent.json["model"] == sent_model
        assert sent.json["image_config"] == config
