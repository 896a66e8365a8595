"""Hostile inputs on Discord, through the real client: invisible prompts, masked links,
decompression bombs and broken files, attachment URLs off Discord's CDN, and interaction
tokens in discord.py's DEBUG log."""

from __future__ import annotations

import io
import json
import logging
import re
from typing import Any

from bot.errors import DamagedImage, EmptyPrompt, ImageTooManyPixels
from bot.logs import SecretFilter
from tests.fakes.discord_server import FakeDiscord, User
from tests.fakes.hostile_images import bomb_png, cut_png, png

from .conftest import RunningBot, TimedNexconn, imagine, is_callback, is_original_edit

INVISIBLE = "\u200b\u200c\u200d\u2060\ufeff\ufe0f\U000e0100 \u00ad"
LIVE_MASKED_LINK = re.compile(r"(?<!\\)\[[^\]\\]*(?<!\\)\]\(")
"""`[text](` with neither bracket escaped: Discord would render a masked link."""


async def test_a_prompt_of_invisible_characters_is_refused_as_empty(
    bot: RunningBot, fake: FakeDiscord, nexconn: TimedNexconn, alice: User
) -> None:
    payload = fake.slash(alice, INVISIBLE)
    await fake.dispatch("INTERACTION_CREATE", payload)
    answer = await fake.wait_for(is_callback(payload["token"]))
    assert answer.json["type"] == 4 and answer.json["data"]["flags"] == 64
    assert answer.json["data"]["content"] == EmptyPrompt().user_message
    assert nexconn.requests == []


async def test_invisible_characters_inside_a_real_prompt_are_kept(
    bot: RunningBot, fake: FakeDiscord, nexconn: TimedNexconn, alice: User
) -> None:
    prompt = "an astronaut 👩\u200d🚀 holding a red heart ❤\ufe0f"
    await imagine(fake, alice, prompt)
    [request] = nexconn.requests
    assert prompt in json.dumps(request.json, ensure_ascii=False)


async def test_a_masked_link_in_a_prompt_is_not_a_live_link_in_any_message(
    bot: RunningBot, fake: FakeDiscord, nexconn: TimedNexconn, alice: User
) -> None:
    prompt = "[Free Nitro](https://evil.example/login) a cat **and** [x](<https://evil.example>)"
    _, delivered = await imagine(fake, alice, prompt)

    [embed] = delivered.json["embeds"]
    description = embed["description"]
    assert "\\[Free Nitro\\](https://evil.example/login)" in description  # shown as typed
    assert "\\*\\*and\\*\\*" in description
    sent = [call for call in fake.calls if call.method in ("POST", "PATCH")]
    assert sent
    for call in sent:
        body: dict[str, Any] = call.json if isinstance(call.json, dict) else {}
        data: dict[str, Any] = body["data"] if isinstance(body.get("data"), dict) else body
        texts = [str(data.get("content") or "")]
        texts += [str(e.get("description") or "") for e in data.get("embeds") or []]
        texts += [str(f.get("value")) for e in data.get("embeds") or [] for f in e["fields"]]
        for text in texts:
            assert not LIVE_MASKED_LINK.search(text), (call.path, text)
    # the provider still gets exactly what the user typed
    assert prompt in json.dumps(nexconn.requests[0].json, ensure_ascii=False)


async def _refused_after_download(fake: FakeDiscord, alice: User, attachment: dict) -> str:
    payload = fake.slash(alice, "use this", images=[attachment])
    await fake.dispatch("INTERACTION_CREATE", payload)
    token = payload["token"]
    followup = await fake.wait_for(
        lambda c: c.method == "POST" and c.path == f"/webhooks/{fake.app_id}/{token}"
    )
    assert followup.json["flags"] == 64
    assert not fake.find(is_original_edit(token, with_file=True))
    return str(followup.json["content"])


async def test_a_decompression_bomb_is_refused_with_its_own_sentence_before_the_provider(
    bot: RunningBot, fake: FakeDiscord, nexconn: TimedNexconn, alice: User
) -> None:
    bomb = bomb_png()  # 48 KB that decode to 20000×20000
    content = await _refused_after_download(
        fake, alice, fake.attachment("cat.png", bomb, "image/png")
    )
    assert content == ImageTooManyPixels().user_message
    assert "too many pixels" in content and "50 megapixels" in content
    assert len(fake.downloads) == 1
    assert nexconn.requests == []

    big = bomb_png(8000, 7000)  # under Pillow's own limit, over ours
    content = await _refused_after_download(
        fake, alice, fake.attachment("big.png", big, "image/png")
    )
    assert content == "That image is 8000×7000 pixels; the limit is 50 megapixels per image."
    assert nexconn.requests == []


async def test_an_image_cut_short_is_refused_as_damaged(
    bot: RunningBot, fake: FakeDiscord, nexconn: TimedNexconn, alice: User
) -> None:
    cut = fake.attachment("photo.png", cut_png(), "image/png")
    content = await _refused_after_download(fake, alice, cut)
    assert content == DamagedImage("photo.png").user_message
    assert (
        content
        == "“photo.png” is damaged or incomplete, so I can't open it. Please attach it again."
    )
    assert nexconn.requests == []


async def test_an_attachment_url_off_discords_cdn_is_refused_and_never_fetched(
    bot: RunningBot, fake: FakeDiscord, nexconn: TimedNexconn, alice: User
) -> None:
    attachment = fake.attachment("cat.png", png(), "image/png")
    # the same fake, under a name that is not in DISCORD_CDN_HOSTS (an internal host)
    attachment["url"] = attachment["url"].replace("127.0.0.1", "localhost")
    payload = fake.slash(alice, "use this", images=[attachment])
    await fake.dispatch("INTERACTION_CREATE", payload)
    answer = await fake.wait_for(is_callback(payload["token"]))
    assert answer.json["type"] == 4 and answer.json["data"]["flags"] == 64
    assert answer.json["data"]["content"] == (
        "I can only use images uploaded to Discord, and “cat.png” is not on Discord's "
        "file server. Attach the image itself."
    )
    assert fake.downloads == []
    assert nexconn.requests == []


async def test_a_reply_with_an_attachment_off_the_cdn_is_refused(
    bot: RunningBot, fake: FakeDiscord, nexconn: TimedNexconn, alice: User
) -> None:
    payload, _ = await imagine(fake, alice, "a teapot")
    ours = fake.original_message(payload["token"])
    assert ours is not None
    attachment = fake.attachment("cat.png", png(), "image/png")
    attachment["url"] = "http://169.254.169.254/latest/meta-data/cat.png"
    message = fake.user_message(alice, "use this", reply_to=ours, attachments=[attachment])
    start = len(fake.calls)
    await fake.dispatch("MESSAGE_CREATE", message)
    reply = await fake.wait_for(
        lambda c: c.method == "POST" and c.path.endswith("/messages") and "Discord" in str(c.json),
        start=start,
    )
    assert "is not on Discord's file server" in reply.json["content"]
    assert len(nexconn.requests) == 1  # only the first image
    assert fake.downloads == []


async def test_interaction_tokens_in_discord_debug_logs_are_masked(
    fake: FakeDiscord, bot: RunningBot, alice: User
) -> None:
    token = "aW50ZXJhY3Rpb246MTIzNDU2Nzg5MDEyMzQ1Njc4OTpzZWNyZXRQYXJ0T2ZUaGVUb2tlbg"
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.addFilter(SecretFilter([]))
    handler.setLevel(logging.DEBUG)
    root, discord_log = logging.getLogger(), logging.getLogger("discord")
    levels = root.level, discord_log.level
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)
    discord_log.setLevel(logging.DEBUG)
    try:
        payload = fake.slash(alice, "a quiet harbour")
        payload["token"] = token
        start = len(fake.calls)
        await fake.dispatch("INTERACTION_CREATE", payload)
        await fake.wait_for(is_original_edit(token, with_file=True), start=start)
    finally:
        root.removeHandler(handler)
        root.setLevel(levels[0])
        discord_log.setLevel(levels[1])
    logged = stream.getvalue()
    assert f"/interactions/{payload['id']}/[redacted]/callback" in logged  # it was logged
    assert token not in logged and token[:20] not in logged
