"""GmiProvider against the loopback fake: the model's words are shown, and reference images
that do not fit GMI's three inputs are refused before anything is sent (issue 9)."""

from __future__ import annotations

import random
from collections.abc import AsyncIterator
from typing import Any

import pytest

from bot.errors import TooManyImages, TooManyImagesForEdit
from bot.models import HistoryTurn, Image, ImageRequest
from bot.providers.gmi import GmiProvider, _model_text
from bot.providers.http import RetryPolicy
from tests.fakes.gmi_server import API_KEY, PREFIX, FakeGmi, make_png
from tests.providers.support import VirtualTime, history_turn, within

MODEL = "gemini-2.5-flash-image"


@pytest.fixture
async def fake() -> AsyncIterator[FakeGmi]:
    server = await FakeGmi().start()
    yield server
    await server.close()


@pytest.fixture
async def provider(fake: FakeGmi) -> AsyncIterator[GmiProvider]:
    vt = VirtualTime()
    instance = GmiProvider(
        API_KEY,
        fake.base_url,
        sleep=vt.sleep,
        clock=vt.clock,
        rng=random.Random(7),
        policy=RetryPolicy(attempts=3),
    )
    yield instance
    await instance.aclose()


def request(prompt: str, **fields: Any) -> ImageRequest:
    return ImageRequest(prompt=prompt, aspect_ratio="1:1", model=MODEL, **fields)


def refs(*seeds: int) -> tuple[Image, ...]:
    return tuple(Image.of(make_png(seed), "image/png") for seed in seeds)


def foreign_parent() -> HistoryTurn:
    return HistoryTurn(
        prompt="A red fox",
        references=(),
        result=Image.of(make_png(99), "image/png"),
        text="",
        provider="nexconn",
        provider_state=None,
    )


EDIT_TOO_MANY = (
    "This edit sends the previous image along with yours, so at most 2 new images fit "
    "(you attached 3). Attach fewer images."
)


# --- the model's words ------------------------------------------------------------------------


async def test_the_models_words_of_each_turn_are_shown(
    fake: FakeGmi, provider: GmiProvider
) -> None:
    fake.script("success", model_text="A panda pouring a rosetta.")
    one = await within(provider.generate(request("A panda making latte art")))
    assert one.text == "A panda pouring a rosetta."

    fake.script("success", model_text="  Now a brown bear.  ")
    two = await within(
        provider.generate(request("Make it a bear", history=(history_turn("gmi", "A panda", one),)))
    )
    assert two.text == "Now a brown bear."  # this turn's words, not the first turn's


def test_thoughts_are_not_shown() -> None:
    contents = [
        {"role": "user", "parts": [{"text": "a fox"}]},
        {
            "role": "model",
            "parts": [
                {"text": "Planning the composition.", "thought": True},
                {"text": "A fox in the snow."},
                {"fileData": {"mimeType": "image/png", "fileUri": "gs://b/x.png"}},
            ],
        },
        {"role": "user", "parts": [{"text": ""}]},
    ]
    assert _model_text(contents) == "A fox in the snow."


# --- reference images and GMI's three inputs --------------------------------------------------


async def test_another_providers_image_plus_three_references_is_refused_before_sending(
    fake: FakeGmi, provider: GmiProvider
) -> None:
    with pytest.raises(TooManyImagesForEdit) as caught:
        await within(
            provider.generate(
                request("Put them all in", references=refs(1, 2, 3), history=(foreign_parent(),))
            )
        )
    assert caught.value.user_message == EDIT_TOO_MANY
    assert caught.value.retryable is False
    assert fake.requests == []  # nothing uploaded, nothing submitted, nothing dropped


async def test_another_providers_image_plus_two_references_sends_all_three(
    fake: FakeGmi, provider: GmiProvider
) -> None:
    parent = foreign_parent()
    new = refs(1, 2)
    await within(provider.generate(request("Put both in", references=new, history=(parent,))))
    payload = fake.submits[0].json["payload"]
    assert len(payload["image"]) == 3
    uploaded = [fake.uploads[url.rsplit("/", 1)[1]] for url in payload["image"]]
    assert uploaded == [parent.result.data, *(image.data for image in new)]


async def test_a_gmi_continuation_sends_three_new_references_besides_the_previous_image(
    fake: FakeGmi, provider: GmiProvider
) -> None:
    one = await within(provider.generate(request("A cat on a sofa")))
    new = refs(1, 2, 3)
    await within(
        provider.generate(
            request("Add these three", references=new, history=(history_turn("gmi", "x", one),))
        )
    )
    contents = fake.submits[1].json["payload"]["contents"]
    last = contents[-1]["parts"]
    uris = [p["fileData"]["fileUri"] for p in last if "fileData" in p]
    assert len(uris) == 3
    assert [fake.uploads[u.rsplit("/", 1)[1]] for u in uris] == [i.data for i in new]
    # the previous image is in the conversation, not one of the inputs
    model_turn = contents[-2]
    assert model_turn["role"] == "model"
    assert any("fileData" in p for p in model_turn["parts"])


async def test_more_than_three_references_are_refused_not_cut(
    fake: FakeGmi, provider: GmiProvider
) -> None:
    with pytest.raises(TooManyImages) as caught:
        await within(provider.generate(request("Four", references=refs(1, 2, 3, 4))))
    assert caught.value.user_message == "You attached 4 images; at most 3 can be used at once."
    assert not fake.calls("POST", f"{PREFIX}/requests")
    assert fake.requests == []
