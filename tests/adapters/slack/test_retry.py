"""🔁 Retry: on failures that trying again can fix, across a restart; never on the others."""

from __future__ import annotations

from bot.errors import ProviderUnavailable, SafetyBlocked, UnknownTurn
from bot.models import TurnKind
from tests.adapters.slack.conftest import (
    Launch,
    action_ids,
    block_action,
    images_in,
    imagine,
    message_event,
    nexconn_provider,
    root_of,
)
from tests.fakes.nexconn_server import FakeNexconn, error_body
from tests.fakes.scripted_json_server import Reply, png
from tests.fakes.slack_server import FakeSlack, Message


def button_value(message: Message, action_id: str) -> str:
    return next(
        str(element["value"])
        for block in message.blocks
        if block["type"] == "actions"
        for element in block["elements"]
        if element["action_id"] == action_id
    )


async def test_a_provider_outage_offers_retry_and_it_works_after_a_restart(
    slack: FakeSlack, launch: Launch, nexconn: FakeNexconn
) -> None:
    before = await launch(nexconn_provider(nexconn), db="retry.db")
    nexconn.script(Reply(500, error_body("upstream exploded", "server_error")))
    await before.command("a robot in the rain")
    root = await root_of(slack, "a robot in the rain")
    sentence = ProviderUnavailable().user_message
    await slack.wait_for(lambda: sentence in root.text)
    assert action_ids(root) == ["imagine:retry"]
    job_id = button_value(root, "imagine:retry")
    (said,) = await slack.wait_for(lambda: slack.replies(root.ts))
    assert said.text == f":warning: {sentence}" and said.blocks == []  # one button is enough
    await before.core.idle()
    await before.close()

    after = await launch(nexconn_provider(nexconn), db="retry.db")
    nexconn.image = png((1, 2, 3))
    status, body = await after.interactive(
        block_action("imagine:retry", job_id, user="U2", message_ts=root.ts)
    )
    assert status == 200 and body == ""
    (image,) = await images_in(slack, root.ts, 1)
    assert image == nexconn.image
    await after.core.idle()
    (turn,) = await after.turns(root.ts)
    assert turn.kind is TurnKind.IMAGINE and turn.prompt == "a robot in the rain"
    assert turn.user_id == "U2"

    # the retry has its own status message in the thread, like a Reroll's
    status_message = await slack.wait_for(
        lambda: next((m for m in slack.replies(root.ts) if "done" in m.text), None)
    )
    assert status_message.text.startswith("<@U2> imagined: a robot in the rain")
    assert action_ids(status_message) == [
        "imagine:reroll",
        "imagine:edit",
        "imagine:delete",
        "imagine:reframe",
    ]
    assert action_ids(root) == ["imagine:retry"]  # the failure stays as it was


async def test_a_safety_block_offers_no_retry(
    slack: FakeSlack, launch: Launch, nexconn: FakeNexconn
) -> None:
    bot = await launch(nexconn_provider(nexconn))
    nexconn.script(
        Reply(400, error_body("Blocked by content policy", code="content_policy_violation"))
    )
    await bot.command("something the filter dislikes")
    root = await root_of(slack, "something the filter dislikes")
    sentence = SafetyBlocked().user_message
    await slack.wait_for(lambda: sentence.split(".")[0] in root.text)
    assert action_ids(root) == []
    (said,) = await slack.wait_for(lambda: slack.replies(root.ts))
    assert said.blocks == []


async def test_retry_of_an_edit_whose_image_was_deleted_is_refused_privately(
    slack: FakeSlack, launch: Launch, nexconn: FakeNexconn
) -> None:
    bot = await launch(nexconn_provider(nexconn))
    root, _ = await imagine(bot, "a red cup")
    (turn,) = await bot.turns(root.ts)

    nexconn.script(Reply(500, error_body("upstream exploded", "server_error")))
    await bot.event(
        message_event("make the cup blue", ts="1700000100.000001", thread_ts=root.ts), "Ev1"
    )
    failed = await slack.wait_for(
        lambda: next(
            (m for m in slack.replies(root.ts) if action_ids(m) == ["imagine:retry"]), None
        )
    )
    assert action_ids(failed) == ["imagine:retry"]
    assert failed.text.startswith("<@U1> asked for an edit: make the cup blue")
    job_id = button_value(failed, "imagine:retry")
    await bot.core.idle()

    await bot.interactive(block_action("imagine:delete", turn.id, user="U1", message_ts=root.ts))
    await slack.wait_for(lambda: slack.api("files.delete"))
    posted = len(slack.api("chat.postMessage"))

    await bot.interactive(block_action("imagine:retry", job_id, user="U2", message_ts=failed.ts))
    (refusal,) = await slack.wait_for(lambda: slack.api("chat.postEphemeral"))
    assert refusal.params["user"] == "U2"
    assert refusal.params["text"] == f":warning: {UnknownTurn().user_message}"
    await bot.core.idle()
    assert len(slack.api("chat.postMessage")) == posted  # nothing public
    assert len(nexconn.requests) == 2  # the image and the failed edit
