"""Start-up as `imagine-bot run` does it: login, gateway IDENTIFY, command sync, invite link."""

from __future__ import annotations

import pytest

from adapters.discord import DiscordAdapter, DiscordStartError, invite_url
from bot.core import ImagineBot
from bot.models import ASPECT_RATIOS
from bot.providers.demo import DemoProvider
from storage import open_store
from tests.fakes.discord_server import (
    INTENT_DM_MESSAGES,
    INTENT_GUILD_MESSAGES,
    INTENT_GUILDS,
    INTENT_MESSAGE_CONTENT,
    FakeDiscord,
)

from .conftest import MODEL, RunningBot, run_bot, settings_for


async def test_identify_asks_for_message_content_and_commands_sync_to_the_test_guild(
    bot: RunningBot, fake: FakeDiscord
) -> None:
    identify = await fake.wait_identify()
    assert identify["token"] == fake.token
    assert identify["shard"] == [0, 1]  # no DISCORD_SHARD_COUNT: what Discord recommends
    intents = identify["intents"]
    for bit in (INTENT_GUILDS, INTENT_GUILD_MESSAGES, INTENT_DM_MESSAGES, INTENT_MESSAGE_CONTENT):
        assert intents & bit
    [sync] = fake.find(
        lambda c: (
            c.method == "PUT"
            and c.path == f"/applications/{fake.app_id}/guilds/{fake.guild_id}/commands"
        )
    )
    commands = {command["name"]: command for command in sync.json}
    assert commands["Edit image"]["type"] == 3
    options = {option["name"]: option for option in commands["imagine"]["options"]}
    assert options["prompt"]["required"] is True
    assert [c["value"] for c in options["aspect_ratio"]["choices"]] == list(ASPECT_RATIOS)
    assert all(options[name]["type"] == 11 for name in ("image", "image2", "image3"))
    assert bot.adapter.invite_url == invite_url(fake.app_id)


async def test_without_guild_ids_commands_sync_globally(fake: FakeDiscord, db_url: str) -> None:
    running = await run_bot(fake, db_url, DemoProvider(), DISCORD_GUILD_IDS="")
    try:
        assert fake.find(
            lambda c: c.method == "PUT" and c.path == f"/applications/{fake.app_id}/commands"
        )
    finally:
        await running.stop()


async def test_a_refused_token_stops_start_up_with_one_clear_line(
    fake: FakeDiscord, db_url: str
) -> None:
    store = await open_store(db_url)
    core = ImagineBot(store, DemoProvider(), model=MODEL)
    adapter = DiscordAdapter(core, settings_for(fake, DISCORD_TOKEN="not-the-token"))
    try:
        with pytest.raises(DiscordStartError, match="DISCORD_TOKEN") as caught:
            await adapter.start()
        assert "not-the-token" not in str(caught.value)
        assert not fake.identifies
    finally:
        await adapter.close()
        await store.close()


async def test_message_content_not_enabled_in_the_portal_is_named_at_start_up(
    fake: FakeDiscord, db_url: str
) -> None:
    fake.allowed_intents = ~INTENT_MESSAGE_CONTENT
    with pytest.raises(DiscordStartError, match="Message Content"):
        await run_bot(fake, db_url, DemoProvider())
