"""Pure conversions: raw Slack payloads in, the core's words out."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from adapters.slack import blocks
from adapters.slack.convert import (
    Destination,
    EditTarget,
    Intent,
    mention_intent,
    message_intent,
    parse_prompt,
    slack_to_plain,
)
from bot.errors import EmptyPrompt, UnknownAspectRatio
from bot.models import ThreadKey
from tests.adapters.slack.conftest import message_event

TEAM, BOT = "T1", "UBOT"


@pytest.mark.parametrize(
    ("raw", "plain"),
    [
        ("<@UBOT> a cat &amp; a dog", "a cat & a dog"),
        ("<@UBOT|imagine-bot> a cat", "a cat"),
        ("draw <@U2|ana> at <#C1|general>", "draw @ana at #general"),
        ("like <https://example.com/x.png|this> &lt;3", "like this <3"),
        ("see <https://example.com>", "see https://example.com"),
        ("<!here> a cat", "@here a cat"),
    ],
)
def test_slack_text_becomes_what_the_person_typed(raw: str, plain: str) -> None:
    assert slack_to_plain(raw, BOT) == plain


def test_prompt_flags_and_errors() -> None:
    assert parse_prompt("<@UBOT> a cat --ar 16:9", BOT) == ("a cat", "16:9")
    assert parse_prompt("a cat") == ("a cat", None)
    with pytest.raises(EmptyPrompt):
        parse_prompt("<@UBOT>  ", BOT)
    with pytest.raises(UnknownAspectRatio):
        parse_prompt("a cat --ar 5:1")


def test_a_thread_reply_may_edit_and_names_its_thread() -> None:
    event = message_event("bluer", ts="2.0", thread_ts="1.0")
    inbound = message_intent(event, TEAM, BOT)
    assert inbound is not None and inbound.intent is Intent.REPLY
    assert inbound.key == ThreadKey("slack", TEAM, "C1", "1.0")
    assert inbound.dedupe_id == "msg:C1:2.0"


@pytest.mark.parametrize(
    "event",
    [
        message_event("top level chatter", ts="1.0"),
        message_event("<@UBOT> in a thread", ts="2.0", thread_ts="1.0"),  # app_mention's job
        message_event("edited", ts="2.0", thread_ts="1.0", subtype="message_changed"),
        message_event("gone", ts="2.0", thread_ts="1.0", subtype="message_deleted"),
        message_event("a bot", ts="2.0", thread_ts="1.0", bot_id="B9"),
        message_event("me", ts="2.0", thread_ts="1.0", user=BOT),
        message_event("joined", ts="2.0", thread_ts="1.0", subtype="channel_join"),
    ],
)
def test_messages_that_are_not_for_the_bot(event: dict) -> None:
    assert message_intent(event, TEAM, BOT) is None


def test_files_and_broadcast_replies_count() -> None:
    file = {"id": "F1", "name": "a.png", "mimetype": "image/png", "size": 10, "url_private": "u"}
    event = message_event("this", ts="2.0", thread_ts="1.0", files=[file])
    inbound = message_intent(event, TEAM, BOT)
    assert inbound is not None and inbound.files[0].mimetype == "image/png"
    broadcast = message_event("also", ts="3.0", thread_ts="1.0", subtype="thread_broadcast")
    assert message_intent(broadcast, TEAM, BOT) is not None


def test_direct_messages_start_threads_without_a_mention() -> None:
    dm = message_event("a cat", ts="5.0", channel="D1", channel_type="im")
    inbound = message_intent(dm, TEAM, BOT)
    assert inbound is not None and inbound.intent is Intent.NEW and inbound.thread_ts == "5.0"


def test_mentions_start_on_themselves_or_join_their_thread() -> None:
    top = mention_intent(message_event("<@UBOT> a cat", ts="5.0", kind="app_mention"), TEAM, BOT)
    assert top is not None and top.intent is Intent.NEW and top.thread_ts == "5.0"
    inner = message_event("<@UBOT> bluer", ts="6.0", thread_ts="5.0", kind="app_mention")
    nested = mention_intent(inner, TEAM, BOT)
    assert nested is not None and nested.intent is Intent.REPLY_OR_NEW
    assert nested.thread_ts == "5.0"


def test_destination_and_modal_metadata_round_trip() -> None:
    destination = Destination("C1", "1.0", "1.0", "1.0", "U1", TEAM)
    assert Destination.from_json(destination.to_json()) == destination
    assert destination.status_is_root
    assert Destination.from_json(None) is None and Destination.from_json({"x": 1}) is None
    target = EditTarget("turn1", "C1", "1.0")
    assert EditTarget.load(target.dump()) == target
    assert EditTarget.load("not json") is None and EditTarget.load('{"turn": 1}') is None


def test_blocks_escape_prompts_and_stay_within_limits() -> None:
    head = blocks.header("U1", "imagine", "<!channel> & " + "x" * 5000)
    assert "<!channel>" not in head and "&amp;" in head and len(head) <= 3000
    text, content = blocks.done_message(head, "turn1", duration=1.234, ratio="1:1")
    actions = [e for b in content if b["type"] == "actions" for e in b["elements"]]
    assert [a["action_id"] for a in actions] == ["imagine:reroll", "imagine:edit", "imagine:delete"]
    assert {a["value"] for a in actions} == {"turn1"} and len(text) <= 3000


def test_the_manifest_is_the_whole_slack_side_setup() -> None:
    manifest = (Path(__file__).parents[3] / "adapters" / "slack" / "manifest.yml").read_text()
    needed = [
        "command: /imagine",
        *("- " + s for s in ("commands", "chat:write", "files:read", "files:write")),
        *("- " + s for s in ("app_mentions:read", "channels:history", "groups:history")),
        "- im:history",
        *("command: " + c for c in ("/imagine-usage", "/imagine-admin")),
        "- users:read",  # Slack's workspace admins and owners are imagine-bot admins
        "- im:write",  # the DM that carries an admin's usage chart
        *("- " + e for e in ("app_mention", "message.channels", "message.groups", "message.im")),
        "interactivity:\n    is_enabled: true",
        "socket_mode_enabled: true",
        "messages_tab_enabled: true",
    ]
    assert [item for item in needed if item not in manifest] == []


def test_error_sentences_are_escaped_wherever_they_are_posted() -> None:
    sentence = 'The model answered without an image: "<!channel> <https://evil|click>"'
    assert "<" not in blocks.error_text(sentence)
    text, content = blocks.failed_message("head", sentence)
    assert "<" not in text and "<" not in json.dumps(content)
