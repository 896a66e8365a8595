"""GeminiProvider against a fake generateContent API on loopback: wire shape, answers, failures."""

from __future__ import annotations

import base64
import json
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
from bot.providers.gemini import GeminiProvider
from bot.providers.http import RetryPolicy
from tests.fakes.gemini_server import (
    GENERATE,
    MODEL,
    FakeGemini,
    answer,
    error_body,
    image_part,
    text_part,
)
from tests.fakes.scripted_json_server import Reply, b64, png
from tests.providers.support import FAST, Sleeps, history_turn, image, within

KEY = "AIza-test-key"


@pytest.fixture
async def server() -> AsyncIterator[FakeGemini]:
    fake = FakeGemini(KEY)
    await fake.start()
    yield fake
    await fake.close()


@pytest.fixture
async def sleeps() -> Sleeps:
    return Sleeps()


@pytest.fixture
async def provider(server: FakeGemini, sleeps: Sleeps) -> AsyncIterator[GeminiProvider]:
    p = GeminiProvider(KEY, server.base_url, policy=FAST, timeout=5.0, sleep=sleeps)
    yield p
    await p.aclose()


def turn(prompt: str, result: ImageResult, refs: tuple[Image, ...] = ()) -> HistoryTurn:
    return history_turn("gemini", prompt, result, refs)


def request(prompt: str = "a fox", **kwargs: Any) -> ImageRequest:
    return ImageRequest(prompt, kwargs.pop("aspect_ratio", "1:1"), MODEL, **kwargs)


def inline(data: bytes) -> dict[str, Any]:
    return {"inline_data": {"mime_type": "image/png", "data": b64(data)}}


# --- success -------------------------------------------------------------------------------


async def test_is_a_provider(provider: GeminiProvider) -> None:
    assert isinstance(provider, Provider)
    assert provider.name == "gemini"
    assert provider.capabilities.max_reference_images == 3


async def test_text_to_image_returns_the_served_bytes_and_sends_the_aspect_ratio(
    server: FakeGemini, provider: GeminiProvider
) -> None:
    served = png((10, 200, 10), (16, 9))
    server.script(Reply(200, answer([text_part("A fox in the snow."), image_part(served)])))

    result = await within(provider.generate(request("a red fox", aspect_ratio="16:9")))

    assert result.image.data == served
    assert result.image.mime == "image/png"
    assert result.text == "A fox in the snow."
    assert (result.usage.input_tokens, result.usage.output_tokens, result.usage.total_tokens) == (
        12,
        1290,
        1302,
    )
    [sent] = server.requests
    assert sent.method == "POST" and sent.path == GENERATE
    assert sent.headers["x-goog-api-key"] == KEY
    assert "authorization" not in sent.headers
    assert sent.json == {
        "contents": [{"role": "user", "parts": [{"text": "a red fox"}]}],
        "generationConfig": {
            "responseModalities": ["TEXT", "IMAGE"],
            "imageConfig": {"aspectRatio": "16:9"},
        },
    }


async def test_the_state_keeps_the_parts_but_not_a_second_copy_of_the_image(
    server: FakeGemini, provider: GeminiProvider
) -> None:
    served = png((40, 50, 60))
    server.script(Reply(200, answer([text_part("Done."), image_part(served, "sig-img")])))

    result = await within(provider.generate(request()))

    state = result.provider_state
    assert b64(served) not in json.dumps(state)
    assert state["parts"] == [
        {"text": "Done."},
        {
            "inlineData": {"mimeType": "image/png", "sha256": result.image.sha256},
            "thoughtSignature": "sig-img",
        },
    ]


async def test_snake_case_inline_data_is_accepted(
    server: FakeGemini, provider: GeminiProvider
) -> None:
    served = png((1, 100, 1))
    server.script(Reply(200, answer([inline(served)])))
    result = await within(provider.generate(request()))
    assert result.image.data == served


async def test_an_edit_carries_the_previous_image_and_the_instruction(
    server: FakeGemini, provider: GeminiProvider
) -> None:
    first, edited, ref = png((1, 2, 3)), png((4, 5, 6)), png((7, 8, 9))
    server.script(Reply(200, answer([text_part("A mug."), image_part(first)])))
    r1 = await within(provider.generate(request("a mug on a table")))
    server.script(Reply(200, answer([image_part(edited)])))

    r2 = await within(
        provider.generate(
            request(
                "make the mug blue",
                references=(image(ref),),
                history=(turn("a mug on a table", r1),),
            )
        )
    )

    assert r2.image.data == edited
    contents = server.requests[1].json["contents"]
    assert contents == [
        {"role": "user", "parts": [{"text": "a mug on a table"}]},
        {
            "role": "model",
            "parts": [
                {"text": "A mug."},
                {"inlineData": {"mimeType": "image/png", "data": b64(first)}},
            ],
        },
        {"role": "user", "parts": [{"text": "make the mug blue"}, inline(ref)]},
    ]
    assert base64.b64decode(contents[1]["parts"][1]["inlineData"]["data"]) == first


async def test_three_turns_echo_every_thought_signature_on_its_own_part(
    server: FakeGemini, provider: GeminiProvider
) -> None:
    png1, png2, png3 = png((10, 0, 0)), png((0, 10, 0)), png((0, 0, 10))
    ref = png((7, 7, 7), (4, 4))

    server.script(
        Reply(
            200,
            answer(
                [
                    text_part("Composing a cosy scene.", "sig-thought", thought=True),
                    text_part("Here is your coffee.", "sig-1-text"),
                    image_part(png1, "sig-1-image"),
                ]
            ),
        )
    )
    r1 = await within(provider.generate(request("a cup of coffee")))
    t1 = turn("a cup of coffee", r1)
    assert r1.text == "Here is your coffee."

    server.script(
        Reply(200, answer([image_part(png2, "sig-2-image"), text_part("Now watercolor.")]))
    )
    r2 = await within(
        provider.generate(request("now in watercolor", references=(image(ref),), history=(t1,)))
    )
    t2 = turn("now in watercolor", r2, (image(ref),))

    server.script(Reply(200, answer([image_part(png3)])))
    r3 = await within(provider.generate(request("make the cup blue", history=(t1, t2))))

    assert [r.image.data for r in (r1, r2, r3)] == [png1, png2, png3]
    contents = server.requests[2].json["contents"]
    assert [c["role"] for c in contents] == ["user", "model", "user", "model", "user"]
    assert contents[0]["parts"] == [{"text": "a cup of coffee"}]
    assert contents[1]["parts"] == [
        {"text": "Composing a cosy scene.", "thoughtSignature": "sig-thought", "thought": True},
        {"text": "Here is your coffee.", "thoughtSignature": "sig-1-text"},
        {
            "inlineData": {"mimeType": "image/png", "data": b64(png1)},
            "thoughtSignature": "sig-1-image",
        },
    ]
    assert contents[2]["parts"] == [{"text": "now in watercolor"}, inline(ref)]
    assert contents[3]["parts"] == [
        {
            "inlineData": {"mimeType": "image/png", "data": b64(png2)},
            "thoughtSignature": "sig-2-image",
        },
        {"text": "Now watercolor."},
    ]
    assert contents[4]["parts"] == [{"text": "make the cup blue"}]


async def test_a_turn_from_another_provider_is_sent_as_text_and_image(
    server: FakeGemini, provider: GeminiProvider
) -> None:
    theirs = png((90, 90, 90))
    foreign = HistoryTurn(
        prompt="a boat",
        references=(),
        result=image(theirs),
        text="A boat at sea.",
        provider="gmi",
        provider_state=[{"role": "model", "parts": []}],
    )
    await within(provider.generate(request("add a storm", history=(foreign,))))
    contents = server.requests[0].json["contents"]
    assert contents[1] == {"role": "model", "parts": [{"text": "A boat at sea."}, inline(theirs)]}


# --- refusals ------------------------------------------------------------------------------

SAFETY_SENTENCE = (
    "The image model's safety filter blocked this request. "
    "Try rewording the prompt or using a different image."
)


@pytest.mark.parametrize("reason", ["IMAGE_SAFETY", "SAFETY"])
async def test_a_safety_finish_reason_is_a_safety_block(
    server: FakeGemini, provider: GeminiProvider, reason: str
) -> None:
    server.script(Reply(200, answer(None, finish=reason)))
    with pytest.raises(SafetyBlocked) as caught:
        await within(provider.generate(request()))
    assert caught.value.user_message == SafetyBlocked().user_message == SAFETY_SENTENCE
    assert reason in caught.value.detail
    assert len(server.requests) == 1


async def test_a_blocked_prompt_is_a_safety_block(
    server: FakeGemini, provider: GeminiProvider
) -> None:
    server.script(
        Reply(
            200,
            {
                "promptFeedback": {"blockReason": "SAFETY"},
                "usageMetadata": {"promptTokenCount": 9, "totalTokenCount": 9},
            },
        )
    )
    with pytest.raises(SafetyBlocked) as caught:
        await within(provider.generate(request()))
    assert caught.value.user_message == SAFETY_SENTENCE
    assert len(server.requests) == 1


async def test_no_image_is_no_image_returned(server: FakeGemini, provider: GeminiProvider) -> None:
    server.script(Reply(200, answer(None, finish="NO_IMAGE")))
    with pytest.raises(NoImageReturned) as caught:
        await within(provider.generate(request()))
    assert caught.value.user_message == NoImageReturned().user_message
    assert caught.value.user_message == (
        "The model didn't return an image this time. Try rephrasing the prompt."
    )


async def test_a_text_only_answer_shows_the_models_words(
    server: FakeGemini, provider: GeminiProvider
) -> None:
    server.script(
        Reply(200, answer([text_part("I can describe a fox, but I won't draw one today.")]))
    )
    with pytest.raises(NoImageReturned) as caught:
        await within(provider.generate(request()))
    assert caught.value.model_text == "I can describe a fox, but I won't draw one today."
    assert caught.value.user_message == (
        'The model answered without an image: "I can describe a fox, but I won\'t draw one today."'
    )


BAD_KEY_SENTENCE = (
    "The bot isn't set up correctly for its image provider. "
    "An admin has been told to check the logs."
)


async def test_an_invalid_key_400_is_a_bad_api_key(server: FakeGemini) -> None:
    p = GeminiProvider("wrong", server.base_url, policy=FAST)
    try:
        with pytest.raises(BadApiKey) as caught:
            await within(p.generate(request()))
    finally:
        await p.aclose()
    assert caught.value.user_message == BadApiKey().user_message == BAD_KEY_SENTENCE
    assert "API key not valid" in caught.value.detail
    assert len(server.requests) == 1


async def test_permission_denied_is_a_bad_api_key(
    server: FakeGemini, provider: GeminiProvider
) -> None:
    server.script(
        Reply(403, error_body(403, "PERMISSION_DENIED", "The caller does not have permission"))
    )
    with pytest.raises(BadApiKey) as caught:
        await within(provider.generate(request()))
    assert caught.value.user_message == BAD_KEY_SENTENCE


async def test_invalid_argument_shows_googles_reason(
    server: FakeGemini, provider: GeminiProvider
) -> None:
    server.script(Reply(400, error_body(400, "INVALID_ARGUMENT", "Unsupported aspect ratio: 7:1")))
    with pytest.raises(ProviderRejected) as caught:
        await within(provider.generate(request()))
    assert (
        caught.value.user_message
        == "The image provider rejected this request: Unsupported aspect ratio: 7:1"
    )
    assert len(server.requests) == 1


# --- retries -------------------------------------------------------------------------------

EXHAUSTED = error_body(429, "RESOURCE_EXHAUSTED", "Resource has been exhausted (e.g. check quota).")


async def test_429_waits_retry_after_then_succeeds(
    server: FakeGemini, provider: GeminiProvider, sleeps: Sleeps
) -> None:
    server.script(Reply(429, EXHAUSTED, headers={"Retry-After": "2"}))
    result = await within(provider.generate(request()))
    assert result.image.data == server.image
    assert len(server.requests) == 2
    assert sleeps.waits == [2.0]


async def test_429_honours_googles_retry_info(
    server: FakeGemini, provider: GeminiProvider, sleeps: Sleeps
) -> None:
    body = error_body(
        429,
        "RESOURCE_EXHAUSTED",
        "You exceeded your current quota.",
        details=[{"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": "5s"}],
    )
    server.script(Reply(429, body))
    result = await within(provider.generate(request()))
    assert result.image.data == server.image
    assert len(server.requests) == 2
    assert sleeps.waits == [5.0]


async def test_a_long_retry_info_is_not_waited_out(
    server: FakeGemini, provider: GeminiProvider, sleeps: Sleeps
) -> None:
    body = error_body(
        429,
        "RESOURCE_EXHAUSTED",
        "Quota exceeded for the day.",
        details=[{"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": "3600s"}],
    )
    server.script(Reply(429, body))
    with pytest.raises(RateLimited) as caught:
        await within(provider.generate(request()))
    assert caught.value.user_message == RateLimited(3600).user_message
    assert caught.value.user_message == (
        "The image provider is rate limiting us. Please try again in 60 minutes."
    )
    assert len(server.requests) == 1
    assert sleeps.waits == []


@pytest.mark.parametrize(
    ("status", "google_status"),
    [(500, "INTERNAL"), (503, "UNAVAILABLE"), (504, "DEADLINE_EXCEEDED")],
)
async def test_5xx_every_time_is_unavailable_after_exactly_the_policys_attempts(
    server: FakeGemini, status: int, google_status: str
) -> None:
    policy = RetryPolicy(attempts=4, base_delay=0.01, max_delay=0.02)
    p = GeminiProvider(KEY, server.base_url, policy=policy)
    server.script(*[Reply(status, error_body(status, google_status, "The service is busy."))] * 10)
    try:
        with pytest.raises(ProviderUnavailable) as caught:
            await within(p.generate(request()))
    finally:
        await p.aclose()
    assert len(server.requests) == policy.attempts == 4
    assert caught.value.user_message == ProviderUnavailable().user_message
    assert caught.value.user_message == (
        "The image provider is unavailable right now. Please try again in a few minutes."
    )


async def test_500_then_success(server: FakeGemini, provider: GeminiProvider) -> None:
    server.script(Reply(500, error_body(500, "INTERNAL", "oops")))
    result = await within(provider.generate(request()))
    assert result.image.data == server.image
    assert len(server.requests) == 2


async def test_a_slow_generate_times_out_and_is_not_sent_again(server: FakeGemini) -> None:
    policy = RetryPolicy(attempts=2, base_delay=0.01, max_delay=0.02)
    p = GeminiProvider(KEY, server.base_url, policy=policy, timeout=0.2)
    server.script(*[Reply(200, answer([image_part(server.image)]), delay=3.0)] * 2)
    try:
        with pytest.raises(ProviderTimeout) as caught:
            await within(p.generate(request()))
    finally:
        await p.aclose()
    assert len(server.requests) == 1  # it may be generating (and billing) already
    assert caught.value.user_message == ProviderTimeout().user_message
    assert (
        caught.value.user_message == "The image provider took too long to answer. Please try again."
    )


# --- broken answers ------------------------------------------------------------------------

UNREADABLE = "The image provider sent an answer I couldn't read. Please try again."


def _bad_base64() -> dict[str, Any]:
    return answer([{"inlineData": {"mimeType": "image/png", "data": "%%% not base64 %%%"}}])


@pytest.mark.parametrize(
    "reply",
    [
        Reply(200, raw=b'{"candidates": [{"content": '),
        Reply(200, _bad_base64()),
        Reply(200, answer([image_part(b"plain text pretending to be a PNG")])),
        Reply(200, {"candidates": "nope"}),
    ],
    ids=["malformed-json", "invalid-base64", "not-an-image", "bad-candidates"],
)
async def test_broken_answers_are_invalid_responses(
    server: FakeGemini, provider: GeminiProvider, reply: Reply
) -> None:
    server.script(reply)
    with pytest.raises(InvalidProviderResponse) as caught:
        await within(provider.generate(request()))
    assert caught.value.user_message == InvalidProviderResponse().user_message == UNREADABLE


async def test_an_oversized_answer_is_refused(server: FakeGemini) -> None:
    p = GeminiProvider(KEY, server.base_url, policy=FAST, max_response_bytes=4096)
    server.script(
        Reply(200, answer([{"inlineData": {"mimeType": "image/png", "data": "A" * 8192}}]))
    )
    try:
        with pytest.raises(InvalidProviderResponse) as caught:
            await within(p.generate(request()))
    finally:
        await p.aclose()
    assert caught.value.user_message == UNREADABLE
    assert "4096" in caught.value.detail


async def test_a_retry_info_that_is_not_a_finite_number_is_ignored(
    server: FakeGemini, provider: GeminiProvider, sleeps: Sleeps
) -> None:
    body = error_body(
        429,
        "RESOURCE_EXHAUSTED",
        "You exceeded your current quota.",
        details=[{"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": "infs"}],
    )
    server.script(*[Reply(429, body)] * FAST.attempts)
    with pytest.raises(RateLimited) as caught:
        await within(provider.generate(request()))
    assert caught.value.user_message == (
        "The image provider is rate limiting us. Please try again in a minute."
    )
    assert len(server.requests) == FAST.attempts
    assert all(0 <= wait <= FAST.max_delay for wait in sleeps.waits)
