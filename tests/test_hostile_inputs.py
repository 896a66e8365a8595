"""Hostile inputs below the adapters: invisible prompts, markdown in echoed text, image
bombs and broken files, HEIF sizes, the demo provider, Discord download rules."""

from __future__ import annotations

import asyncio
import struct
from collections.abc import AsyncIterator

import aiohttp
import pytest
from aiohttp import web

from adapters.discord import attachments
from adapters.discord.convert import no_links, plain
from adapters.discord.runtime import AttachmentRef
from bot import errors
from bot.config import SettingsError, load_settings
from bot.inputs import check_decodes, clean_prompt, image_from_upload
from bot.models import Image, ImageRequest
from bot.providers.demo import DemoProvider
from tests.fakes.hostile_images import bomb_png, cut_png, png

# --- invisible prompts ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text",
    [
        "\u200b",  # zero-width space
        "\u200c\u200d",  # joiners
        "\ufe0f\ufe0e",  # variation selectors
        "\U000e0100\U000e01ef",  # ideographic variation selectors
        "\ufeff",  # BOM
        "\u2060 \u00a0\u3000",  # word joiner and wide spaces
        "\u00ad\u200e\u202e",  # soft hyphen, bidi marks
        "\u3164\u2800",  # Hangul filler, blank Braille
        "\U000e0041\U000e007f",  # tag characters
    ],
)
def test_a_prompt_of_invisible_characters_is_empty(text: str) -> None:
    with pytest.raises(errors.EmptyPrompt) as refused:
        clean_prompt(text)
    assert refused.value.user_message == "Tell me what to draw: the prompt is empty."


def test_invisible_characters_in_a_real_prompt_stay() -> None:
    family = "a family 👨\u200d👩\u200d👧 under a heart ❤\ufe0f"
    assert clean_prompt(f"  {family}\n") == family
    assert clean_prompt("\u200ba cat") == "\u200ba cat"


# --- markdown in what Discord echoes --------------------------------------------------------


def test_discord_echoes_prompts_with_inert_markdown() -> None:
    assert plain("[Free Nitro](https://evil.example)") == "\\[Free Nitro\\](https://evil.example)"
    # a backslash of the user's own cannot un-escape the bracket
    assert plain("\\[x\\](https://e)") == "\\\\\\[x\\\\\\](https://e)"
    assert plain("a *cute* cat_in_hat ||x||") == "a \\*cute\\* cat\\_in\\_hat \\|\\|x\\|\\|"
    assert plain("# big\n-# small\n> quote\n1. one") == "\\# big\n\\-# small\n\\> quote\n1\\. one"
    assert plain("a cat (fluffy) at 16:9") == "a cat (fluffy) at 16:9"
    assert no_links('The model said: "[click](https://evil)"') == (
        'The model said: "\\[click\\](https://evil)"'
    )
    assert no_links("The prompt is 2001 characters.") == "The prompt is 2001 characters."


# --- reference images decode whole -----------------------------------------------------------


async def test_a_good_image_passes_and_keeps_its_bytes() -> None:
    data = png((40, 30))
    image = await image_from_upload(data, "ok.png")
    assert image.data == data and image.mime == "image/png"


async def test_a_decompression_bomb_is_refused_from_its_header() -> None:
    with pytest.raises(errors.ImageTooManyPixels) as refused:
        await image_from_upload(bomb_png(), "bomb.png")
    assert refused.value.user_message == (
        "That image has too many pixels; the limit is 50 megapixels per image."
    )
    with pytest.raises(errors.ImageTooManyPixels) as refused:
        await image_from_upload(bomb_png(8000, 7000), "big.png")
    assert refused.value.user_message == (
        "That image is 8000×7000 pixels; the limit is 50 megapixels per image."
    )


async def test_an_image_cut_short_is_damaged() -> None:
    with pytest.raises(errors.DamagedImage) as refused:
        await image_from_upload(cut_png(), "half.png")
    assert refused.value.user_message == (
        "“half.png” is damaged or incomplete, so I can't open it. Please attach it again."
    )
    assert refused.value.code == "damaged_image" and not refused.value.retryable


def _heif(width: int, height: int) -> bytes:
    ftyp = struct.pack(">I", 24) + b"ftypheic" + b"\0\0\0\0" + b"mif1heic"
    ispe = struct.pack(">I", 20) + b"ispe" + b"\0\0\0\0" + struct.pack(">II", width, height)
    meta = struct.pack(">I", 8 + 4 + len(ispe)) + b"meta" + b"\0\0\0\0" + ispe
    return ftyp + meta + b"\0" * 64


def test_heif_sizes_are_checked_from_their_declared_extents() -> None:
    check_decodes(_heif(4032, 3024), "image/heic")  # a phone photo
    with pytest.raises(errors.ImageTooManyPixels):
        check_decodes(_heif(20000, 20000), "image/heic")


async def test_the_demo_provider_never_decodes_a_bomb() -> None:
    bomb = Image.of(bomb_png(), "image/png")
    provider = DemoProvider()
    request = ImageRequest(
        prompt="make it blue", model="demo", aspect_ratio="1:1", references=(bomb,)
    )
    with pytest.raises(errors.ImageTooManyPixels):
        await provider.generate(request)
    big = Image.of(bomb_png(8000, 7000), "image/png")
    with pytest.raises(errors.ImageTooManyPixels) as refused:
        await provider.generate(
            ImageRequest(prompt="x", model="demo", aspect_ratio="1:1", references=(big,))
        )
    assert "8000×7000" in refused.value.user_message


# --- Discord downloads: only from the CDN, capped in time ------------------------------------


class Origin:
    """A loopback web server recording every request; `/redirect` points elsewhere."""

    def __init__(self, location: str = "", delay: float = 0.0) -> None:
        self.location = location
        self.delay = delay
        self.hits: list[str] = []
        self.port = 0

    async def handle(self, request: web.Request) -> web.StreamResponse:
        self.hits.append(request.path)
        if request.path == "/redirect":
            raise web.HTTPFound(self.location)
        await asyncio.sleep(self.delay)
        return web.Response(body=png(), content_type="image/png")


@pytest.fixture
async def origin() -> AsyncIterator[Origin]:
    server = Origin()
    app = web.Application()
    app.router.add_get("/{tail:.*}", server.handle)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    server.port = runner.addresses[0][1]
    yield server
    await runner.cleanup()


def ref(url: str, name: str = "cat.png") -> AttachmentRef:
    return AttachmentRef(url, name, "image/png", 100)


def test_only_discords_cdn_hosts_are_trusted_by_default() -> None:
    assert attachments.trusted("https://cdn.discordapp.com/attachments/1/2/cat.png?ex=1")
    assert attachments.trusted("https://media.discordapp.net/attachments/1/2/cat.png")
    for url in (
        "https://cdn.discordapp.com.evil.example/cat.png",
        "https://evil.example/cdn.discordapp.com/cat.png",
        "https://user@evil.example/cat.png",
        "http://169.254.169.254/latest/meta-data",
        "file:///etc/passwd",
        "ftp://cdn.discordapp.com/cat.png",
        "not a url",
    ):
        assert not attachments.trusted(url), url


async def test_a_redirect_off_the_cdn_is_refused_and_not_followed(origin: Origin) -> None:
    elsewhere = f"http://localhost:{origin.port}/internal.png"
    origin.location = elsewhere
    async with aiohttp.ClientSession() as session:
        with pytest.raises(attachments.UntrustedAttachment) as refused:
            await attachments.download(
                session, [ref(f"http://127.0.0.1:{origin.port}/redirect")], {"127.0.0.1"}
            )
    assert refused.value.user_message == (
        "I can only use images uploaded to Discord, and “cat.png” is not on Discord's "
        "file server. Attach the image itself."
    )
    assert origin.hits == ["/redirect"]  # the internal address was never asked


async def test_a_redirect_within_the_cdn_is_followed(origin: Origin) -> None:
    origin.location = "/attachments/cat.png"
    async with aiohttp.ClientSession() as session:
        [image] = await attachments.download(
            session, [ref(f"http://127.0.0.1:{origin.port}/redirect")], {"127.0.0.1"}
        )
    assert image.mime == "image/png"
    assert origin.hits == ["/redirect", "/attachments/cat.png"]


async def test_a_url_off_the_cdn_is_never_requested(origin: Origin) -> None:
    async with aiohttp.ClientSession() as session:
        with pytest.raises(attachments.UntrustedAttachment):
            await attachments.download(
                session, [ref(f"http://127.0.0.1:{origin.port}/cat.png")]
            )  # default hosts: Discord's only
    assert origin.hits == []


async def test_downloads_have_a_total_time_limit(origin: Origin) -> None:
    origin.delay = 5.0
    url = f"http://127.0.0.1:{origin.port}/slow.png"
    async with aiohttp.ClientSession() as session:
        with pytest.raises(attachments.AttachmentDownloadFailed) as failed:
            await attachments.download(session, [ref(url, "slow.png")], {"127.0.0.1"}, total=0.3)
    assert failed.value.user_message == (
        "I couldn't download “slow.png” from Discord. Please attach it again."
    )
    assert failed.value.retryable


def test_discord_cdn_hosts_setting() -> None:
    default = load_settings(_env_file=None)
    assert default.cdn_hosts == {"cdn.discordapp.com", "media.discordapp.net"}
    custom = load_settings(_env_file=None, DISCORD_CDN_HOSTS="cdn.proxy.internal, 127.0.0.1")
    assert custom.cdn_hosts == {"cdn.proxy.internal", "127.0.0.1"}
    with pytest.raises(SettingsError) as bad:
        load_settings(_env_file=None, DISCORD_CDN_HOSTS="https://cdn.discordapp.com/")
    assert str(bad.value).startswith("DISCORD_CDN_HOSTS: ")
