"""GeminiProvider against the loopback fake: every finish and block reason of the google-genai
SDK maps to its sentence, and answers with several images keep every signed part for the
next turn (issue 9)."""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator
from typing import Any

import pytest

from bot.errors import (
    ImagineError,
    InternalError,
    ModelRefused,
    NoImageReturned,
    ProviderAccountBlocked,
    SafetyBlocked,
)
from bot.models import HistoryTurn, ImageRequest, ImageResult
from bot.providers import gemini
from bot.providers.gemini import GeminiProvider
from tests.fakes.gemini_server import MODEL, FakeGemini, answer, error_body, image_part, text_part
from tests.fakes.scripted_json_server import Reply, b64, png
from tests.providers.support import FAST, Sleeps, history_turn, within

KEY = "AIza-test-key"

# google-genai 3.6.1, google/genai/types.py: class FinishReason and class BlockedReason.
SDK_FINISH_REASONS = frozenset(
    {
        "FINISH_REASON_UNSPECIFIED",
        "STOP",
        "MAX_TOKENS",
        "SAFETY",
        "RECITATION",
        "LANGUAGE",
        "OTHER",
        "BLOCKLIST",
        "PROHIBITED_CONTENT",
        "SPII",
        "MALFORMED_FUNCTION_CALL",
        "IMAGE_SAFETY",
        "IMAGE_PROHIBITED_CONTENT",
        "IMAGE_OTHER",
        "NO_IMAGE",
        "IMAGE_RECITATION",
        "UNEXPECTED_TOOL_CALL",
        "TOO_MANY_TOOL_CALLS",
        "MISSING_THOUGHT_SIGNATURE",
        "MALFORMED_RESPONSE",
        "ESCALATION",
        "PUP_LIMITED_DISABLED",
        "CONTINUATION",
        "MODEL_ARMOR",
    }
)
SDK_BLOCK_REASONS = frozenset(
    {
        "BLOCKED_REASON_UNSPECIFIED",
        "SAFETY",
        "OTHER",
        "BLOCKLIST",
        "PROHIBITED_CONTENT",
        "IMAGE_SAFETY",
        "MODEL_ARMOR",
        "JAILBREAK",
    }
)

SAFETY = (
    "The image model's safety filter blocked this request. "
    "Try rewording the prompt or using a different image."
)
REFUSED = "The image model refused this request. " + (
    "Asking again won't change that: try a different prompt or image."
)
ACCOUNT = (
    "The image provider has restricted the bot's account. "
    "An admin needs to check the provider account."
)
INTERNAL = "Something went wrong on my side. It has been logged; please try again."
NO_IMAGE = "The model didn't return an image this time. Try rephrasing the prompt."


def refused(why: str) -> str:
    return (
        f"The image model refused this request: {why}. "
        "Asking again won't change that: try a different prompt or image."
    )


RECITATION = refused("the result would copy existing work too closely")
PROHIBITED = refused("it may contain prohibited content")
BLOCKLIST = refused("it contains a term on a blocklist")
MODEL_ARMOR = refused("a content screening policy on the provider account blocked it")

FINISH_TABLE: list[tuple[str, type[ImagineError], str]] = [
    ("SAFETY", SafetyBlocked, SAFETY),
    ("IMAGE_SAFETY", SafetyBlocked, SAFETY),
    ("RECITATION", ModelRefused, RECITATION),
    ("IMAGE_RECITATION", ModelRefused, RECITATION),
    ("BLOCKLIST", ModelRefused, BLOCKLIST),
    ("PROHIBITED_CONTENT", ModelRefused, PROHIBITED),
    ("IMAGE_PROHIBITED_CONTENT", ModelRefused, PROHIBITED),
    ("SPII", ModelRefused, refused("it may contain sensitive personal information")),
    ("MODEL_ARMOR", ModelRefused, MODEL_ARMOR),
    ("ESCALATION", ModelRefused, refused("a content escalation rule blocked it")),
    ("LANGUAGE", ModelRefused, refused("the model doesn't support the language it is written in")),
    ("PUP_LIMITED_DISABLED", ProviderAccountBlocked, ACCOUNT),
    ("MISSING_THOUGHT_SIGNATURE", InternalError, INTERNAL),
    ("FINISH_REASON_UNSPECIFIED", NoImageReturned, NO_IMAGE),
    ("STOP", NoImageReturned, NO_IMAGE),
    ("MAX_TOKENS", NoImageReturned, NO_IMAGE),
    ("OTHER", NoImageReturned, NO_IMAGE),
    ("IMAGE_OTHER", NoImageReturned, NO_IMAGE),
    ("NO_IMAGE", NoImageReturned, NO_IMAGE),
    ("MALFORMED_FUNCTION_CALL", NoImageReturned, NO_IMAGE),
    ("UNEXPECTED_TOOL_CALL", NoImageReturned, NO_IMAGE),
    ("TOO_MANY_TOOL_CALLS", NoImageReturned, NO_IMAGE),
    ("MALFORMED_RESPONSE", NoImageReturned, NO_IMAGE),
    ("CONTINUATION", NoImageReturned, NO_IMAGE),
]

BLOCK_TABLE: list[tuple[str, type[ImagineError], str]] = [
    ("SAFETY", SafetyBlocked, SAFETY),
    ("IMAGE_SAFETY", SafetyBlocked, SAFETY),
    ("PROHIBITED_CONTENT", ModelRefused, PROHIBITED),
    ("BLOCKLIST", ModelRefused, BLOCKLIST),
    ("MODEL_ARMOR", ModelRefused, MODEL_ARMOR),
    (
        "JAILBREAK",
        ModelRefused,
        refused("it looks like an attempt to get around the model's rules"),
    ),
    ("OTHER", ModelRefused, REFUSED),
    ("BLOCKED_REASON_UNSPECIFIED", ModelRefused, REFUSED),
]


@pytest.fixture
async def server() -> AsyncIterator[FakeGemini]:
    fake = FakeGemini(KEY)
    await fake.start()
    yield fake
    await fake.close()


@pytest.fixture
async def provider(server: FakeGemini) -> AsyncIterator[GeminiProvider]:
    p = GeminiProvider(KEY, server.base_url, policy=FAST, timeout=5.0, sleep=Sleeps())
    yield p
    await p.aclose()


def request(prompt: str = "a fox", **kwargs: Any) -> ImageRequest:
    return ImageRequest(prompt, "1:1", MODEL, **kwargs)


def turn(prompt: str, result: ImageResult) -> HistoryTurn:
    return history_turn("gemini", prompt, result)


def test_the_tables_cover_every_reason_the_sdk_knows() -> None:
    assert {reason for reason, _, _ in FINISH_TABLE} == SDK_FINISH_REASONS
    assert gemini.FINISH_REASONS == SDK_FINISH_REASONS
    assert {reason for reason, _, _ in BLOCK_TABLE} == SDK_BLOCK_REASONS
    assert gemini.BLOCK_REASONS == SDK_BLOCK_REASONS


# google-genai 2.19.0, google/genai/types.py: the fields of ImageConfig and FileData
# (snake case; the SDK's models alias them to camel case, `alias_generator=to_camel`).
SDK_IMAGE_CONFIG = frozenset(
    {
        "aspect_ratio",
        "image_size",
        "person_generation",
        "prominent_people",
        "output_mime_type",
        "output_compression_quality",
        "image_output_options",
    }
)
SDK_FILE_DATA = frozenset({"display_name", "file_uri", "mime_type"})


def _snake(name: str) -> str:
    return "".join(f"_{c.lower()}" if c.isupper() else c for c in name)


def test_the_fields_we_send_are_the_sdks() -> None:
    from bot.providers.files import Uploaded

    config = gemini.generation_config(ImageRequest("p", "1:1", MODEL, size="2K"))
    assert {_snake(k) for k in config["imageConfig"]} <= SDK_IMAGE_CONFIG
    assert config["imageConfig"] == {"aspectRatio": "1:1", "imageSize": "2K"}
    part = Uploaded(name="files/a", uri="u", mime="image/png", expires_at=0).part()
    assert {_snake(k) for k in part["fileData"]} <= SDK_FILE_DATA


@pytest.mark.parametrize(("reason", "kind", "sentence"), FINISH_TABLE, ids=lambda v: str(v))
async def test_each_finish_reason_maps_to_its_sentence(
    server: FakeGemini,
    provider: GeminiProvider,
    reason: str,
    kind: type[ImagineError],
    sentence: str,
) -> None:
    server.script(Reply(200, answer(None, finish=reason)))
    with pytest.raises(ImagineError) as caught:
        await within(provider.generate(request()))
    assert type(caught.value) is kind
    assert caught.value.user_message == sentence
    assert reason in caught.value.detail
    assert len(server.requests) == 1  # no retry inside the provider
    if kind is not SafetyBlocked:
        assert "safety" not in caught.value.user_message


@pytest.mark.parametrize(("reason", "kind", "sentence"), BLOCK_TABLE, ids=lambda v: str(v))
async def test_each_block_reason_maps_to_its_sentence(
    server: FakeGemini,
    provider: GeminiProvider,
    reason: str,
    kind: type[ImagineError],
    sentence: str,
) -> None:
    server.script(
        Reply(200, {"promptFeedback": {"blockReason": reason}, "usageMetadata": {}}),
    )
    with pytest.raises(ImagineError) as caught:
        await within(provider.generate(request()))
    assert type(caught.value) is kind
    assert caught.value.user_message == sentence
    assert reason in caught.value.detail


async def test_refusals_that_will_repeat_are_not_retryable(
    server: FakeGemini, provider: GeminiProvider
) -> None:
    for reason in ("RECITATION", "IMAGE_PROHIBITED_CONTENT", "SPII", "PUP_LIMITED_DISABLED"):
        server.script(Reply(200, answer(None, finish=reason)))
        with pytest.raises(ImagineError) as caught:
            await within(provider.generate(request()))
        assert caught.value.retryable is False, reason
    server.script(Reply(200, answer(None, finish="IMAGE_OTHER")))
    with pytest.raises(NoImageReturned) as other:
        await within(provider.generate(request()))
    assert other.value.retryable is True


async def test_a_refusal_with_an_image_still_refuses(
    server: FakeGemini, provider: GeminiProvider
) -> None:
    server.script(Reply(200, answer([image_part(png((1, 2, 3)))], finish="IMAGE_RECITATION")))
    with pytest.raises(ModelRefused) as caught:
        await within(provider.generate(request()))
    assert caught.value.user_message == RECITATION


@pytest.mark.parametrize("reason", ["MAX_TOKENS", "OTHER", "CONTINUATION", "SOMETHING_NEW"])
async def test_an_image_is_used_whatever_a_benign_reason_says(
    server: FakeGemini, provider: GeminiProvider, reason: str
) -> None:
    served = png((4, 5, 6))
    server.script(Reply(200, answer([image_part(served)], finish=reason)))
    result = await within(provider.generate(request()))
    assert result.image.data == served


async def test_a_refusal_without_an_image_keeps_the_models_words_out_of_the_sentence_but_in_the_log(
    server: FakeGemini, provider: GeminiProvider
) -> None:
    server.script(Reply(200, answer([text_part("That is a famous painting.")], "RECITATION")))
    with pytest.raises(ModelRefused) as caught:
        await within(provider.generate(request()))
    assert caught.value.user_message == RECITATION
    assert "That is a famous painting." in caught.value.detail


async def test_an_account_problem_tells_the_admin_what_to_check(
    server: FakeGemini, provider: GeminiProvider, caplog: pytest.LogCaptureFixture
) -> None:
    server.script(Reply(200, answer(None, finish="PUP_LIMITED_DISABLED")))
    with (
        caplog.at_level(logging.WARNING, logger="bot.providers.gemini"),
        pytest.raises(ProviderAccountBlocked) as caught,
    ):
        await within(provider.generate(request()))
    assert caught.value.user_message == ACCOUNT
    [record] = [r for r in caplog.records if r.name == "bot.providers.gemini"]
    assert record.levelno == logging.ERROR
    message = record.getMessage()
    assert "GEMINI_API_KEY" in message and "Prohibited Use Policy" in message
    assert "PUP_LIMITED_DISABLED" in message


async def test_a_missing_thought_signature_is_logged_as_our_bug(
    server: FakeGemini, provider: GeminiProvider, caplog: pytest.LogCaptureFixture
) -> None:
    server.script(Reply(200, answer(None, finish="MISSING_THOUGHT_SIGNATURE")))
    with (
        caplog.at_level(logging.WARNING, logger="bot.providers.gemini"),
        pytest.raises(InternalError) as caught,
    ):
        await within(provider.generate(request()))
    assert caught.value.user_message == INTERNAL
    assert "bug" in caught.value.detail
    [record] = [r for r in caplog.records if r.name == "bot.providers.gemini"]
    assert record.levelno == logging.ERROR
    assert record.getMessage().startswith("bug: ")
    assert "MISSING_THOUGHT_SIGNATURE" in record.getMessage()


async def test_a_400_about_a_thought_signature_is_our_bug_not_the_users(
    server: FakeGemini, provider: GeminiProvider, caplog: pytest.LogCaptureFixture
) -> None:
    message = "Image part is missing a thought_signature in content position 2, part position 1."
    server.script(Reply(400, error_body(400, "INVALID_ARGUMENT", message)))
    with (
        caplog.at_level(logging.WARNING, logger="bot.providers.gemini"),
        pytest.raises(InternalError) as caught,
    ):
        await within(provider.generate(request()))
    assert caught.value.user_message == INTERNAL
    assert "thought_signature" not in caught.value.user_message
    assert [r.levelno for r in caplog.records if r.name == "bot.providers.gemini"] == [
        logging.ERROR
    ]
    assert len(server.requests) == 1


# --- several images per answer ------------------------------------------------------------


async def test_three_turns_with_two_images_each_echo_every_image_and_signature(
    server: FakeGemini, provider: GeminiProvider
) -> None:
    a1, b1, a2, b2 = png((10, 0, 0)), png((0, 10, 0)), png((0, 0, 10)), png((10, 10, 0))
    sketch = png((99, 99, 99), (4, 4))
    server.script(
        Reply(
            200,
            answer(
                [
                    text_part("Planning two takes.", "sig-thought", thought=True),
                    image_part(sketch, thought=True),  # an unsigned thought image
                    text_part("Two takes on a lighthouse.", "sig-1-text"),
                    image_part(a1, "sig-1-a"),
                    image_part(b1, "sig-1-b"),
                ]
            ),
        )
    )
    r1 = await within(provider.generate(request("a lighthouse, two ways")))
    assert [i.data for i in r1.images] == [a1, b1]
    stored = json.dumps(r1.provider_state)
    assert b64(a1) not in stored  # the result image: the store keeps it
    assert b64(b1) in stored  # the second image: only the state can give it back
    assert b64(sketch) not in stored
    t1 = turn("a lighthouse, two ways", r1)

    server.script(
        Reply(200, answer([image_part(a2, "sig-2-a"), image_part(b2, "sig-2-b")])),
    )
    r2 = await within(provider.generate(request("at night", history=(t1,))))
    assert [i.data for i in r2.images] == [a2, b2]
    t2 = turn("at night", r2)

    r3 = await within(provider.generate(request("with a storm", history=(t1, t2))))
    assert r3.image.data == server.image

    first_answer = [
        {"text": "Planning two takes.", "thoughtSignature": "sig-thought", "thought": True},
        {"text": "Two takes on a lighthouse.", "thoughtSignature": "sig-1-text"},
        {"inlineData": {"mimeType": "image/png", "data": b64(a1)}, "thoughtSignature": "sig-1-a"},
        {"inlineData": {"mimeType": "image/png", "data": b64(b1)}, "thoughtSignature": "sig-1-b"},
    ]
    second_answer = [
        {"inlineData": {"mimeType": "image/png", "data": b64(a2)}, "thoughtSignature": "sig-2-a"},
        {"inlineData": {"mimeType": "image/png", "data": b64(b2)}, "thoughtSignature": "sig-2-b"},
    ]
    assert server.requests[1].json["contents"] == [
        {"role": "user", "parts": [{"text": "a lighthouse, two ways"}]},
        {"role": "model", "parts": first_answer},
        {"role": "user", "parts": [{"text": "at night"}]},
    ]
    assert server.requests[2].json["contents"] == [
        {"role": "user", "parts": [{"text": "a lighthouse, two ways"}]},
        {"role": "model", "parts": first_answer},
        {"role": "user", "parts": [{"text": "at night"}]},
        {"role": "model", "parts": second_answer},
        {"role": "user", "parts": [{"text": "with a storm"}]},
    ]


async def test_a_signed_thought_image_is_kept_and_echoed(
    server: FakeGemini, provider: GeminiProvider
) -> None:
    draft, final = png((5, 5, 5)), png((6, 6, 6))
    parts = [image_part(draft, "sig-draft", thought=True), image_part(final, "sig-final")]
    server.script(Reply(200, answer(parts)))
    r1 = await within(provider.generate(request("a vase")))
    assert [i.data for i in r1.images] == [final]
    await within(provider.generate(request("in blue", history=(turn("a vase", r1),))))
    assert server.requests[1].json["contents"][1]["parts"] == [
        {
            "inlineData": {"mimeType": "image/png", "data": b64(draft)},
            "thoughtSignature": "sig-draft",
            "thought": True,
        },
        {
            "inlineData": {"mimeType": "image/png", "data": b64(final)},
            "thoughtSignature": "sig-final",
        },
    ]
