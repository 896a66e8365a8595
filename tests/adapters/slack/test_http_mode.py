"""HTTP mode end to end: signed requests to `/slack/events`, the real Bolt app, a fake Slack."""

from __future__ import annotations

import asyncio
import json
import logging
import time

import pytest

from bot.providers.demo import DemoProvider
from tests.adapters.slack.conftest import (
    BOT,
    Bot,
    Launch,
    action_ids,
    block_action,
    images_in,
    imagine,
    message_event,
    nexconn_provider,
    root_of,
)
from tests.fakes.nexconn_server import CHAT, GENERATIONS, FakeNexconn, error_body
from tests.fakes.scripted_json_server import Reply, b64, png
from tests.fakes.slack_server import FakeSlack, parse_blocks

# --- /imagine -------------------------------------------------------------------------------------


async def test_slash_command_acks_fast_then_posts_root_and_uploads_into_its_thread(
    slack: FakeSlack, launch: Launch
) -> None:
    provider = DemoProvider(latency=0.5)
    bot = await launch(provider)

    started = time.monotonic()
    status, body = await bot.command("a panda making latte art --ar 16:9")
    assert status == 200
    assert time.monotonic() - started < 3.0
    assert body == ""  # a plain ack: nothing ephemeral to say
    assert slack.completed == [] and provider.calls <= 1  # the image doesn't exist yet

    root = await root_of(slack, "a panda making latte art")
    assert "<@U1>" in root.text and "--ar" not in root.text
    (uploaded,) = await images_in(slack, root.ts, 1)
    (done,) = slack.completed
    assert done["channel_id"] == "C1" and done["thread_ts"] == root.ts

    await bot.core.idle()
    (turn,) = await bot.turns(root.ts)
    assert turn.aspect_ratio == "16:9" and turn.user_id == "U1"
    assert uploaded == (await bot.image(turn)).data  # the provider's exact bytes

    final = await slack.wait_for(lambda: "done" in root.text and root)
    assert action_ids(final) == [
        "imagine:reroll",
        "imagine:edit",
        "imagine:delete",
        "imagine:reframe",
    ]
    elements = [e for b in final.blocks if b["type"] == "actions" for e in b["elements"]]
    assert all(e["value"] == turn.id for e in elements if e["type"] == "button")
    (ratios,) = [e for e in elements if e["type"] == "static_select"]  # 📐
    assert all(o["value"].startswith(turn.id + "|") for o in ratios["options"])
    # progress went through chat.update on the root, with a Cancel button while running
    updates = [parse_blocks(c.params.get("blocks")) for c in slack.api("chat.update")]
    assert any(
        e.get("action_id") == "imagine:cancel"
        for blocks in updates
        for b in blocks
        if b["type"] == "actions"
        for e in b["elements"]
    )


@pytest.mark.parametrize(
    ("text", "words"),
    [("", "prompt is empty"), ("a cat --ar 7:3", "isn't a supported aspect ratio")],
)
async def test_command_misuse_is_answered_ephemerally_in_the_ack(
    slack: FakeSlack, launch: Launch, text: str, words: str
) -> None:
    bot = await launch()
    status, body = await bot.command(text)
    assert status == 200
    answer = json.loads(body)
    assert words in answer["text"] and "/imagine" in answer["text"]
    assert answer.get("response_type", "ephemeral") == "ephemeral"
    assert slack.api("chat.postMessage") == [] and bot.provider.calls == 0  # type: ignore[attr-defined]


async def test_command_in_a_channel_without_the_bot_says_how_to_invite_it(
    slack: FakeSlack, launch: Launch
) -> None:
    slack.post_errors["C9"] = "not_in_channel"
    bot = await launch()
    status, _ = await bot.command("a cat", channel="C9")
    assert status == 200
    (answer,) = await slack.wait_for(lambda: slack.responses)
    assert "/invite" in answer["text"] and answer["response_type"] == "ephemeral"
    assert bot.provider.calls == 0  # type: ignore[attr-defined]


# --- thread replies -------------------------------------------------------------------------------


async def test_thread_reply_edits_with_the_previous_image_in_the_provider_request(
    slack: FakeSlack, launch: Launch, nexconn: FakeNexconn
) -> None:
    red, blue = png((200, 30, 30)), png((30, 30, 200))
    nexconn.image = red
    bot = await launch(nexconn_provider(nexconn))
    root, first = await imagine(bot, "a red cup")
    assert first == red

    nexconn.image = blue
    status, _ = await bot.event(
        message_event("make the cup blue", ts="1700000100.000001", thread_ts=root.ts), "Ev1"
    )
    assert status == 200
    images = await images_in(slack, root.ts, 2)
    assert images[1] == blue
    await bot.core.idle()

    first_turn, second_turn = await bot.turns(root.ts)
    assert second_turn.parent_id == first_turn.id and second_turn.prompt == "make the cup blue"
    paths = [r.path for r in nexconn.requests]
    assert paths == [GENERATIONS, CHAT]
    edit_request = nexconn.requests[1].json
    history = json.dumps(edit_request["messages"][:-1])
    assert b64(red) in history and "a red cup" in history
    assert edit_request["messages"][-1]["content"][0]["text"] == "make the cup blue"


async def test_reply_with_an_image_downloads_it_with_the_bot_token(
    slack: FakeSlack, launch: Launch
) -> None:
    bot = await launch()
    root, _ = await imagine(bot, "a teapot")
    reference = png((10, 200, 10), (16, 16))
    file = slack.host_file("green.png", reference)

    await bot.event(
        message_event("use this colour", ts="1700000100.000002", thread_ts=root.ts, files=[file]),
        "Ev2",
    )
    await images_in(slack, root.ts, 2)
    (download,) = slack.downloads
    assert download.authorization == f"Bearer {slack.bot_token}" and not download.served_html
    await bot.core.idle()
    _, edit = await bot.turns(root.ts)
    assert len(edit.reference_shas) == 1
    stored = await bot.store.get_image(edit.reference_shas[0])
    assert stored.data == reference


async def test_an_html_login_page_instead_of_the_file_is_refused_before_the_provider(
    slack: FakeSlack, launch: Launch, caplog: pytest.LogCaptureFixture
) -> None:
    bot = await launch()
    root, _ = await imagine(bot, "a teapot")
    slack.files_read_scope = False  # Slack answers the login page, with status 200
    file = slack.host_file("photo.png", png())
    calls = bot.provider.calls  # type: ignore[attr-defined]

    with caplog.at_level(logging.WARNING):
        await bot.event(
            message_event("like this", ts="1700000100.000003", thread_ts=root.ts, files=[file]),
            "Ev3",
        )
        error = await slack.wait_for(
            lambda: next((m for m in slack.replies(root.ts) if "isn't an image" in m.text), None)
        )
    assert "photo.png" in error.text
    assert slack.downloads[-1].served_html
    assert bot.provider.calls == calls  # type: ignore[attr-defined]
    assert len(slack.uploads_in(root.ts)) == 1
    assert any("files:read" in r.getMessage() for r in caplog.records)


async def test_other_threads_bots_and_message_edits_are_ignored(
    slack: FakeSlack, launch: Launch
) -> None:
    bot = await launch()
    root, _ = await imagine(bot, "a lighthouse")
    ignored = [
        message_event("chat", ts="1700000200.000001", thread_ts="1699999999.000001"),
        message_event("top level chatter", ts="1700000200.000002"),
        message_event("bot", ts="1700000200.000003", thread_ts=root.ts, bot_id="B2"),
        message_event("self", ts="1700000200.000004", thread_ts=root.ts, user=BOT),
        message_event(
            "edited", ts="1700000200.000005", thread_ts=root.ts, subtype="message_changed"
        ),
    ]
    for i, event in enumerate(ignored):
        assert (await bot.event(event, f"EvIgn{i}"))[0] == 200
    # a barrier: the next real reply is handled, and it is the only edit
    await bot.event(message_event("at night", ts="1700000200.000009", thread_ts=root.ts), "EvOk")
    await images_in(slack, root.ts, 2)
    await bot.core.idle()
    assert bot.provider.calls == 2  # type: ignore[attr-defined]
    assert len(slack.roots()) == 1


# --- signatures -----------------------------------------------------------------------------------


async def test_bad_signature_and_stale_timestamp_get_401_and_do_nothing(
    slack: FakeSlack, launch: Launch
) -> None:
    bot = await launch()
    status, _ = await bot.command("forged", secret="not-the-secret")
    assert status == 401
    status, _ = await bot.command("replayed", timestamp=int(time.time()) - 6 * 60)
    assert status == 401
    barrier = message_event("<@UBOT> a signed request", ts="1.1", kind="app_mention")
    status, _ = await bot.event(barrier, "Ev1")
    assert status == 200  # signed correctly: handled, and a barrier for the two above
    await slack.wait_for(lambda: slack.uploads)
    await bot.core.idle()
    assert bot.provider.calls == 1  # type: ignore[attr-defined]
    posted = " ".join(m.text for m in slack.messages.values())
    assert "forged" not in posted and "replayed" not in posted
    assert slack.roots() == []


# --- duplicates -----------------------------------------------------------------------------------


async def test_a_retried_event_generates_once(slack: FakeSlack, launch: Launch) -> None:
    bot = await launch()
    mention = message_event("<@UBOT> a fox in the snow", ts="1700000300.000001", kind="app_mention")
    assert (await bot.event(mention, "EvRetry"))[0] == 200
    assert (await bot.event(mention, "EvRetry", retry=1))[0] == 200
    assert (await bot.event(mention, "EvRetry", retry=2))[0] == 200
    await images_in(slack, mention["ts"], 1)
    await barrier(bot, "1700000300.000009")
    assert len(slack.uploads_in(mention["ts"])) == 1
    assert bot.provider.calls == 2  # type: ignore[attr-defined]


async def test_a_channel_mention_delivered_twice_generates_once(
    slack: FakeSlack, launch: Launch
) -> None:
    bot = await launch()
    ts = "1700000400.000001"
    text = "<@UBOT> a whale made of clouds"
    await asyncio.gather(
        bot.event(message_event(text, ts=ts, kind="app_mention"), "EvMention"),
        bot.event(message_event(text, ts=ts), "EvMessage"),
    )
    (image,) = await images_in(slack, ts, 1)
    await barrier(bot, "1700000400.000009")
    assert slack.uploads_in(ts) == [image]
    assert bot.provider.calls == 2  # type: ignore[attr-defined]
    (turn,) = await bot.turns(ts)
    assert turn.prompt == "a whale made of clouds"
    status = slack.replies(ts)[0]  # the mention is the root; the bot answers in its thread
    assert "a whale made of clouds" in status.text


async def barrier(bot: Bot, ts: str) -> None:
    """A fresh mention that must finish: everything sent before it has been handled."""
    await bot.event(message_event("<@UBOT> barrier", ts=ts, kind="app_mention"), f"Ev{ts}")
    await images_in(bot.slack, ts, 1)
    await bot.core.idle()


# --- failures and cancel --------------------------------------------------------------------------


async def test_a_provider_failure_is_reported_in_the_thread_and_the_next_command_works(
    slack: FakeSlack, launch: Launch, nexconn: FakeNexconn
) -> None:
    bot = await launch(nexconn_provider(nexconn))
    nexconn.script(Reply(500, error_body("upstream exploded", "server_error")))
    await bot.command("a broken robot")
    root = await root_of(slack, "a broken robot")
    error = await slack.wait_for(lambda: next(iter(slack.replies(root.ts)), None))
    assert "unavailable" in error.text and "exploded" not in error.text
    assert "Traceback" not in error.text and slack.bot_token not in error.text
    await slack.wait_for(lambda: "unavailable" in root.text)
    assert action_ids(root) == ["imagine:retry"]  # no Cancel left behind; Retry instead

    _, image = await imagine(bot, "a fixed robot")
    assert image == nexconn.image


async def test_cancel_button_stops_a_running_job(slack: FakeSlack, launch: Launch) -> None:
    bot = await launch(DemoProvider(latency=30))
    await bot.command("a very slow painting")
    root = await root_of(slack, "a very slow painting")
    message = await slack.wait_for(lambda: "imagine:cancel" in action_ids(root) and root)
    job_id = next(
        e["value"] for b in message.blocks if b["type"] == "actions" for e in b["elements"]
    )
    stranger = block_action("imagine:cancel", job_id, user="U2", message_ts=root.ts)
    assert (await bot.interactive(stranger))[0] == 200
    refusal = await slack.wait_for(lambda: slack.api("chat.postEphemeral"))
    assert refusal[0].params["user"] == "U2" and "Only the person" in refusal[0].params["text"]

    owner = block_action("imagine:cancel", job_id, user="U1", message_ts=root.ts)
    assert (await bot.interactive(owner))[0] == 200
    await slack.wait_for(lambda: "Cancelled." in root.text)
    await bot.core.idle()
    assert slack.uploads == {}


async def test_a_retry_that_reaches_another_replica_generates_once(
    slack: FakeSlack, launch: Launch
) -> None:
    first = await launch(db="shared.db")
    second = await launch(db="shared.db")  # another replica on the same database
    mention = message_event("<@UBOT> twin replicas", ts="1700000600.000001", kind="app_mention")
    assert (await first.event(mention, "EvReplica"))[0] == 200
    assert (await second.event(mention, "EvReplica", retry=1))[0] == 200
    await images_in(slack, mention["ts"], 1)
    await barrier(second, "1700000600.000009")
    await first.core.idle()
    assert len(slack.uploads_in(mention["ts"])) == 1
    assert first.provider.calls + second.provider.calls == 2  # type: ignore[attr-defined]


async def test_a_mention_inside_an_image_thread_is_an_edit(
    slack: FakeSlack, launch: Launch
) -> None:
    bot = await launch()
    root, _ = await imagine(bot, "a snowman")
    mention = message_event(
        "<@UBOT> give it a hat", ts="1700000700.000001", thread_ts=root.ts, kind="app_mention"
    )
    twin = message_event("<@UBOT> give it a hat", ts=mention["ts"], thread_ts=root.ts)
    await bot.event(mention, "EvM1")
    await bot.event(twin, "EvM2")
    await images_in(slack, root.ts, 2)
    await barrier(bot, "1700000700.000009")
    first, edit = await bot.turns(root.ts)
    assert edit.parent_id == first.id and edit.prompt == "give it a hat"
    assert len(slack.uploads_in(root.ts)) == 2 and len(slack.roots()) == 1


async def test_a_direct_message_starts_an_image_thread(slack: FakeSlack, launch: Launch) -> None:
    bot = await launch()
    dm = message_event("a tiny robot", ts="1700000800.000001", channel="D1", channel_type="im")
    await bot.event(dm, "EvDm1")
    (image,) = await images_in(slack, dm["ts"], 1)
    await bot.core.idle()
    (turn,) = await bot.turns(dm["ts"], channel="D1")
    assert image == (await bot.image(turn)).data
    reply = message_event(
        "make it red", ts="1700000800.000002", thread_ts=dm["ts"], channel="D1", channel_type="im"
    )
    await bot.event(reply, "EvDm2")
    await images_in(slack, dm["ts"], 2)


async def test_an_error_quoting_what_the_user_typed_cannot_ping_the_channel(
    slack: FakeSlack, launch: Launch
) -> None:
    bot = await launch()
    root, _ = await imagine(bot, "a quiet library")
    # the person typed `--ar <!here>` literally; Slack sends it escaped
    reply = message_event("louder --ar &lt;!here&gt;", ts="1700000900.000001", thread_ts=root.ts)
    assert (await bot.event(reply, "EvPing"))[0] == 200
    error = await slack.wait_for(
        lambda: next((m for m in slack.replies(root.ts) if "aspect ratio" in m.text), None)
    )
    assert "<!here>" not in error.text and "&lt;!here&gt;" in error.text
    assert bot.provider.calls == 1  # type: ignore[attr-defined]
