"""🔁 Retry: on failures that trying again can fix, across a restart; never on the others."""

from __future__ import annotations

from typing import Any

from bot.errors import ProviderUnavailable, RateLimited, SafetyBlocked, UnknownTurn
from bot.models import TurnKind
from bot.providers.nexconn import NexconnProvider
from tests.fakes.discord_server import Call, FakeDiscord, User
from tests.fakes.nexconn_server import error_body
from tests.fakes.scripted_json_server import Reply, png

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


def content(call: Call) -> str:
    body = call.json if isinstance(call.json, dict) else {}
    return str(body.get("content") or "")


async def interact(fake: FakeDiscord, payload: dict[str, Any]) -> int:
    start = len(fake.calls)
    await fake.dispatch("INTERACTION_CREATE", payload)
    return start


async def failure(fake: FakeDiscord, user: User, prompt: str) -> tuple[dict[str, Any], Call]:
    """Run `/imagine` and wait for the edit that says it failed."""
    payload = fake.slash(user, prompt)
    start = len(fake.calls)
    await fake.dispatch("INTERACTION_CREATE", payload)
    failed = await fake.wait_for(
        lambda c: is_original_edit(payload["token"])(c) and "⚠️" in content(c), start=start
    )
    return payload, failed


async def test_a_provider_outage_offers_retry_and_it_works_after_a_restart(
    fake: FakeDiscord,
    db_url: str,
    provider: NexconnProvider,
    nexconn: TimedNexconn,
    alice: User,
) -> None:
    first = await run_bot(fake, db_url, provider)
    try:
        nexconn.script(Reply(500, error_body("upstream exploded", "server_error")))
        payload, failed = await failure(fake, alice, "a robot in the rain")
        assert content(failed) == f"⚠️ {ProviderUnavailable().user_message}\n> a robot in the rain"
        message = fake.original_message(payload["token"])
        assert message is not None
        [retry_id] = custom_ids(message)
        assert retry_id.startswith("imagine:retry:") and len(retry_id) <= 100
        [button] = message["components"][0]["components"]
        assert button["label"] == "Retry" and button["emoji"]["name"] == "🔁"
        await first.core.idle()
    finally:
        await first.stop()

    second = await run_bot(fake, db_url, provider)
    try:
        nexconn.image = png((1, 2, 3))
        bob = fake.user("bob")
        press = fake.button(bob, message, retry_id)
        start = len(fake.calls)
        await fake.dispatch("INTERACTION_CREATE", press)
        retried = await fake.wait_for(is_original_edit(press["token"], with_file=True), start=start)
        [defer] = fake.find(is_callback(press["token"]))
        assert defer.json == {"type": 5}  # "thinking…", like Reroll
        assert retried.files[0].data == nexconn.image
        assert custom_ids(retried.json)[0].startswith("imagine:reroll:")
        shown = fake.original_message(press["token"])
        assert shown is not None
        turn = await turn_of(second, shown)
        assert turn.kind is TurnKind.IMAGINE and turn.prompt == "a robot in the rain"
        assert turn.user_id == str(bob.id)
        assert len(nexconn.requests) == 2
    finally:
        await second.stop()


async def test_a_rate_limit_offers_retry(
    bot: RunningBot, fake: FakeDiscord, nexconn: TimedNexconn, alice: User
) -> None:
    nexconn.script(Reply(429, error_body("Rate limit", "rate_limit_error")))
    _, failed = await failure(fake, alice, "a busy beehive")
    assert content(failed) == f"⚠️ {RateLimited().user_message}\n> a busy beehive"
    assert [c.split(":")[1] for c in custom_ids(failed.json)] == ["retry"]


async def test_a_safety_block_offers_no_retry(
    bot: RunningBot, fake: FakeDiscord, nexconn: TimedNexconn, alice: User
) -> None:
    nexconn.script(
        Reply(400, error_body("Blocked by content policy", code="content_policy_violation"))
    )
    payload, failed = await failure(fake, alice, "something the filter dislikes")
    assert SafetyBlocked().user_message in content(failed)
    assert failed.json["components"] == []
    message = fake.original_message(payload["token"])
    assert message is not None and custom_ids(message) == []


async def test_retry_of_an_edit_whose_image_was_deleted_is_answered_privately(
    bot: RunningBot, fake: FakeDiscord, nexconn: TimedNexconn, alice: User
) -> None:
    payload, _ = await imagine(fake, alice, "a lighthouse at dusk")
    image = fake.original_message(payload["token"])
    assert image is not None
    _, edit_id, delete_id = custom_ids(image)

    press = fake.button(alice, image, edit_id)
    await fake.wait_for(is_callback(press["token"]), start=await interact(fake, press))
    [modal] = fake.find(is_callback(press["token"]))
    nexconn.script(Reply(500, error_body("upstream exploded", "server_error")))
    submit = fake.modal_submit(
        alice, modal.json["data"]["custom_id"], {"instruction": "blue"}, image
    )
    start = await interact(fake, submit)
    await fake.wait_for(
        lambda c: is_original_edit(submit["token"])(c) and "⚠️" in content(c), start=start
    )
    failed = fake.original_message(submit["token"])
    assert failed is not None
    [retry_id] = custom_ids(failed)

    press = fake.button(alice, image, delete_id)
    await fake.wait_for(is_original_edit(press["token"]), start=await interact(fake, press))

    press = fake.button(fake.user("bob"), failed, retry_id)
    start = await interact(fake, press)
    token = press["token"]
    answer = await fake.wait_for(
        lambda c: c.method == "POST" and c.path == f"/webhooks/{fake.app_id}/{token}",
        start=start,
    )
    assert answer.json["content"] == UnknownTurn().user_message
    assert answer.json["flags"] == 64  # only bob sees it
    assert fake.find(
        lambda c: c.method == "DELETE" and c.path.endswith(f"/{token}/messages/@original")
    )  # no public "thinking…" left behind
    assert len(nexconn.requests) == 2  # the image and the failed edit; no retry was sent


async def test_a_failed_reply_edit_offers_retry_which_edits_the_same_image(
    bot: RunningBot, fake: FakeDiscord, nexconn: TimedNexconn, alice: User
) -> None:
    payload, _ = await imagine(fake, alice, "a panda making latte art")
    image = fake.original_message(payload["token"])
    assert image is not None
    first = await turn_of(bot, image)

    nexconn.script(Reply(500, error_body("upstream exploded", "server_error")))
    message = fake.user_message(alice, "make the cup blue", reply_to=image)
    start = len(fake.calls)
    await fake.dispatch("MESSAGE_CREATE", message)
    channel = f"/channels/{fake.channel_id}/messages"
    failed = await fake.wait_for(
        lambda c: c.path.startswith(channel) and "⚠️" in content(c), start=start
    )
    assert content(failed) == f"⚠️ {ProviderUnavailable().user_message}\n> make the cup blue"
    shown = fake.messages[int(failed.answer["id"])]
    [retry_id] = custom_ids(shown)

    nexconn.image = png((30, 30, 200))
    press = fake.button(alice, shown, retry_id)
    retried = await fake.wait_for(
        is_original_edit(press["token"], with_file=True), start=await interact(fake, press)
    )
    assert retried.files[0].data == nexconn.image
    answer = fake.original_message(press["token"])
    assert answer is not None
    turn = await turn_of(bot, answer)
    assert turn.kind is TurnKind.EDIT and turn.parent_id == first.id
    assert turn.prompt == "make the cup blue"
