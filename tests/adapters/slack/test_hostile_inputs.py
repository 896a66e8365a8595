"""Hostile inputs on Slack, through the real Bolt app: invisible prompts, links in prompts,
decompression bombs and broken files."""

from __future__ import annotations

import json

from bot.errors import DamagedImage, EmptyPrompt, ImageTooManyPixels
from tests.adapters.slack.conftest import Bot, Launch, imagine, message_event, root_of
from tests.fakes.hostile_images import bomb_png, cut_png
from tests.fakes.slack_server import FakeSlack

INVISIBLE = "\u200b\u200d\u2060\ufeff\ufe0f\U000e01ef"


async def test_a_prompt_of_invisible_characters_is_refused_as_empty(
    slack: FakeSlack, launch: Launch
) -> None:
    bot = await launch()
    status, body = await bot.command(INVISIBLE)
    assert status == 200
    assert EmptyPrompt().user_message in json.loads(body)["text"]
    assert slack.api("chat.postMessage") == [] and bot.provider.calls == 0  # type: ignore[attr-defined]


async def test_a_link_in_a_prompt_is_never_a_live_link_in_the_bots_messages(
    slack: FakeSlack, launch: Launch
) -> None:
    bot = await launch()
    # a hyperlink made in the composer arrives as <url|label>; a typed one arrives escaped
    text = "<https://evil.example/a|Free Nitro> and &lt;https://evil.example/b|Typed&gt; a cat"
    status, _ = await bot.command(text)
    assert status == 200
    root = await root_of(slack, "a cat")
    await bot.core.idle()
    shown = json.dumps([root.text, root.blocks])
    assert "<https://evil.example" not in shown
    assert "&lt;https://evil.example/b|Typed&gt;" in root.text  # shown as typed, inert
    assert "Free Nitro" in root.text


async def _reply_with_file(bot: Bot, slack: FakeSlack, name: str, data: bytes, ts: str) -> str:
    root, _ = await imagine(bot, "a teapot")
    calls = bot.provider.calls  # type: ignore[attr-defined]
    file = slack.host_file(name, data)
    await bot.event(message_event("use this", ts=ts, thread_ts=root.ts, files=[file]), f"E{ts}")
    error = await slack.wait_for(
        lambda: next((m for m in slack.replies(root.ts) if ":warning:" in m.text), None)
    )
    assert bot.provider.calls == calls  # type: ignore[attr-defined]
    assert len(slack.uploads_in(root.ts)) == 1
    return error.text


async def test_a_decompression_bomb_file_is_refused_before_the_provider(
    slack: FakeSlack, launch: Launch
) -> None:
    bot = await launch()
    text = await _reply_with_file(bot, slack, "bomb.png", bomb_png(), "1700000100.000001")
    assert ImageTooManyPixels().user_message in text
    assert len(slack.downloads) == 1


async def test_a_file_cut_short_is_refused_as_damaged(slack: FakeSlack, launch: Launch) -> None:
    bot = await launch()
    text = await _reply_with_file(bot, slack, "half.png", cut_png(), "1700000100.000002")
    assert DamagedImage("half.png").user_message in text
