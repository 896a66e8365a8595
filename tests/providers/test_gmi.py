"""GmiProvider against a fake GMI request queue on loopback (tests/fakes/gmi_server.py)."""

from __future__ import annotations

import asyncio
import copy
import io
import random
from collections.abc import AsyncIterator, Awaitable
from typing import Any, TypeVar

import pytest
from PIL import Image as PILImage

from bot.errors import (
    BadApiKey,
    Cancelled,
    ImagineError,
    InvalidProviderResponse,
    NoImageReturned,
    ProviderRejected,
    ProviderTimeout,
    ProviderUnavailable,
    RateLimited,
    SafetyBlocked,
)
from bot.models import HistoryTurn, Image, ImageRequest, ImageResult
from bot.providers.base import Provider, ProviderCall
from bot.providers.gmi import GmiProvider, PollPolicy, poll_schedule
from bot.providers.http import RetryPolicy
from tests.fakes.gmi_server import API_KEY, PREFIX, FakeGmi, make_png
from tests.providers.support import VirtualTime, history_turn, within

T = TypeVar("T")
MODEL = "gemini-2.5-flash-image"
ATTEMPTS = 3

SAFETY = (
    "The image model's safety filter blocked this request. "
    "Try rewording the prompt or using a different image."
)
UNAVAILABLE = "The image provider is unavailable right now. Please try again in a few minutes."
TIMEOUT = "The image provider took too long to answer. Please try again."
INVALID = "The image provider sent an answer I couldn't read. Please try again."
BAD_KEY = (
    "The bot isn't set up correctly for its image provider. "
    "An admin has been told to check the logs."
)


@pytest.fixture
def vt() -> VirtualTime:
    return VirtualTime()


@pytest.fixture
async def fake(vt: VirtualTime) -> AsyncIterator[FakeGmi]:
    server = await FakeGmi(clock=vt.clock).start()
    yield server
    await server.close()


def make_provider(fake: FakeGmi, vt: VirtualTime, **options: Any) -> GmiProvider:
    defaults: dict[str, Any] = {
        "sleep": vt.sleep,
        "clock": vt.clock,
        "rng": random.Random(7),
        "policy": RetryPolicy(attempts=ATTEMPTS),
    }
    return GmiProvider(options.pop("api_key", API_KEY), fake.base_url, **{**defaults, **options})


@pytest.fixture
async def provider(fake: FakeGmi, vt: VirtualTime) -> AsyncIterator[GmiProvider]:
    instance = make_provider(fake, vt)
    yield instance
    await instance.aclose()


def request(prompt: str = "A panda making latte art", **fields: Any) -> ImageRequest:
    return ImageRequest(
        prompt=prompt,
        aspect_ratio=fields.pop("aspect_ratio", "1:1"),
        model=MODEL,
        **fields,
    )


def jpeg(seed: int = 3) -> Image:
    buffer = io.BytesIO()
    PILImage.new("RGB", (40, 30), (seed * 40 % 256, 90, 200)).save(buffer, format="JPEG")
    return Image.of(buffer.getvalue(), "image/jpeg")


def turn(prompt: str, result: ImageResult, provider: str = "gmi") -> HistoryTurn:
    return history_turn(provider, prompt, result)


async def expect(error: type[ImagineError], awaitable: Awaitable[Any]) -> ImagineError:
    with pytest.raises(error) as caught:
        await within(awaitable)
    return caught.value


# --- the happy path ---------------------------------------------------------------------


async def test_text_to_image_polls_until_success(
    fake: FakeGmi, provider: GmiProvider, vt: VirtualTime
) -> None:
    fake.script("queued", "processing", "processing", "success")
    events: list[tuple[str, int]] = []

    async def on_submitted(request_id: str) -> None:
        events.append((request_id, len(fake.polls)))

    result = await within(
        provider.generate(
            request("A hyperrealistic cyberpunk portrait", aspect_ratio="4:5"),
            ProviderCall(on_submitted=on_submitted),
        )
    )

    assert isinstance(provider, Provider)
    [submit] = fake.submits
    assert submit.json == {
        "model": MODEL,
        "payload": {"prompt": "A hyperrealistic cyberpunk portrait", "aspect_ratio": "4:5"},
    }
    request_id = next(iter(fake.jobs))
    # the id was stored before the first poll
    assert events == [(request_id, 0)]
    assert [r.path for r in fake.polls] == [f"{PREFIX}/requests/{request_id}"] * 4
    for call in [submit, *fake.polls]:
        assert call.headers["Authorization"] == f"Bearer {API_KEY}"
    # the media came from "cloud storage", which never sees the key
    [download] = fake.calls("GET", "/media/")
    assert download.port == fake.storage_port
    assert "Authorization" not in download.headers

    assert len(result.images) == 1
    assert result.image.data == fake.media[f"{request_id}-0.png"]
    assert result.image.mime == "image/png"
    assert result.text == "Here is the generated image."  # the model's words are shown
    assert result.usage.output_tokens == 1290
    assert result.usage.total_tokens == 1290
    assert result.provider_request_id == request_id
    assert result.provider_state == fake.jobs[request_id].outcome["next_turn_contents"]  # type: ignore[index]
    # polls followed the schedule in virtual time
    assert vt.now == pytest.approx(poll_schedule(PollPolicy(), random.Random(7))[3])


async def test_several_images_are_all_downloaded(fake: FakeGmi, provider: GmiProvider) -> None:
    fake.script("success", images=2)
    result = await within(provider.generate(request()))
    request_id = next(iter(fake.jobs))
    assert [i.data for i in result.images] == [
        fake.media[f"{request_id}-0.png"],
        fake.media[f"{request_id}-1.png"],
    ]
    assert result.images[0].data != result.images[1].data
    assert result.usage.output_tokens == 2 * 1290


async def test_submit_answer_already_success_needs_no_poll(
    fake: FakeGmi, provider: GmiProvider
) -> None:
    fake.script(submit_status="success")
    stored: list[str] = []

    async def on_submitted(request_id: str) -> None:
        stored.append(request_id)

    result = await within(provider.generate(request(), ProviderCall(on_submitted=on_submitted)))
    assert stored == [result.provider_request_id]
    assert fake.polls == []
    assert result.image.mime == "image/png"


# --- failures of the request ------------------------------------------------------------


@pytest.mark.parametrize(
    ("failure", "error", "sentence"),
    [
        ({"outcome": {"error": "Request blocked by safety filters"}}, SafetyBlocked, SAFETY),
        (
            {"outcome": {"message": "The prompt violates the usage policy"}},
            SafetyBlocked,
            SAFETY,
        ),
        (
            {"error": "Invalid aspect ratio: 7:3"},
            ProviderRejected,
            "The image provider rejected this request: Invalid aspect ratio: 7:3",
        ),
        (
            {"outcome": {"error": {"message": "Image could not be decoded"}}},
            ProviderRejected,
            "The image provider rejected this request: Image could not be decoded",
        ),
        (
            {"outcome": {"error": "NO_IMAGE"}},
            NoImageReturned,
            "The model didn't return an image this time. Try rephrasing the prompt.",
        ),
        ({}, ProviderUnavailable, UNAVAILABLE),
    ],
)
async def test_failed_request_maps_to_its_error(
    fake: FakeGmi,
    provider: GmiProvider,
    failure: dict[str, Any],
    error: type[ImagineError],
    sentence: str,
) -> None:
    fake.script("queued", "failed", failure=failure)
    caught = await expect(error, provider.generate(request()))
    assert caught.user_message == sentence
    assert len(fake.submits) == 1
    assert len(fake.polls) == 2


async def test_cancelled_request(fake: FakeGmi, provider: GmiProvider) -> None:
    fake.script("processing", "cancelled")
    caught = await expect(Cancelled, provider.generate(request()))
    assert caught.user_message == "Cancelled."
    assert len(fake.polls) == 2


async def test_deadline_gives_timeout(fake: FakeGmi, vt: VirtualTime) -> None:
    policy = PollPolicy(deadline=120.0)
    provider = make_provider(fake, vt, poll=policy)
    fake.script("queued", "processing")
    try:
        caught = await expect(ProviderTimeout, provider.generate(request()))
    finally:
        await provider.aclose()
    assert caught.user_message == TIMEOUT
    assert vt.now == 120.0
    assert len(fake.polls) == len(poll_schedule(policy))
    assert len(fake.submits) == 1


async def test_unknown_error_is_resubmitted_once(fake: FakeGmi, provider: GmiProvider) -> None:
    fake.script("processing", "failed", failure={"outcome": {"error": "Unknown error, try again"}})
    fake.script("queued", "success")
    stored: list[str] = []

    async def on_submitted(request_id: str) -> None:
        stored.append(request_id)

    result = await within(
        provider.generate(request(aspect_ratio="16:9"), ProviderCall(on_submitted=on_submitted))
    )
    first, second = fake.jobs
    assert stored == [first, second]
    assert result.provider_request_id == second
    assert len(fake.submits) == 2
    assert fake.submits[0].json == fake.submits[1].json
    assert result.image.data == fake.media[f"{second}-0.png"]


async def test_resubmits_are_bounded(fake: FakeGmi, provider: GmiProvider) -> None:
    for _ in range(4):
        fake.script("failed", failure={"error": "unknown error, please try again later"})
    caught = await expect(ProviderUnavailable, provider.generate(request()))
    assert caught.user_message == UNAVAILABLE
    assert len(fake.submits) == 3  # the first submission and 2 resubmissions


# --- resume after a restart, cancellation ---------------------------------------------------


async def test_resume_after_restart_polls_the_stored_id(fake: FakeGmi, vt: VirtualTime) -> None:
    fake.script("queued", "processing", "success")
    stored: list[str] = []
    submitted = asyncio.Event()

    async def on_submitted(request_id: str) -> None:
        stored.append(request_id)  # the caller's durable record
        submitted.set()

    async def stalled(_: float) -> None:  # the process "dies" while waiting to poll
        await asyncio.Event().wait()

    first = make_provider(fake, vt, sleep=stalled)
    task = asyncio.create_task(first.generate(request(), ProviderCall(on_submitted=on_submitted)))
    await within(submitted.wait())
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await within(task)
    await first.aclose()
    assert fake.polls == []

    second = make_provider(fake, vt)
    try:
        result = await within(second.generate(request(), ProviderCall(resume_id=stored[0])))
    finally:
        await second.aclose()

    assert len(fake.submits) == 1
    assert [r.path for r in fake.polls] == [f"{PREFIX}/requests/{stored[0]}"] * 3
    assert result.provider_request_id == stored[0]
    assert result.image.data == fake.media[f"{stored[0]}-0.png"]


async def test_cancelling_the_task_stops_polling_at_once(fake: FakeGmi) -> None:
    fake.script("processing")
    provider = GmiProvider(API_KEY, fake.base_url, poll=PollPolicy(first_interval=0.01))
    try:
        task = asyncio.create_task(provider.generate(request()))
        for _ in range(500):
            if len(fake.polls) >= 2:
                break
            await asyncio.sleep(0.01)
        assert len(fake.polls) >= 2
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await within(task, 2.0)
        polls = len(fake.polls)
        await asyncio.sleep(0.1)
        assert len(fake.polls) == polls
    finally:
        await provider.aclose()


# --- multi-turn and reference images --------------------------------------------------------


async def test_three_turns_carry_next_turn_contents(fake: FakeGmi, provider: GmiProvider) -> None:
    one = await within(provider.generate(request("A panda making latte art", aspect_ratio="3:2")))
    state_one = copy.deepcopy(one.provider_state)
    h1 = turn("A panda making latte art", one)

    two = await within(
        provider.generate(
            request("Change the panda to a brown bear", aspect_ratio="3:2", history=(h1,))
        )
    )
    expected = copy.deepcopy(state_one)
    expected[-1]["parts"][0]["text"] = "Change the panda to a brown bear"
    assert fake.submits[1].json == {
        "model": MODEL,
        "payload": {"contents": expected, "aspect_ratio": "3:2"},
    }
    assert one.provider_state == state_one  # stored state is never changed
    h2 = turn("Change the panda to a brown bear", two)

    await within(
        provider.generate(request("Make the cup blue", aspect_ratio="3:2", history=(h1, h2)))
    )
    third = fake.submits[2].json["payload"]
    assert third["aspect_ratio"] == "3:2"
    assert third["contents"][:-1] == two.provider_state[:-1]
    assert third["contents"][-1]["parts"][0] == {"text": "Make the cup blue"}
    texts = [p["text"] for t in third["contents"] for p in t["parts"] if "text" in p]
    assert texts[:3] == [
        "A panda making latte art",
        "Here is the generated image.",
        "Change the panda to a brown bear",
    ]
    assert [t["role"] for t in third["contents"]] == ["user", "model", "user", "model", "user"]


async def test_reference_images_go_through_upload_url(fake: FakeGmi, provider: GmiProvider) -> None:
    photo = jpeg()
    await within(provider.generate(request("Make it a watercolour", references=(photo,))))

    [ask] = fake.calls("POST", f"{PREFIX}/upload-url")
    assert ask.json == {"file_type": "jpeg"}
    assert ask.headers["Authorization"] == f"Bearer {API_KEY}"
    [put] = fake.calls("PUT", "/upload/")
    assert put.body == photo.data
    assert put.headers["Content-Type"] == "image/jpeg"
    assert put.port == fake.storage_port
    assert "Authorization" not in put.headers

    payload = fake.submits[0].json["payload"]
    [public_url] = payload["image"]
    assert public_url.startswith(f"{fake.storage_url}/public/")
    assert payload["prompt"] == "Make it a watercolour"
    assert fake.uploads[public_url.rsplit("/", 1)[1]] == photo.data


async def test_new_reference_in_a_later_turn_fills_the_file_part(
    fake: FakeGmi, provider: GmiProvider
) -> None:
    one = await within(provider.generate(request("A cat on a sofa")))
    photo = jpeg(5)
    await within(
        provider.generate(
            request("Put this hat on the cat", references=(photo,), history=(turn("x", one),))
        )
    )
    last = fake.submits[1].json["payload"]["contents"][-1]
    [put] = fake.calls("PUT", "/upload/")
    assert put.body == photo.data
    public_url = f"{fake.storage_url}/public/{put.path.rsplit('/', 1)[1]}"
    assert last["role"] == "user"
    assert last["parts"] == [
        {"text": "Put this hat on the cat"},
        {"fileData": {"mimeType": "image/jpeg", "fileUri": public_url}},
    ]


async def test_thread_from_another_provider_uploads_the_parent_image(
    fake: FakeGmi, provider: GmiProvider
) -> None:
    parent = Image.of(make_png(99), "image/png")
    history = (
        HistoryTurn(
            prompt="A red fox",
            references=(),
            result=parent,
            text="",
            provider="nexconn",
            provider_state=None,
        ),
    )
    await within(provider.generate(request("Now in the snow", history=history)))
    payload = fake.submits[0].json["payload"]
    assert "contents" not in payload
    assert payload["prompt"] == "Now in the snow"
    assert len(payload["image"]) == 1
    [ask] = fake.calls("POST", f"{PREFIX}/upload-url")
    assert ask.json == {"file_type": "png"}
    [put] = fake.calls("PUT", "/upload/")
    assert put.body == parent.data


# --- HTTP errors ----------------------------------------------------------------------------


async def test_429_with_retry_after_then_success(
    fake: FakeGmi, provider: GmiProvider, vt: VirtualTime
) -> None:
    fake.fail("submit", 429, {"error": "rate limit exceeded"}, headers={"Retry-After": "2"})
    result = await within(provider.generate(request()))
    assert len(fake.submits) == 2
    assert vt.sleeps[0] == 2.0
    assert result.image.mime == "image/png"


async def test_429_that_persists_is_rate_limited(fake: FakeGmi, provider: GmiProvider) -> None:
    fake.fail("submit", 429, {"error": "org limit"}, headers={"Retry-After": "30"}, times=9)
    caught = await expect(RateLimited, provider.generate(request()))
    assert caught.user_message == (
        "The image provider is rate limiting us. Please try again in 30 seconds."
    )
    assert len(fake.submits) == ATTEMPTS


async def test_500_every_time_is_unavailable_after_exactly_n_calls(
    fake: FakeGmi, provider: GmiProvider
) -> None:
    fake.fail("submit", 500, {"error": "internal server error"}, times=ATTEMPTS + 5)
    caught = await expect(ProviderUnavailable, provider.generate(request()))
    assert caught.user_message == UNAVAILABLE
    assert len(fake.submits) == ATTEMPTS
    assert fake.polls == []


async def test_transient_poll_errors_are_retried(fake: FakeGmi, provider: GmiProvider) -> None:
    fake.script("processing", "success")
    fake.fail("status", 503, {"error": "upstream unavailable"}, times=2)
    result = await within(provider.generate(request()))
    assert len(fake.polls) == 4
    assert result.image.mime == "image/png"


async def test_bad_key(fake: FakeGmi, vt: VirtualTime) -> None:
    provider = make_provider(fake, vt, api_key="wrong")
    try:
        caught = await expect(BadApiKey, provider.generate(request()))
    finally:
        await provider.aclose()
    assert caught.user_message == BAD_KEY
    assert "invalid api key" in caught.detail
    assert len(fake.submits) == 1


async def test_safety_refusal_at_submit(fake: FakeGmi, provider: GmiProvider) -> None:
    fake.fail("submit", 400, {"error": "Prompt blocked: content policy violation"})
    caught = await expect(SafetyBlocked, provider.generate(request()))
    assert caught.user_message == SAFETY
    assert len(fake.submits) == 1


async def test_malformed_json_is_invalid(fake: FakeGmi, provider: GmiProvider) -> None:
    fake.fail("status", 200, '{"request_id": "x", "status": ')
    caught = await expect(InvalidProviderResponse, provider.generate(request()))
    assert caught.user_message == INVALID


async def test_html_instead_of_image_is_invalid(fake: FakeGmi, provider: GmiProvider) -> None:
    fake.script("success", media_body=b"<html><body>Sign in</body></html>")
    caught = await expect(InvalidProviderResponse, provider.generate(request()))
    assert caught.user_message == INVALID
    assert len(fake.calls("GET", "/media/")) == 1


async def test_a_trickling_media_download_times_out(fake: FakeGmi, vt: VirtualTime) -> None:
    """Storage that sends a byte every 50 ms never trips a read timeout; the whole download
    is bounded all the same."""
    fake.media_drip = 0.05
    fake.script("success")
    provider = make_provider(fake, vt, timeout=0.5)
    try:
        caught = await expect(ProviderTimeout, provider.generate(request()))
    finally:
        await provider.aclose()
    assert caught.user_message == TIMEOUT
    assert len(fake.calls("GET", "/media/")) == 1


async def test_success_without_media_is_no_image(fake: FakeGmi, provider: GmiProvider) -> None:
    fake.script("success", with_media=False, model_text="I can't draw that.")
    caught = await expect(NoImageReturned, provider.generate(request()))
    assert caught.user_message == 'The model answered without an image: "I can\'t draw that."'


# --- the poll schedule ----------------------------------------------------------------------


def first_poll_at_or_after(schedule: list[float], finish: float) -> tuple[int, float]:
    """(number of polls, detection time) for a job that finishes at `finish`."""
    index = next(i for i, t in enumerate(schedule) if t >= finish)
    return index + 1, schedule[index]


def test_twenty_second_job_is_seen_within_eight_polls_and_two_seconds() -> None:
    for schedule in (poll_schedule(PollPolicy()), poll_schedule(PollPolicy(jitter=0.0))):
        polls, seen = first_poll_at_or_after(schedule, 20.0)
        assert polls <= 8
        assert 0 <= seen - 20.0 <= 2.0


def test_jobs_of_5_to_30_seconds_need_at_most_eight_polls_with_jitter() -> None:
    for seed in range(200):
        schedule = poll_schedule(PollPolicy(), random.Random(seed))
        assert schedule == sorted(schedule)
        for tenth in range(50, 301):
            polls, seen = first_poll_at_or_after(schedule, tenth / 10)
            assert polls <= 8
            # one interval at most, stretched by jitter on both of its ends
            assert seen - tenth / 10 <= PollPolicy().max_interval * 1.2 + 1e-9


def test_schedule_shape() -> None:
    policy = PollPolicy(first_interval=1.0, factor=2.0, max_interval=5.0, jitter=0.0, deadline=30)
    assert poll_schedule(policy) == [1.0, 3.0, 7.0, 12.0, 17.0, 22.0, 27.0, 30.0]
    default = poll_schedule(PollPolicy())
    assert default[0] == 1.5  # a short first interval
    assert default[-1] == PollPolicy().deadline


async def test_twenty_second_job_end_to_end(fake: FakeGmi, vt: VirtualTime) -> None:
    provider = make_provider(fake, vt, poll=PollPolicy(jitter=0.0))
    fake.script(ready_at=20.0)
    try:
        await within(provider.generate(request()))
    finally:
        await provider.aclose()
    assert len(fake.polls) <= 8
    assert 20.0 <= vt.now <= 22.0
