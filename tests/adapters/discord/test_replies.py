"""Reply-to-edit: replies to our images edit them (and branch); everything else is ignored."""

from __future__ import annotations

import json
from typing import Any

from bot.errors import TooManyImages
from tests.fakes.discord_server import Call, FakeDiscord, User
from tests.fakes.nexconn_server import CHAT
from tests.fakes.scripted_json_server import b64, png

from .conftest import RunningBot, TimedNexconn, custom_ids, imagine, is_channel_post, turn_of


async def reply(
    fake: FakeDiscord, user: User, text: str, to: dict[str, Any], **options: Any
) -> tuple[dict[str, Any], Call]:
    """Reply to `to` and wait for the bot's image reply."""
    message = fake.user_message(user, text, reply_to=to, **options)
    start = len(fake.calls)
    await fake.dispatch("MESSAGE_CREATE", message)
    answer = await fake.wait_for(
        lambda c: is_channel_post(int(message["channel_id"]))(c) and bool(c.files), start=start
    )
    return message, answer


def replied_to(call: Call) -> str:
    return str(call.json["message_reference"]["message_id"])


async def test_a_reply_edits_the_image_with_the_previous_image_in_context(
    bot: RunningBot, fake: FakeDiscord, nexconn: TimedNexconn, alice: User
) -> None:
    payload, _ = await imagine(fake, alice, "a panda making latte art")
    image_message = fake.original_message(payload["token"])
    assert image_message is not None
    first = await turn_of(bot, image_message)
    first_image = nexconn.image
    nexconn.image = png((30, 30, 200))

    message, answer = await reply(fake, alice, "make the cup blue", image_message)

    chat = nexconn.requests[-1]
    assert chat.path == CHAT
    sent = json.dumps(chat.json)
    assert b64(first_image) in sent and "make the cup blue" in sent
    assert replied_to(answer) == message["id"]
    assert answer.files[0].data == nexconn.image
    edited = await turn_of(bot, answer.answer)
    assert edited.parent_id == first.id
    assert edited.prompt == "make the cup blue"
    assert custom_ids(answer.answer) == [
        f"imagine:reroll:{edited.id}",
        f"imagine:edit:{edited.id}",
        f"imagine:delete:{edited.id}",
    ]


async def test_a_reply_to_an_older_image_branches_from_it(
    bot: RunningBot, fake: FakeDiscord, nexconn: TimedNexconn, alice: User
) -> None:
    payload, _ = await imagine(fake, alice, "a lighthouse")
    root_message = fake.original_message(payload["token"])
    assert root_message is not None
    root = await turn_of(bot, root_message)
    root_image = nexconn.image

    nexconn.image = png((0, 0, 255))
    _, blue = await reply(fake, alice, "make it blue", root_message)
    blue_turn = await turn_of(bot, blue.answer)
    blue_image = nexconn.image
    nexconn.image = png((255, 255, 0))
    _, fog = await reply(fake, alice, "add fog", blue.answer)
    assert (await turn_of(bot, fog.answer)).parent_id == blue_turn.id

    nexconn.image = png((255, 0, 0))
    _, red = await reply(fake, alice, "make it red instead", root_message)
    branch = await turn_of(bot, red.answer)
    assert branch.parent_id == root.id
    sent = json.dumps(nexconn.requests[-1].json)
    assert b64(root_image) in sent
    assert b64(blue_image) not in sent


async def test_four_images_in_a_reply_are_refused_with_the_core_sentence(
    bot: RunningBot, fake: FakeDiscord, nexconn: TimedNexconn, alice: User
) -> None:
    payload, _ = await imagine(fake, alice, "a lighthouse")
    image_message = fake.original_message(payload["token"])
    assert image_message is not None
    images = [fake.attachment(f"ref{i}.png", png(), "image/png") for i in range(4)]
    message = fake.user_message(
        alice, "use all of these", reply_to=image_message, attachments=images
    )
    start = len(fake.calls)
    await fake.dispatch("MESSAGE_CREATE", message)
    answer = await fake.wait_for(is_channel_post(fake.channel_id), start=start)
    assert answer.json["content"] == TooManyImages(4).user_message
    assert replied_to(answer) == message["id"]
    assert fake.downloads == []
    assert len(nexconn.requests) == 1


async def test_other_messages_bots_and_our_own_messages_are_ignored(
    bot: RunningBot, fake: FakeDiscord, nexconn: TimedNexconn, alice: User
) -> None:
    payload, _ = await imagine(fake, alice, "a lighthouse")
    image_message = fake.original_message(payload["token"])
    assert image_message is not None
    other_bot = User(fake.new_id(), "other-bot", bot=True)
    someone = fake.user_message(
        alice, "my own picture", attachments=[fake.attachment("a.png", png(), "image/png")]
    )
    ignored = [
        fake.user_message(alice, "make it blue", reply_to=someone),  # not our message
        fake.user_message(other_bot, "make it blue", reply_to=image_message),  # a bot
        fake.user_message(fake.bot, "make it blue", reply_to=image_message),  # ourselves
        fake.user_message(alice, "just chatting"),  # not a reply
    ]
    start = len(fake.calls)
    for message in ignored:
        await fake.dispatch("MESSAGE_CREATE", message)
    # a real reply after them: once it is answered, the ignored ones had their turn
    sentinel, _ = await reply(fake, alice, "make it green", image_message)
    posts = [c for c in fake.calls[start:] if c.method == "POST"]
    assert all(replied_to(c) == sentinel["id"] for c in posts)
    assert len(nexconn.requests) == 2


async def test_imagine_and_reply_work_in_direct_messages(
    bot: RunningBot, fake: FakeDiscord, nexconn: TimedNexconn, alice: User
) -> None:
    payload, _ = await imagine(fake, alice, "a cosy cabin", dm=True)
    image_message = fake.original_message(payload["token"])
    assert image_message is not None and "guild_id" not in image_message
    first = await turn_of(bot, image_message)
    thread = await bot.store.get_thread(first.thread_id)
    assert thread is not None and thread.key.workspace == "@dm"

    _, answer = await reply(fake, alice, "add snow", image_message, dm=True)
    assert answer.path == f"/channels/{fake.dm_channel_id}/messages"
    assert (await turn_of(bot, answer.answer)).parent_id == first.id


async def test_a_reply_in_a_thread_is_answered_in_that_thread(
    bot: RunningBot, fake: FakeDiscord, nexconn: TimedNexconn, alice: User
) -> None:
    payload, _ = await imagine(fake, alice, "a castle")
    image_message = fake.original_message(payload["token"])
    assert image_message is not None
    first = await turn_of(bot, image_message)
    thread_id = fake.new_id()
    in_thread = {**image_message, "channel_id": str(thread_id)}

    message, answer = await reply(fake, alice, "add a dragon", in_thread, channel_id=thread_id)
    assert answer.path == f"/channels/{thread_id}/messages"
    assert replied_to(answer) == message["id"]
    assert (await turn_of(bot, answer.answer)).parent_id == first.id
