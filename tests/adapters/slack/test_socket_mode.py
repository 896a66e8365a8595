"""Socket Mode: the same flows, pushed through the fake's websocket; the bot acks envelopes."""

from __future__ import annotations

from tests.adapters.slack.conftest import (
    Launch,
    command_form,
    event_body,
    images_in,
    message_event,
    root_of,
)
from tests.fakes.slack_server import FakeSlack


async def test_slash_command_and_thread_edit_over_socket_mode(
    slack: FakeSlack, launch: Launch
) -> None:
    bot = await launch(socket_mode=True)
    (opened,) = slack.api("apps.connections.open")
    assert opened.authorization == f"Bearer {slack.app_token}"
    assert bot.adapter.port is None  # no HTTP listener in Socket Mode

    form = command_form("a castle on a cloud --ar 3:2")
    form["response_url"] = form["response_url"].replace("{base}", slack.base_url)
    envelope = await slack.send_envelope("slash_commands", form)
    ack = await slack.wait_for(lambda: slack.ack_of(envelope))
    assert not (ack.get("payload") or {}).get("text")  # a plain ack
    root = await root_of(slack, "a castle on a cloud")
    await images_in(slack, root.ts, 1)
    (done,) = slack.completed
    assert done["channel_id"] == "C1" and done["thread_ts"] == root.ts

    reply = message_event("add a dragon", ts="1700000500.000001", thread_ts=root.ts)
    envelope = await slack.send_envelope("events_api", event_body(reply, "EvSock1"))
    await slack.wait_for(lambda: slack.ack_of(envelope))
    # Slack re-sends the same event when it thinks the ack was late
    again = await slack.send_envelope("events_api", event_body(reply, "EvSock1"), retry_attempt=1)
    await slack.wait_for(lambda: slack.ack_of(again))
    await images_in(slack, root.ts, 2)
    await bot.core.idle()

    first, second = await bot.turns(root.ts)
    assert second.parent_id == first.id and second.prompt == "add a dragon"
    assert second.aspect_ratio == "3:2"  # an edit keeps its parent's ratio
    # barrier: a fresh mention is handled after the retry, and the retry made nothing
    mention = message_event("<@UBOT> barrier", ts="1700000500.000009", kind="app_mention")
    await slack.send_envelope("events_api", event_body(mention, "EvSock2"))
    await images_in(slack, mention["ts"], 1)
    await bot.core.idle()
    assert len(slack.uploads_in(root.ts)) == 2
    assert bot.provider.calls == 3  # type: ignore[attr-defined]


async def test_command_misuse_is_answered_in_the_socket_mode_ack(
    slack: FakeSlack, launch: Launch
) -> None:
    await launch(socket_mode=True)
    envelope = await slack.send_envelope("slash_commands", command_form("   "))
    ack = await slack.wait_for(lambda: slack.ack_of(envelope))
    assert "prompt is empty" in ack["payload"]["text"]
    assert slack.api("chat.postMessage") == []
