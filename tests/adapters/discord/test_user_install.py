"""User install: the commands are registered for server and user installs and every context;
where the bot user is absent (a group DM, a server that never added the bot) the image, the
buttons, 📐 and the Edit modal all answer through the interaction, never a channel post."""

from __future__ import annotations

import asyncio
import logging
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from adapters.discord import user_install_url
from bot.errors import NotAllowed
from bot.models import JobStatus, TurnKind
from bot.providers.demo import DemoProvider
from tests.fakes.discord_server import Call, FakeDiscord, User
from tests.fakes.scripted_json_server import png

from .conftest import (
    RunningBot,
    TimedNexconn,
    custom_ids,
    is_callback,
    is_original_edit,
    run_bot,
    select_of,
    turn_of,
)
from .discord_spec import check_command

EPHEMERAL = 64


def synced(fake: FakeDiscord, path: str) -> dict[str, dict[str, Any]]:
    [sync] = fake.find(lambda c: c.method == "PUT" and c.path == path)
    for command in sync.json:
        check_command(command)
    return {command["name"]: command for command in sync.json}


def assert_registration(commands: dict[str, dict[str, Any]]) -> None:
    for name in ("imagine", "usage", "Edit image"):
        assert commands[name]["integration_types"] == [0, 1], name  # guild, user install
        assert commands[name]["contexts"] == [0, 1, 2], name  # guild, bot DM, private channel
    assert commands["imagine-admin"]["integration_types"] == [0]
    assert commands["imagine-admin"]["contexts"] == [0]


async def test_commands_are_registered_for_user_installs_globally_and_per_guild(
    fake: FakeDiscord, db_url: str
) -> None:
    running = await run_bot(fake, db_url, DemoProvider())
    try:
        assert_registration(
            synced(fake, f"/applications/{fake.app_id}/guilds/{fake.guild_id}/commands")
        )
        assert running.adapter.user_install_url == (
            f"https://discord.com/oauth2/authorize?client_id={fake.app_id}"
            "&integration_type=1&scope=applications.commands"
        )
        assert running.adapter.user_install_url == user_install_url(fake.app_id)
    finally:
        await running.stop()
    running = await run_bot(fake, db_url, DemoProvider(), DISCORD_GUILD_IDS="")
    try:
        assert_registration(synced(fake, f"/applications/{fake.app_id}/commands"))
    finally:
        await running.stop()


async def send(fake: FakeDiscord, payload: dict[str, Any]) -> tuple[int, Call]:
    start = len(fake.calls)
    await fake.dispatch("INTERACTION_CREATE", payload)
    return start, await fake.wait_for(is_callback(payload["token"]), start=start)


async def image_of(fake: FakeDiscord, payload: dict[str, Any]) -> dict[str, Any]:
    """Send an interaction that makes an image; the message it became (its @original)."""
    start, _ = await send(fake, payload)
    await fake.wait_for(is_original_edit(payload["token"], with_file=True), start=start)
    message = fake.original_message(payload["token"])
    assert message is not None
    return message


def no_channel_calls(fake: FakeDiscord, channel_id: int) -> None:
    """The bot never tried to post, edit, read or delete in the channel itself."""
    assert not fake.find(lambda c: c.path.startswith(f"/channels/{channel_id}/")), [
        (c.method, c.path) for c in fake.calls if c.path.startswith("/channels/")
    ]


async def test_in_a_group_dm_without_the_bot_the_image_and_every_control_work(
    bot: RunningBot, fake: FakeDiscord, nexconn: TimedNexconn, alice: User
) -> None:
    group_dm = fake.new_id()
    fake.closed_channels.add(group_dm)  # the bot user is not a member: 403 on any REST call
    where: dict[str, Any] = {"private_channel": group_dm, "owners": {"1": str(alice.id)}}

    payload = fake.slash(alice, "a paper boat on a puddle", **where)
    assert payload["context"] == 2 and "guild_id" not in payload
    message = await image_of(fake, payload)
    assert message["attachments"] and message["channel_id"] == str(group_dm)
    turn = await turn_of(bot, message)
    reroll_id, edit_id, delete_id = custom_ids(message)

    # Reroll: a new image through this click's own interaction
    nexconn.image = png((40, 80, 120))
    press = fake.button(alice, message, reroll_id, **where)
    rerolled = await image_of(fake, press)
    assert rerolled["attachments"]
    assert (await turn_of(bot, rerolled)).kind is TurnKind.REROLL

    # 📐: the same
    pick = fake.select(alice, message, select_of(message)["custom_id"], ["21:9"], **where)
    reframed = await image_of(fake, pick)
    assert (await turn_of(bot, reframed)).aspect_ratio == "21:9"

    # Edit: the modal, then its submit answers through the submit's interaction
    press = fake.button(alice, message, edit_id, **where)
    _, modal = await send(fake, press)
    assert modal.json["type"] == 9
    submit = fake.modal_submit(
        alice, modal.json["data"]["custom_id"], {"instruction": "add a frog"}, message, **where
    )
    edited = await image_of(fake, submit)
    edit_turn = await turn_of(bot, edited)
    assert edit_turn.kind is TurnKind.EDIT and edit_turn.parent_id == turn.id

    # "Edit image" on a friend's picture in the group DM: the modal, then a new image
    picture = fake.attachment("cat.png", png((10, 200, 10)), "image/png")
    target = fake.user_message(
        fake.user("bob"), "my cat", attachments=[picture], dm=True, channel_id=group_dm
    )
    _, modal = await send(fake, fake.context_menu(alice, target, **where))
    assert modal.json["type"] == 9
    submit = fake.modal_submit(
        alice, modal.json["data"]["custom_id"], {"instruction": "as a statue"}, None, **where
    )
    from_menu = await image_of(fake, submit)
    assert (await turn_of(bot, from_menu)).kind is TurnKind.IMAGINE
    assert f"/cdn/attachments/{picture['id']}/cat.png" in fake.downloads

    # Delete: the click's deferred update makes the image its @original, which it deletes
    press = fake.button(alice, message, delete_id, **where)
    start, ack = await send(fake, press)
    assert ack.json == {"type": 6}
    await fake.wait_for(
        lambda c: (
            c.method == "DELETE"
            and c.path == f"/webhooks/{fake.app_id}/{press['token']}/messages/@original"
        ),
        start=start,
    )
    done = await fake.wait_for(
        lambda c: c.method == "POST" and c.path == f"/webhooks/{fake.app_id}/{press['token']}",
        start=start,
    )
    assert done.json["content"] == "Deleted." and done.json["flags"] == EPHEMERAL
    assert int(message["id"]) not in fake.messages
    stored = await bot.store.get_turn(turn.id)
    assert stored is not None and stored.deleted

    no_channel_calls(fake, group_dm)


async def test_a_stranger_cannot_delete_through_a_user_install(
    bot: RunningBot, fake: FakeDiscord, alice: User
) -> None:
    group_dm = fake.new_id()
    fake.closed_channels.add(group_dm)
    where: dict[str, Any] = {"private_channel": group_dm, "owners": {"1": str(alice.id)}}
    message = await image_of(fake, fake.slash(alice, "a secret sketch", **where))
    await turn_of(bot, message)
    press = fake.button(fake.user("mallory"), message, custom_ids(message)[2], **where)
    start, ack = await send(fake, press)
    assert ack.json == {"type": 6}
    refusal = await fake.wait_for(
        lambda c: c.method == "POST" and c.path == f"/webhooks/{fake.app_id}/{press['token']}",
        start=start,
    )
    assert refusal.json["flags"] == EPHEMERAL
    assert refusal.json["content"] == NotAllowed().user_message
    assert int(message["id"]) in fake.messages
    no_channel_calls(fake, group_dm)


async def test_in_a_server_without_the_bot_a_refused_edit_falls_back_to_a_followup(
    bot: RunningBot, fake: FakeDiscord, nexconn: TimedNexconn, alice: User
) -> None:
    """User install in a server that never added the bot: when `@original` can't be edited,
    the image comes as a followup through the interaction webhook, not a channel post."""
    fake.closed_channels.add(fake.channel_id)
    payload = fake.slash(alice, "a lantern festival", owners={"1": str(alice.id)})
    assert payload["context"] == 0 and payload["guild_id"] == str(fake.guild_id)
    fake.failing_original_edits = 1000  # every edit of the response is refused
    start, ack = await send(fake, payload)
    assert ack.json == {"type": 5}
    followup = await fake.wait_for(
        lambda c: (
            c.method == "POST"
            and c.path == f"/webhooks/{fake.app_id}/{payload['token']}"
            and bool(c.files)
        ),
        start=start,
    )
    assert followup.files[0].data == nexconn.image
    assert [item["type"] for row in followup.json["components"] for item in row["components"]] == [
        2,
        2,
        2,
        3,
    ]
    fake.failing_original_edits = 0
    no_channel_calls(fake, fake.channel_id)


async def logged(caplog: pytest.LogCaptureFixture, *needles: str) -> logging.LogRecord:
    """The first log record whose message holds every needle (waits for it)."""
    async with asyncio.timeout(10):
        while True:
            for record in caplog.records:
                if all(needle in record.getMessage() for needle in needles):
                    return record
            await asyncio.sleep(0.01)


async def test_a_job_whose_answer_can_no_longer_arrive_is_not_generated(
    bot: RunningBot,
    fake: FakeDiscord,
    alice: User,
    nexconn: TimedNexconn,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A group DM job that starts once its interaction token has expired (it waited in the
    queue): nothing could reach the user, so no image is made — no provider call, nothing
    paid — and the log names the job and why; the job is FAILED (given back to the limits)."""
    caplog.set_level(logging.WARNING)
    group_dm = fake.new_id()
    fake.closed_channels.add(group_dm)
    where: dict[str, Any] = {"private_channel": group_dm, "owners": {"1": str(alice.id)}}
    payload = fake.slash(
        alice, "a lighthouse that waited", at=datetime.now(UTC) - timedelta(minutes=16), **where
    )
    await send(fake, payload)

    skipped = await logged(caplog, "not generated: its image could not be delivered")
    assert skipped.levelno == logging.WARNING
    job_id = str(skipped.args[0]) if isinstance(skipped.args, tuple) else ""
    assert f"channel {group_dm}" in skipped.getMessage()
    assert "16.0 min old" in skipped.getMessage()
    failure = await logged(caplog, f"job {job_id}'s failure", "could not be delivered")
    assert failure.levelno == logging.WARNING

    await bot.core.idle()
    job = await bot.store.get_job(job_id)
    assert job is not None and job.status is JobStatus.FAILED
    assert (job.error or "").startswith("answer_expired: ")
    assert nexconn.requests == []  # the provider was never called
    # nothing was sent anywhere: not in the channel, not through the dead token
    no_channel_calls(fake, group_dm)
    assert not fake.find(lambda c: c.path.startswith(f"/webhooks/{fake.app_id}/{payload['token']}"))


async def test_a_refused_token_where_the_bot_is_absent_is_logged_with_the_job(
    bot: RunningBot, fake: FakeDiscord, alice: User, caplog: pytest.LogCaptureFixture
) -> None:
    """Discord refuses the token (401 Invalid Webhook Token) while the bot still counts it
    alive: the image can't go anywhere else, and the log says whose it was and why."""
    caplog.set_level(logging.WARNING)
    group_dm = fake.new_id()
    fake.closed_channels.add(group_dm)
    where: dict[str, Any] = {"private_channel": group_dm, "owners": {"1": str(alice.id)}}
    payload = fake.slash(alice, "a kite in the rain", **where)
    fake.refused_tokens.add(payload["token"])
    await send(fake, payload)

    lost = await logged(caplog, "'s image (turn ", "could not be delivered")
    assert lost.levelno == logging.ERROR
    assert "Discord refused the interaction token" in lost.getMessage()
    await bot.core.idle()
    refused = fake.find(lambda c: c.path.startswith(f"/webhooks/{fake.app_id}/{payload['token']}"))
    assert refused and all(c.answer and c.answer["code"] == 50027 for c in refused)
    assert not any(c.files for c in refused)  # the image was never offered to a dead token
    no_channel_calls(fake, group_dm)
