"""Buttons and modals: Reroll and Edit across a restart, Delete's permissions, "Edit image"."""

from __future__ import annotations

import json
from typing import Any

import pytest

from adapters.discord.actions import ALREADY_FINISHED_TEXT
from adapters.discord.commands import NO_IMAGE_TEXT
from bot.errors import InternalError, NotAllowed, UnknownTurn
from bot.models import TurnKind
from bot.providers.nexconn import NexconnProvider
from tests.fakes.discord_server import MANAGE_MESSAGES, MEMBER_PERMISSIONS, Call, FakeDiscord, User
from tests.fakes.nexconn_server import CHAT
from tests.fakes.scripted_json_server import b64, png

from .conftest import (
    RunningBot,
    TimedNexconn,
    custom_ids,
    imagine,
    is_callback,
    is_original_edit,
    run_bot,
    turn_of,
)


async def interact(fake: FakeDiscord, payload: dict[str, Any]) -> int:
    start = len(fake.calls)
    await fake.dispatch("INTERACTION_CREATE", payload)
    return start


async def delivered(fake: FakeDiscord, payload: dict[str, Any], start: int) -> Call:
    return await fake.wait_for(is_original_edit(payload["token"], with_file=True), start=start)


async def test_reroll_and_edit_work_after_a_restart_on_the_same_database(
    fake: FakeDiscord,
    db_url: str,
    provider: NexconnProvider,
    nexconn: TimedNexconn,
    alice: User,
) -> None:
    first = await run_bot(fake, db_url, provider)
    try:
        payload, _ = await imagine(fake, alice, "a lighthouse at dusk")
        message = fake.original_message(payload["token"])
        assert message is not None
        original = await turn_of(first, message)
    finally:
        await first.stop()
    original_image = nexconn.image

    second = await run_bot(fake, db_url, provider)
    try:
        reroll_id, edit_id, _ = custom_ids(message)
        nexconn.image = png((1, 2, 3))
        press = fake.button(alice, message, reroll_id)
        rerolled = await delivered(fake, press, await interact(fake, press))
        assert fake.find(is_callback(press["token"]))[0].json == {"type": 5}
        assert rerolled.files[0].data == nexconn.image
        reroll_message = fake.original_message(press["token"])
        assert reroll_message is not None
        reroll_turn = await turn_of(second, reroll_message)
        assert reroll_turn.kind is TurnKind.REROLL
        assert reroll_turn.prompt == original.prompt
        assert reroll_turn.parent_id == original.parent_id

        press = fake.button(alice, message, edit_id)
        await fake.wait_for(is_callback(press["token"]), start=await interact(fake, press))
        [modal] = fake.find(is_callback(press["token"]))
        assert modal.json["type"] == 9
        modal_id = modal.json["data"]["custom_id"]
        assert modal_id == f"imagine:edit-modal:{original.id}"

        nexconn.image = png((4, 5, 6))
        submit = fake.modal_submit(alice, modal_id, {"instruction": "add a rainbow"}, message)
        edited = await delivered(fake, submit, await interact(fake, submit))
        assert edited.files[0].data == nexconn.image
        sent = json.dumps(nexconn.requests[-1].json)
        assert nexconn.requests[-1].path == CHAT
        assert b64(original_image) in sent and "add a rainbow" in sent
        edit_message = fake.original_message(submit["token"])
        assert edit_message is not None
        edit_turn = await turn_of(second, edit_message)
        assert edit_turn.parent_id == original.id
    finally:
        await second.stop()


async def test_delete_refuses_a_stranger_and_works_for_the_requester(
    bot: RunningBot, fake: FakeDiscord, nexconn: TimedNexconn, alice: User
) -> None:
    payload, _ = await imagine(fake, alice, "a secret sketch")
    message = fake.original_message(payload["token"])
    assert message is not None
    turn = await turn_of(bot, message)
    reroll_id, _, delete_id = custom_ids(message)

    stranger = fake.button(fake.user("mallory"), message, delete_id)
    start = await interact(fake, stranger)
    refusal = await fake.wait_for(is_original_edit(stranger["token"]), start=start)
    [defer] = fake.find(is_callback(stranger["token"]))
    assert defer.json == {"type": 5, "data": {"flags": 64}}
    assert refusal.json["content"] == NotAllowed().user_message
    assert int(message["id"]) in fake.messages

    owner = fake.button(alice, message, delete_id)
    start = await interact(fake, owner)
    done = await fake.wait_for(is_original_edit(owner["token"]), start=start)
    assert done.json["content"] == "Deleted."
    assert fake.find(
        lambda c: (
            c.method == "DELETE"
            and c.path == f"/channels/{fake.channel_id}/messages/{message['id']}"
        )
    )
    stored = await bot.store.get_turn(turn.id)
    assert stored is not None and stored.deleted

    late = fake.button(alice, message, reroll_id)
    answer = await fake.wait_for(is_callback(late["token"]), start=await interact(fake, late))
    assert answer.json["type"] == 4
    assert answer.json["data"]["content"] == UnknownTurn().user_message
    assert answer.json["data"]["flags"] == 64
    assert len(nexconn.requests) == 1


async def test_a_moderator_may_delete_someone_elses_image(
    bot: RunningBot, fake: FakeDiscord, alice: User
) -> None:
    payload, _ = await imagine(fake, alice, "an off-topic meme")
    message = fake.original_message(payload["token"])
    assert message is not None
    await turn_of(bot, message)
    moderator = fake.button(
        fake.user("mod"),
        message,
        custom_ids(message)[2],
        permissions=MEMBER_PERMISSIONS | MANAGE_MESSAGES,
    )
    start = await interact(fake, moderator)
    done = await fake.wait_for(is_original_edit(moderator["token"]), start=start)
    assert done.json["content"] == "Deleted."


async def test_edit_image_on_anyones_picture_starts_a_new_thread_from_it(
    bot: RunningBot, fake: FakeDiscord, nexconn: TimedNexconn, alice: User
) -> None:
    photo = png((10, 200, 10))
    bob = fake.user("bob")
    target = fake.user_message(
        bob, "look at my cat", attachments=[fake.attachment("cat.png", photo, "image/png")]
    )
    menu = fake.context_menu(alice, target)
    await fake.wait_for(is_callback(menu["token"]), start=await interact(fake, menu))
    [modal] = fake.find(is_callback(menu["token"]))
    assert modal.json["type"] == 9
    modal_id = modal.json["data"]["custom_id"]

    submit = fake.modal_submit(alice, modal_id, {"instruction": "make it a watercolor"}, None)
    result = await delivered(fake, submit, await interact(fake, submit))
    assert result.files[0].data == nexconn.image
    [request] = nexconn.requests
    sent = json.dumps(request.json)
    assert b64(photo) in sent and "make it a watercolor" in sent
    message = fake.original_message(submit["token"])
    assert message is not None
    turn = await turn_of(bot, message)
    assert turn.parent_id is None and turn.user_id == str(alice.id)


async def test_edit_image_on_a_message_without_a_picture_explains_privately(
    bot: RunningBot, fake: FakeDiscord, alice: User
) -> None:
    target = fake.user_message(fake.user("bob"), "just words")
    menu = fake.context_menu(alice, target)
    answer = await fake.wait_for(is_callback(menu["token"]), start=await interact(fake, menu))
    assert answer.json["type"] == 4
    assert answer.json["data"]["flags"] == 64
    assert answer.json["data"]["content"] == NO_IMAGE_TEXT


async def test_edit_image_submitted_after_a_restart_on_a_deleted_picture_explains(
    fake: FakeDiscord, db_url: str, provider: NexconnProvider, nexconn: TimedNexconn, alice: User
) -> None:
    target = fake.user_message(
        fake.user("bob"), "my cat", attachments=[fake.attachment("cat.png", png(), "image/png")]
    )
    first = await run_bot(fake, db_url, provider)
    try:
        menu = fake.context_menu(alice, target)
        await fake.wait_for(is_callback(menu["token"]), start=await interact(fake, menu))
        [modal] = fake.find(is_callback(menu["token"]))
        modal_id = modal.json["data"]["custom_id"]
    finally:
        await first.stop()
    fake.messages.pop(int(target["id"]), None)  # bob deleted his picture meanwhile

    second = await run_bot(fake, db_url, provider)
    try:
        submit = fake.modal_submit(alice, modal_id, {"instruction": "as a watercolor"}, None)
        start = await interact(fake, submit)
        token = submit["token"]
        answer = await fake.wait_for(
            lambda c: c.method == "POST" and c.path == f"/webhooks/{fake.app_id}/{token}",
            start=start,
        )
        assert answer.json["content"] == NO_IMAGE_TEXT
        assert nexconn.requests == []  # no image was made from the text alone
    finally:
        await second.stop()


async def test_cancel_after_the_image_is_done_says_so_privately_and_keeps_the_image(
    bot: RunningBot, fake: FakeDiscord, alice: User
) -> None:
    payload, _ = await imagine(fake, alice, "a quick doodle")
    message = fake.original_message(payload["token"])
    assert message is not None
    await turn_of(bot, message)
    progress = next(
        c for c in fake.find(is_original_edit(payload["token"])) if custom_ids(c.json or {})
    )
    stale = {**message, "components": progress.json["components"]}  # a client still showing it
    [cancel] = custom_ids(stale)
    press = fake.button(alice, stale, cancel)
    start = await interact(fake, press)
    answer = await fake.wait_for(
        lambda c: c.method == "POST" and c.path == f"/webhooks/{fake.app_id}/{press['token']}",
        start=start,
    )
    assert answer.json["content"] == ALREADY_FINISHED_TEXT
    assert answer.json["flags"] == 64
    assert fake.find(is_callback(press["token"]))[0].json == {"type": 6}
    assert int(message["id"]) in fake.messages
    assert not fake.find(lambda c: c.method == "DELETE")


async def test_a_failing_store_lookup_still_answers_the_button(
    bot: RunningBot, fake: FakeDiscord, alice: User, monkeypatch: pytest.MonkeyPatch
) -> None:
    payload, _ = await imagine(fake, alice, "a fragile vase")
    message = fake.original_message(payload["token"])
    assert message is not None
    await turn_of(bot, message)

    async def broken(turn_id: str) -> None:
        raise RuntimeError("database is locked")

    monkeypatch.setattr(bot.store, "get_turn", broken)
    press = fake.button(alice, message, custom_ids(message)[0])
    start = await interact(fake, press)
    followup = await fake.wait_for(
        lambda c: c.method == "POST" and c.path == f"/webhooks/{fake.app_id}/{press['token']}",
        start=start,
    )
    assert fake.find(is_callback(press["token"]))[0].json == {"type": 5}
    assert followup.json["content"] == InternalError().user_message
    assert followup.json["flags"] == 64
    assert "database is locked" not in json.dumps(followup.json)
