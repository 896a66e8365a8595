"""GeminiProvider and Google's Files API, against a loopback fake that keeps real files:
each history image goes up once and is named by `fileData`; the image being edited and new
references stay inline; a file Google dropped or expired is uploaded again; sizes and model
ids reach the wire."""

from __future__ import annotations

import asyncio
import base64
from collections.abc import AsyncIterator
from typing import Any

import pytest

from bot.errors import BadApiKey, ImagineError, ProviderRejected
from bot.models import HistoryTurn, ImageRequest, ImageResult
from bot.providers.files import REFUSAL_MEMORY, FileCache, parse_expiry
from bot.providers.gemini import GeminiProvider
from tests.fakes.gemini_files_server import UPLOAD, FakeGeminiFiles
from tests.fakes.gemini_server import (
    GENERATE,
    MODEL,
    FakeGemini,
    answer,
    error_body,
    image_part,
    text_part,
)
from tests.fakes.scripted_json_server import Recorded, Reply, b64, png
from tests.providers.support import FAST, Sleeps, history_turn, image, within

KEY = "AIza-files-key"


class Clock:
    def __init__(self) -> None:
        import time

        self.now = time.time()

    def __call__(self) -> float:
        return self.now


@pytest.fixture
async def server() -> AsyncIterator[FakeGeminiFiles]:
    fake = FakeGeminiFiles(KEY)
    await fake.start()
    yield fake
    await fake.close()


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
async def provider(server: FakeGeminiFiles, clock: Clock) -> AsyncIterator[GeminiProvider]:
    p = GeminiProvider(
        KEY,
        server.base_url,
        policy=FAST,
        timeout=5.0,
        sleep=Sleeps(),
        files=FileCache(clock=clock),
        upload_min_bytes=0,  # the test images are small; production keeps tiny ones inline
        clock=clock,
    )
    yield p
    await p.aclose()


def request(prompt: str, **kwargs: Any) -> ImageRequest:
    return ImageRequest(
        prompt, kwargs.pop("aspect_ratio", "1:1"), kwargs.pop("model", MODEL), **kwargs
    )


def colour(n: int) -> bytes:
    return png((n * 20 % 256, 40, 200 - n * 10 % 200), (8 + n, 8))


async def build_thread(
    server: FakeGeminiFiles, provider: GeminiProvider, depth: int, signed: bool = False
) -> list[HistoryTurn]:
    """A thread made turn by turn, as the core makes it: each turn edits the last."""
    turns: list[HistoryTurn] = []
    for n in range(depth):
        served = colour(n)
        signature = f"sig-{n}" if signed else None
        server.script(Reply(200, answer([text_part(f"Turn {n}."), image_part(served, signature)])))
        result = await within(provider.generate(request(f"step {n}", history=tuple(turns))))
        await within(provider.idle())  # the user looks at the image before the next edit
        assert result.image.data == served
        turns.append(history_turn("gemini", f"step {n}", result))
    return turns


async def warm(provider: GeminiProvider, turns: list[HistoryTurn]) -> None:
    """One edit of the whole thread: every image of it is on file after it."""
    await within(provider.generate(request("warm up", history=tuple(turns))))
    await within(provider.idle())


def model_images(body: dict[str, Any]) -> list[dict[str, Any]]:
    """The image part of each `model` turn of a generateContent body, oldest first."""
    found = []
    for content in body["contents"]:
        if content["role"] == "model":
            [part] = [p for p in content["parts"] if "text" not in p]
            found.append(part)
    return found


# --- upload once, reuse ----------------------------------------------------------------------


async def test_each_history_image_is_uploaded_once_and_named_by_file_data(
    server: FakeGeminiFiles, provider: GeminiProvider
) -> None:
    turns = await build_thread(server, provider, 4)

    # turns 1–3 were edits: each sent the image it edited inline, then uploaded it ahead
    # of the next edit, which named it by file.
    assert [f.data for f in server.uploads] == [colour(0), colour(1), colour(2)]

    await within(provider.generate(request("one more", history=tuple(turns))))
    await within(provider.idle())

    assert [f.data for f in server.uploads] == [colour(0), colour(1), colour(2), colour(3)]
    body = server.generations[-1].json
    parts = model_images(body)
    assert parts[:3] == [
        {"fileData": {"mimeType": "image/png", "fileUri": server.uri_of(colour(n))}}
        for n in range(3)
    ]
    assert parts[3] == {"inlineData": {"mimeType": "image/png", "data": b64(colour(3))}}
    assert body["contents"][-1] == {"role": "user", "parts": [{"text": "one more"}]}


async def test_the_upload_speaks_the_sdks_resumable_protocol(
    server: FakeGeminiFiles, provider: GeminiProvider
) -> None:
    await build_thread(server, provider, 3)

    start, *_ = server.starts
    assert start.method == "POST" and start.path == UPLOAD
    assert start.headers["x-goog-api-key"] == KEY
    assert start.headers["x-goog-upload-protocol"] == "resumable"
    assert start.headers["x-goog-upload-command"] == "start"
    assert start.headers["x-goog-upload-header-content-length"] == str(len(colour(0)))
    assert start.headers["x-goog-upload-header-content-type"] == "image/png"
    assert start.headers["content-type"] == "application/json"
    # the fields google-genai's files.upload declares (types.File: display_name, mime_type,
    # size_bytes), snake case as the SDK sends them
    assert set(start.json["file"]) == {"display_name", "mime_type", "size_bytes"}
    assert start.json["file"]["mime_type"] == "image/png"
    assert start.json["file"]["size_bytes"] == len(colour(0))
    assert start.json["file"]["display_name"].startswith("imagine-")
    finish, *_ = server.finishes
    assert finish.headers["x-goog-upload-command"] == "upload, finalize"
    assert finish.headers["x-goog-upload-offset"] == "0"
    assert finish.headers["x-goog-api-key"] == KEY  # the upload URL is on the base origin
    assert finish.raw == colour(0)


async def test_signatures_stay_on_their_parts_when_the_image_goes_by_file(
    server: FakeGeminiFiles, provider: GeminiProvider
) -> None:
    turns = await build_thread(server, provider, 3, signed=True)
    await within(provider.generate(request("again", history=tuple(turns))))

    parts = model_images(server.generations[-1].json)
    assert parts[0] == {
        "fileData": {"mimeType": "image/png", "fileUri": server.uri_of(colour(0))},
        "thoughtSignature": "sig-0",
    }
    assert parts[2] == {
        "inlineData": {"mimeType": "image/png", "data": b64(colour(2))},
        "thoughtSignature": "sig-2",
    }


async def test_earlier_references_go_by_file_and_new_ones_inline(
    server: FakeGeminiFiles, provider: GeminiProvider
) -> None:
    old_ref, new_ref, first = png((1, 1, 1), (5, 5)), png((2, 2, 2), (6, 6)), colour(1)
    server.script(Reply(200, answer([image_part(first)])))
    r1 = await within(provider.generate(request("in this style", references=(image(old_ref),))))
    t1 = history_turn("gemini", "in this style", r1, (image(old_ref),))

    await within(
        provider.generate(request("add this", references=(image(new_ref),), history=(t1,)))
    )

    assert [f.data for f in server.uploads] == [old_ref]
    user, model, ask = server.generations[-1].json["contents"]
    assert user["parts"] == [
        {"text": "in this style"},
        {"fileData": {"mimeType": "image/png", "fileUri": server.uri_of(old_ref)}},
    ]
    assert model["parts"] == [{"inlineData": {"mimeType": "image/png", "data": b64(first)}}]
    assert ask["parts"] == [
        {"text": "add this"},
        {"inline_data": {"mime_type": "image/png", "data": b64(new_ref)}},
    ]


async def test_concurrent_edits_of_one_thread_upload_each_image_once(
    server: FakeGeminiFiles, provider: GeminiProvider
) -> None:
    turns = tuple(
        history_turn("gemini", f"step {n}", ImageResult(images=(image(colour(n)),)))
        for n in range(2)
    )
    await within(
        asyncio.gather(
            *(provider.generate(request(f"variant {n}", history=turns)) for n in range(5))
        )
    )
    await within(provider.idle())

    assert sorted(f.data for f in server.uploads) == sorted([colour(0), colour(1)])
    assert len(server.starts) == 2


async def test_an_image_already_on_file_is_not_uploaded_by_a_second_provider(
    server: FakeGeminiFiles, clock: Clock
) -> None:
    cache = FileCache(clock=clock)
    providers = [
        GeminiProvider(KEY, server.base_url, policy=FAST, files=cache, upload_min_bytes=0)
        for _ in range(2)
    ]
    try:
        turns = await build_thread(server, providers[0], 3)
        await warm(providers[0], turns)
        count = len(server.uploads)
        await within(providers[1].generate(request("same project", history=tuple(turns))))
        await within(providers[1].idle())
        assert len(server.uploads) == count == 3
    finally:
        for p in providers:
            await p.aclose()


# --- files Google no longer has ------------------------------------------------------------


async def test_a_file_google_dropped_is_uploaded_again_and_the_edit_sent_once_more(
    server: FakeGeminiFiles, provider: GeminiProvider
) -> None:
    turns = await build_thread(server, provider, 3)
    await warm(provider, turns)
    server.drop_all()
    uploads, generations = len(server.uploads), len(server.generations)

    result = await within(provider.generate(request("after two days", history=tuple(turns))))

    assert result.image.data == server.image
    assert len(server.generations) == generations + 2  # refused once (403), then answered
    assert sorted(f.data for f in server.uploads[uploads:]) == sorted([colour(0), colour(1)])
    parts = model_images(server.generations[-1].json)
    assert parts[0]["fileData"]["fileUri"] == server.uri_of(colour(0))


@pytest.mark.parametrize(
    ("status", "google_status", "message"),
    [
        (404, "NOT_FOUND", "File files/abc is not found."),
        (400, "INVALID_ARGUMENT", "The File abc has expired."),
        (403, "PERMISSION_DENIED", "You do not have permission to access the File abc."),
    ],
)
async def test_not_found_or_expired_answers_upload_again(
    server: FakeGeminiFiles,
    provider: GeminiProvider,
    status: int,
    google_status: str,
    message: str,
) -> None:
    turns = await build_thread(server, provider, 3)
    await warm(provider, turns)
    uploads = len(server.uploads)
    server.script(Reply(status, error_body(status, google_status, message)))

    result = await within(provider.generate(request("again", history=tuple(turns))))

    assert result.image.data == server.image
    assert len(server.uploads) == uploads + 2


async def test_a_second_refusal_is_the_users_error_not_a_loop(
    server: FakeGeminiFiles, provider: GeminiProvider
) -> None:
    turns = await build_thread(server, provider, 3)
    generations = len(server.generations)
    message = "You do not have permission to access the File abc or it may not exist."
    denied = error_body(403, "PERMISSION_DENIED", message)
    server.script(Reply(403, denied), Reply(403, denied))

    with pytest.raises(BadApiKey):
        await within(provider.generate(request("again", history=tuple(turns))))
    assert len(server.generations) == generations + 2


@pytest.mark.parametrize(
    ("status", "google_status", "message", "error"),
    [
        (
            404,
            "NOT_FOUND",
            "models/gemini-x is not found for API version v1beta, or is not supported for "
            "generateContent. Call ListModels to see the list of available models and their "
            "supported methods.",
            ProviderRejected,
        ),
        (
            403,
            "PERMISSION_DENIED",
            "Generative Language API has not been used in project 123 before or it is "
            "disabled. Enable it by visiting https://console.developers.google.com/apis/api/"
            "generativelanguage.googleapis.com/overview?project=123 then retry.",
            BadApiKey,
        ),
        (403, "PERMISSION_DENIED", "The caller does not have permission", BadApiKey),
    ],
)
async def test_a_403_or_404_about_no_file_is_the_users_error_without_uploading_again(
    server: FakeGeminiFiles,
    provider: GeminiProvider,
    status: int,
    google_status: str,
    message: str,
    error: type[ImagineError],
) -> None:
    turns = await build_thread(server, provider, 3)
    await warm(provider, turns)
    uploads, starts, generations = len(server.uploads), len(server.starts), len(server.generations)
    server.script(Reply(status, error_body(status, google_status, message)))

    with pytest.raises(error) as caught:
        await within(provider.generate(request("again", history=tuple(turns))))
    await within(provider.idle())

    assert len(server.generations) == generations + 1  # not sent again
    assert (len(server.uploads), len(server.starts)) == (uploads, starts)  # nothing re-uploaded
    assert message[:40] in caught.value.detail
    # the files are still remembered: the next edit names them, uploading nothing
    await within(provider.generate(request("once more", history=tuple(turns))))
    assert len(server.starts) == starts
    assert model_images(server.generations[-1].json)[0]["fileData"]["fileUri"] == (
        server.uri_of(colour(0))
    )


async def test_a_file_near_its_expiry_is_uploaded_again_before_use(
    server: FakeGeminiFiles, provider: GeminiProvider, clock: Clock
) -> None:
    turns = await build_thread(server, provider, 3)
    await warm(provider, turns)
    uploads, generations = len(server.uploads), len(server.generations)
    clock.now += 47.5 * 3600  # Google keeps files 48 h; within the hour is too close

    await within(provider.generate(request("later", history=tuple(turns))))
    await within(provider.idle())

    assert len(server.uploads) == uploads + 3  # the edited image's file was stale too
    assert len(server.generations) == generations + 1  # no refused request first


async def test_without_a_files_api_the_history_goes_inline() -> None:
    plain = FakeGemini(KEY)  # a gateway that only serves generateContent
    await plain.start()
    p = GeminiProvider(KEY, plain.base_url, policy=FAST, upload_min_bytes=0)
    try:
        first = colour(1)
        t1 = history_turn("gemini", "a", ImageResult(images=(image(first),)))
        t2 = history_turn("gemini", "b", ImageResult(images=(image(colour(2)),)))
        await within(p.generate(request("c", history=(t1, t2))))
    finally:
        await p.aclose()
        await plain.close()
    generate = [r for r in plain.requests if r.path == GENERATE]
    [sent] = generate
    parts = model_images(sent.json)
    assert base64.b64decode(parts[0]["inline_data"]["data"]) == first


class NoUploads(FakeGemini):
    """A gateway whose upload path answers 200 with no upload in it."""

    paths = frozenset({GENERATE, UPLOAD})

    def default_reply(self, request: Recorded) -> Reply:
        if request.path == UPLOAD:
            return Reply(200, {"ok": True})
        return super().default_reply(request)


@pytest.mark.parametrize("gateway", [FakeGemini, NoUploads], ids=["404", "no-upload-answer"])
async def test_a_refused_upload_is_not_tried_again_for_ten_minutes(
    gateway: type[FakeGemini], clock: Clock
) -> None:
    plain = gateway(KEY)
    await plain.start()
    p = GeminiProvider(
        KEY,
        plain.base_url,
        policy=FAST,
        files=FileCache(clock=clock),
        upload_min_bytes=0,
        clock=clock,
    )
    turns = tuple(
        history_turn("gemini", f"step {n}", ImageResult(images=(image(colour(n)),)))
        for n in range(3)
    )

    def attempts() -> int:
        return len([r for r in plain.requests if r.path == UPLOAD])

    async def edit(prompt: str) -> dict[str, Any]:
        await within(p.generate(request(prompt, history=turns)))
        await within(p.idle())  # and the upload ahead of the next edit, if any is tried
        [*_, sent] = [r for r in plain.requests if r.path == GENERATE]
        body: dict[str, Any] = sent.json
        return body

    try:
        first = await edit("a")
        # the two older images were tried at once, both refused; the upload of the edited
        # image ahead of the next edit came after the refusal: not tried
        assert attempts() == 2
        clock.now += REFUSAL_MEMORY - 1
        second = await edit("b")
        assert attempts() == 2  # still remembered: no upload attempt at all
        clock.now += 2
        await edit("c")
        assert attempts() == 4  # the memory has run out: tried again (and refused again)
    finally:
        await p.aclose()
        await plain.close()
    for body in (first, second):
        parts = model_images(body)
        assert [base64.b64decode(part["inline_data"]["data"]) for part in parts] == [
            colour(n) for n in range(3)
        ]


@pytest.mark.parametrize(
    "upload_origin",
    [None, "https://generativelanguage.googleapis.com"],
    ids=["gateway-names-itself", "gateway-passes-googles-url"],
)
async def test_a_gateway_under_a_path_gets_the_whole_upload_under_it(
    upload_origin: str | None,
) -> None:
    gateway = FakeGeminiFiles(KEY, prefix="/gemini", upload_origin=upload_origin)
    await gateway.start()
    p = GeminiProvider(KEY, f"{gateway.base_url}/gemini/", policy=FAST, upload_min_bytes=0)
    try:
        turns = await build_thread(gateway, p, 3)
        await within(p.generate(request("on file", history=tuple(turns))))
        await within(p.idle())
    finally:
        await p.aclose()
        await gateway.close()

    assert gateway.strays == []
    assert [f.data for f in gateway.uploads] == [colour(0), colour(1), colour(2)]
    assert {r.path for r in (*gateway.starts, *gateway.finishes)} == {f"/gemini{UPLOAD}"}
    finish, *_ = gateway.finishes
    assert finish.headers["x-goog-api-key"] == KEY
    parts = model_images(gateway.generations[-1].json)
    assert parts[0] == {"fileData": {"mimeType": "image/png", "fileUri": gateway.uri_of(colour(0))}}


async def test_small_images_stay_inline_by_default(server: FakeGeminiFiles) -> None:
    p = GeminiProvider(KEY, server.base_url, policy=FAST)
    try:
        turns = await build_thread(server, p, 3)
        await within(p.generate(request("small", history=tuple(turns))))
    finally:
        await p.aclose()
    assert server.uploads == []


# --- models and sizes ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("model", "size", "path_model", "image_config"),
    [
        (MODEL, None, MODEL, {"aspectRatio": "1:1"}),
        (
            "gemini-3-pro-image-preview",
            "4K",
            "gemini-3-pro-image-preview",
            {"aspectRatio": "1:1", "imageSize": "4K"},
        ),
        (
            "gemini-3.1-flash-image-preview",
            "2K",
            "gemini-3.1-flash-image-preview",
            {"aspectRatio": "1:1", "imageSize": "2K"},
        ),
    ],
)
async def test_the_model_id_and_size_reach_the_wire(
    server: FakeGeminiFiles,
    provider: GeminiProvider,
    model: str,
    size: str | None,
    path_model: str,
    image_config: dict[str, str],
) -> None:
    await within(provider.generate(request("a fox", model=model, size=size)))
    [sent] = server.generations
    assert sent.path == f"/v1beta/models/{path_model}:generateContent"
    assert sent.json["generationConfig"]["imageConfig"] == image_config


def test_expiry_times_with_nanoseconds_are_read() -> None:
    assert parse_expiry("2026-01-03T12:00:00.123456789Z", 0) == pytest.approx(1767441600.123456)
    assert parse_expiry("2026-01-03T12:00:00Z", 0) == 1767441600.0
    assert parse_expiry("soon", 100.0) == 100.0 + 48 * 3600
