"""Every sentence a user can read, and the input checks that produce them."""

from __future__ import annotations

import io
import logging
from collections.abc import AsyncIterator

import pytest
from PIL import Image as PILImage

from bot import errors
from bot.config import SettingsError, load_settings
from bot.inputs import (
    check_attachments,
    clean_prompt,
    image_from_upload,
    parse_aspect_ratio,
    read_capped,
    split_prompt_flags,
)
from bot.logs import SecretFilter

SENTENCES: list[tuple[errors.ImagineError, str]] = [
    (
        errors.SafetyBlocked(),
        "The image model's safety filter blocked this request. "
        "Try rewording the prompt or using a different image.",
    ),
    (
        errors.NoImageReturned("I can't draw real people.\n\nSorry!"),
        'The model answered without an image: "I can\'t draw real people. Sorry!"',
    ),
    (
        errors.NoImageReturned(""),
        "The model didn't return an image this time. Try rephrasing the prompt.",
    ),
    (
        errors.RateLimited(12.2),
        "The image provider is rate limiting us. Please try again in 13 seconds.",
    ),
    (
        errors.RateLimited(600),
        "The image provider is rate limiting us. Please try again in 10 minutes.",
    ),
    (
        errors.RateLimited(None),
        "The image provider is rate limiting us. Please try again in a minute.",
    ),
    (
        errors.ProviderUnavailable(),
        "The image provider is unavailable right now. Please try again in a few minutes.",
    ),
    (errors.ProviderTimeout(), "The image provider took too long to answer. Please try again."),
    (
        errors.InvalidProviderResponse(),
        "The image provider sent an answer I couldn't read. Please try again.",
    ),
    (
        errors.BadApiKey(detail="401 from /v1/images: invalid key sk-secret"),
        "The bot isn't set up correctly for its image provider. "
        "An admin has been told to check the logs.",
    ),
    (
        errors.NotAnImage("notes.pdf"),
        "“notes.pdf” isn't an image. Attach a PNG, JPEG, WebP, HEIC or HEIF file.",
    ),
    (
        errors.UnsupportedImageType("image/gif"),
        "image/gif images aren't supported. Use PNG, JPEG, WebP, HEIC or HEIF.",
    ),
    (
        errors.ImageTooLarge(9 * 1024 * 1024),
        "That image is 9.0 MB; the limit is 7.0 MB per image.",
    ),
    (errors.TooManyImages(4), "You attached 4 images; at most 3 can be used at once."),
    (errors.EmptyPrompt(), "Tell me what to draw: the prompt is empty."),
    (
        errors.PromptTooLong(2500),
        "The prompt is 2500 characters; please keep it under 2000.",
    ),
    (
        errors.UnknownAspectRatio("7:5"),
        "“7:5” isn't a supported aspect ratio. "
        "Choose one of 1:1, 2:3, 3:2, 3:4, 4:3, 4:5, 5:4, 9:16, 16:9, 21:9.",
    ),
    (
        errors.UserQueueFull(12),
        "You already have 12 images in progress. Try again when one of them is finished.",
    ),
    (errors.ShuttingDown(), "The bot is restarting. Please send that again in a moment."),
    (
        errors.InternalError(detail="KeyError('x')"),
        "Something went wrong on my side. It has been logged; please try again.",
    ),
]


@pytest.mark.parametrize(("error", "sentence"), SENTENCES, ids=lambda v: type(v).__name__)
def test_every_error_has_its_sentence(error: errors.ImagineError, sentence: object) -> None:
    assert error.user_message == sentence
    assert len(error.user_message) < 2000


def test_details_stay_out_of_what_users_read() -> None:
    error = errors.BadApiKey(detail="401: key sk-secret rejected")
    assert "sk-secret" not in error.user_message
    assert "sk-secret" in str(error)  # the log line keeps the detail


def test_model_text_is_trimmed() -> None:
    error = errors.NoImageReturned("word " * 500)
    assert len(error.user_message) < 400 and error.user_message.endswith('…"')


def png(size: tuple[int, int] = (8, 8)) -> bytes:
    out = io.BytesIO()
    PILImage.new("RGB", size, (200, 10, 10)).save(out, format="PNG")
    return out.getvalue()


@pytest.mark.parametrize(
    ("metadata", "sentence"),
    [
        (
            [("report.pdf", "application/pdf", 1000)],
            "“report.pdf” isn't an image. Attach a PNG, JPEG, WebP, HEIC or HEIF file.",
        ),
        (
            [("cat.gif", "image/gif", 1000)],
            "image/gif images aren't supported. Use PNG, JPEG, WebP, HEIC or HEIF.",
        ),
        (
            [("big.png", "image/png", 9 * 1024 * 1024)],
            "That image is 9.0 MB; the limit is 7.0 MB per image.",
        ),
        (
            [("a.png", "image/png", 10)] * 4,
            "You attached 4 images; at most 3 can be used at once.",
        ),
    ],
)
def test_attachment_metadata_is_refused_before_download(
    metadata: list[tuple[str, str | None, int | None]], sentence: str
) -> None:
    with pytest.raises(errors.ImagineError) as refused:
        check_attachments(metadata)
    assert refused.value.user_message == sentence


def test_good_attachments_pass() -> None:
    check_attachments([("a.png", "image/png", 10), ("b.jpg", "image/jpeg; q=1", None)])


async def test_uploads_are_judged_by_their_bytes() -> None:
    image = await image_from_upload(png(), "x.txt")
    assert image.mime == "image/png" and len(image.sha256) == 64
    login_page = b"<!DOCTYPE html><html><head><title>Slack</title></head></html>"
    with pytest.raises(errors.NotAnImage) as refused:
        await image_from_upload(login_page, "photo.png")
    assert refused.value.user_message == (
        "“photo.png” isn't an image. Attach a PNG, JPEG, WebP, HEIC or HEIF file."
    )
    with pytest.raises(errors.UnsupportedImageType):
        await image_from_upload(b"GIF89a" + b"\0" * 40, "a.gif")


async def test_downloads_stop_as_soon_as_they_pass_the_limit() -> None:
    served: list[int] = []

    async def chunks() -> AsyncIterator[bytes]:
        for _ in range(100):
            served.append(1)
            yield b"x" * 1024

    with pytest.raises(errors.ImageTooLarge):
        await read_capped(chunks(), limit=10 * 1024)
    assert len(served) == 11  # the rest was never read


def test_prompt_and_ratio_parsing() -> None:
    assert split_prompt_flags("a cat --ar 16:9") == ("a cat", "16:9")
    assert split_prompt_flags("a cat --ar=9x16 on a mat") == ("a cat on a mat", "9:16")
    assert split_prompt_flags("a cat") == ("a cat", None)
    assert parse_aspect_ratio("landscape") == "16:9"
    assert parse_aspect_ratio(None) is None
    with pytest.raises(errors.UnknownAspectRatio):
        split_prompt_flags("a cat --ar 5:7")
    assert clean_prompt("  a cat ") == "a cat"


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("IMAGINE_PROVIDER", "midjourney"),
        ("NEXCONN_BASE_URL", "api.example"),
        ("IMAGINE_DEFAULT_ASPECT_RATIO", "7:3"),
        ("DATABASE_URL", "mysql://db"),
        ("SLACK_HTTP_PORT", "http"),
        ("DISCORD_GATEWAY_URL", "https://gateway"),
        ("DISCORD_GUILD_IDS", "123,abc"),
        ("IMAGINE_CONCURRENCY", "0"),
    ],
)
def test_invalid_setting_names_the_variable(
    monkeypatch: pytest.MonkeyPatch, variable: str, value: str
) -> None:
    monkeypatch.setenv(variable, value)
    with pytest.raises(SettingsError) as refused:
        load_settings(_env_file=None)
    line = str(refused.value)
    assert line.startswith(f"{variable}: ") and "\n" not in line


def test_provider_defaults_to_the_first_key_set(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("IMAGINE_PROVIDER", "NEXCONN_API_KEY", "GMI_API_KEY", "GEMINI_API_KEY"):
        monkeypatch.delenv(name, raising=False)
    assert load_settings(_env_file=None).provider_name == "demo"
    monkeypatch.setenv("GEMINI_API_KEY", "g-key")
    assert load_settings(_env_file=None).provider_name == "gemini"
    monkeypatch.setenv("GMI_API_KEY", "gmi-key")
    assert load_settings(_env_file=None).provider_name == "gmi"
    monkeypatch.setenv("IMAGINE_PROVIDER", "nexconn")
    with pytest.raises(SettingsError, match="IMAGINE_PROVIDER=nexconn needs NEXCONN_API_KEY"):
        load_settings(_env_file=None)


def test_secrets_are_masked_in_logs(caplog: pytest.LogCaptureFixture) -> None:
    logger = logging.getLogger("test.secrets")
    handler = logging.StreamHandler(io.StringIO())
    handler.addFilter(SecretFilter(["xoxb-very-secret-token"]))
    logger.addHandler(handler)
    try:
        logger.warning("calling Slack with %s", "xoxb-very-secret-token")
    finally:
        logger.removeHandler(handler)
    stream = handler.stream
    assert isinstance(stream, io.StringIO)
    assert "very-secret" not in stream.getvalue()
    assert "calling Slack with [redacted]" in stream.getvalue()
