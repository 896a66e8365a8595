"""Sharding and acting once: two adapters on one database, one fake gateway.

Two `DiscordAdapter`s run in this process, each with its own core and its own store object
on the same SQLite file, as shard 0 and shard 1 of 2. The fake then delivers one event to
both connections — what Discord does to two processes that run the same shard by mistake —
and the bot must act on it once: one answer, one provider call. (Two real `imagine-bot run`
processes are tested in `test_shard_processes.py`.)
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import pytest

from bot.providers.demo import DemoProvider
from bot.providers.http import RetryPolicy
from bot.providers.nexconn import NexconnProvider
from tests.fakes.discord_server import Call, FakeDiscord, User, shard_of

from .conftest import (
    NEXCONN_KEY,
    RunningBot,
    TimedNexconn,
    custom_ids,
    is_callback,
    is_channel_post,
    is_original_edit,
    run_bot,
    turn_of,
)


@dataclass
class Pair:
    shard0: RunningBot
    shard1: RunningBot


@pytest.fixture
async def pair(
    fake: FakeDiscord, db_url: str, nexconn: TimedNexconn, caplog: pytest.LogCaptureFixture
) -> AsyncIterator[Pair]:
    caplog.set_level(logging.WARNING, logger="adapters.discord")
    providers = [
        NexconnProvider(NEXCONN_KEY, nexconn.base_url, policy=RetryPolicy(attempts=1))
        for _ in range(2)
    ]
    started: list[RunningBot] = []
    try:
        for shard, provider in enumerate(providers):
            started.append(
                await run_bot(
                    fake,
                    db_url,
                    provider,
                    DISCORD_SHARD_COUNT="2",
                    DISCORD_SHARD_IDS=str(shard),
                )
            )
        yield Pair(*started)
    finally:
        for running in started:
            await running.stop()
        for provider in providers:
            await provider.aclose()


async def dropped(caplog: pytest.LogCaptureFixture, kind: str, event_id: str) -> None:
    """Wait until one process says it left `event_id` to the other."""
    needle = f"Discord {kind} {event_id} was already taken by another process"
    async with asyncio.timeout(10):
        while not any(needle in record.getMessage() for record in caplog.records):
            await asyncio.sleep(0.01)


async def everywhere(fake: FakeDiscord, event: str, payload: dict[str, Any]) -> int:
    """Deliver `payload` to both processes; the index of the first call it may cause."""
    start = len(fake.calls)
    await fake.dispatch(event, payload, everywhere=True)
    return start


def is_file_edit(token: str) -> Any:
    return is_original_edit(token, with_file=True)


async def first_image(pair: Pair, fake: FakeDiscord, user: User) -> dict[str, Any]:
    """One `/imagine`, delivered the ordinary way (its guild's shard); the posted message."""
    payload = fake.slash(user, "a lighthouse at dusk")
    start = len(fake.calls)
    await fake.dispatch("INTERACTION_CREATE", payload)
    await fake.wait_for(is_file_edit(payload["token"]), start=start)
    message = fake.original_message(payload["token"])
    assert message is not None
    owner = pair.shard0 if shard_of(fake.guild_id, 2) == 0 else pair.shard1
    await turn_of(owner, message)
    return message


async def test_each_adapter_identifies_as_its_shard_and_only_shard_0_syncs_commands(
    pair: Pair, fake: FakeDiscord
) -> None:
    assert sorted(identify["shard"] for identify in fake.identifies) == [[0, 2], [1, 2]]
    assert sorted(fake.shards) == [(0, 2), (1, 2)]  # both connections stay open
    syncs = fake.find(lambda c: c.method == "PUT" and c.path.endswith("/commands"))
    assert len(syncs) == 1
    assert pair.shard0.adapter.invite_url == pair.shard1.adapter.invite_url


async def test_a_slash_command_delivered_to_both_processes_is_answered_once(
    pair: Pair,
    fake: FakeDiscord,
    nexconn: TimedNexconn,
    alice: User,
    caplog: pytest.LogCaptureFixture,
) -> None:
    payload = fake.slash(alice, "a panda making latte art")
    start = await everywhere(fake, "INTERACTION_CREATE", payload)
    await fake.wait_for(is_file_edit(payload["token"]), start=start)
    await dropped(caplog, "interaction", payload["id"])
    for running in (pair.shard0, pair.shard1):
        await running.core.idle()

    [defer] = fake.find(is_callback(payload["token"]))
    assert defer.json == {"type": 5}
    assert len(fake.find(is_file_edit(payload["token"]))) == 1
    assert len(nexconn.requests) == 1


async def test_a_button_delivered_to_both_processes_acts_once(
    pair: Pair,
    fake: FakeDiscord,
    nexconn: TimedNexconn,
    alice: User,
    caplog: pytest.LogCaptureFixture,
) -> None:
    message = await first_image(pair, fake, alice)
    reroll_id = custom_ids(message)[0]

    press = fake.button(alice, message, reroll_id)
    start = await everywhere(fake, "INTERACTION_CREATE", press)
    await fake.wait_for(is_file_edit(press["token"]), start=start)
    await dropped(caplog, "interaction", press["id"])
    for running in (pair.shard0, pair.shard1):
        await running.core.idle()

    assert len(fake.find(is_callback(press["token"]))) == 1
    assert len(fake.find(is_file_edit(press["token"]))) == 1
    assert len(nexconn.requests) == 2  # the first image and one reroll


async def test_edit_image_and_its_modal_delivered_to_both_processes_act_once(
    pair: Pair,
    fake: FakeDiscord,
    nexconn: TimedNexconn,
    alice: User,
    caplog: pytest.LogCaptureFixture,
) -> None:
    photo = fake.attachment("cat.png", nexconn.image, "image/png")
    target = fake.user_message(fake.user("bob"), "my cat", attachments=[photo])

    menu = fake.context_menu(alice, target)
    start = await everywhere(fake, "INTERACTION_CREATE", menu)
    modal = await fake.wait_for(is_callback(menu["token"]), start=start)
    await dropped(caplog, "interaction", menu["id"])
    assert modal.json["type"] == 9
    assert len(fake.find(is_callback(menu["token"]))) == 1

    modal_id = modal.json["data"]["custom_id"]
    submit = fake.modal_submit(alice, modal_id, {"instruction": "as a watercolor"}, None)
    start = await everywhere(fake, "INTERACTION_CREATE", submit)
    await fake.wait_for(is_file_edit(submit["token"]), start=start)
    await dropped(caplog, "interaction", submit["id"])
    for running in (pair.shard0, pair.shard1):
        await running.core.idle()

    assert len(fake.find(is_callback(submit["token"]))) == 1
    assert len(fake.find(is_file_edit(submit["token"]))) == 1
    assert len(nexconn.requests) == 1


async def test_a_reply_delivered_to_both_processes_edits_once(
    pair: Pair,
    fake: FakeDiscord,
    nexconn: TimedNexconn,
    alice: User,
    caplog: pytest.LogCaptureFixture,
) -> None:
    image_message = await first_image(pair, fake, alice)

    message = fake.user_message(alice, "make the sky green", reply_to=image_message)
    start = await everywhere(fake, "MESSAGE_CREATE", message)

    def is_image_reply(call: Call) -> bool:
        return is_channel_post(fake.channel_id)(call) and bool(call.files)

    answer = await fake.wait_for(is_image_reply, start=start)
    await dropped(caplog, "message", message["id"])
    for running in (pair.shard0, pair.shard1):
        await running.core.idle()

    assert str(answer.json["message_reference"]["message_id"]) == message["id"]
    assert len(fake.find(is_image_reply)) == 1
    assert len(nexconn.requests) == 2  # the first image and one edit


async def test_without_a_shard_count_the_process_runs_every_shard_discord_recommends(
    fake: FakeDiscord, db_url: str
) -> None:
    fake.recommended_shards = 2  # discord.py waits 5 s between two IDENTIFYs, as Discord asks
    running = await run_bot(fake, db_url, DemoProvider())
    try:
        assert sorted(identify["shard"] for identify in fake.identifies) == [[0, 2], [1, 2]]
        assert fake.find(lambda c: c.method == "GET" and c.path == "/gateway/bot")
        assert len(fake.find(lambda c: c.method == "PUT" and c.path.endswith("/commands"))) == 1
    finally:
        await running.stop()
