"""Pure conversions: raw Slack payloads in, the core's words out."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from adapters.slack import blocks
from adapters.slack.convert import (
    SHORTCUT_EDIT_IMAGE,
    Asked,
    Destination,
    EditTarget,
    FileRef,
    FlagMisused,
    ImageSource,
    Intent,
    image_files,
    mention_intent,
    message_intent,
    parse_plain_request,
    parse_prompt,
    parse_reframe_value,
    parse_request,
    resolve_model,
    slack_to_plain,
)
from bot.errors import AspectRatioFlag, EmptyPrompt, UnknownAspectRatio
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


PRO = "gemini-3-pro-image-preview"
OFFERED = ("gemini-2.5-flash-image", PRO, "gemini-3.1-flash-image-preview")


def test_model_and_size_flags_come_out_of_the_prompt() -> None:
    assert parse_request(f"<@UBOT> a cat --model {PRO} --size 2k --ar 16:9", BOT) == Asked(
        "a cat", "16:9", PRO, "2K"
    )
    assert parse_request("a --size=4K cat --model=x") == Asked("a cat", None, "x", "4K")
    assert parse_plain_request("a cat\non two lines --size 1K") == Asked(
        "a cat\non two lines", None, None, "1K"
    )
    assert parse_request("a cat") == Asked("a cat") and not Asked("a cat").chose_model
    assert parse_request("--models are not --model-x flags") == Asked(
        "--models are not --model-x flags"
    )


@pytest.mark.parametrize(
    ("text", "sentence"),
    [
        ("a cat --model a --model b", f"Give --model only once, like --model {PRO}."),
        ("a cat --model", f"--model needs a model id after it, like --model {PRO}."),
        ("a cat --model --size 2K", f"--model needs a model id after it, like --model {PRO}."),
        ("a cat --size 2K --size=4K", "Give --size only once, like --size 2K."),
        ("a cat --size=", "--size needs a size after it, like --size 2K."),
    ],
)
def test_a_flag_twice_or_without_a_value_is_one_error(text: str, sentence: str) -> None:
    with pytest.raises(FlagMisused) as caught:
        parse_request(text)
    assert caught.value.user_message == sentence
    with pytest.raises(AspectRatioFlag):  # the same as --ar
        parse_request("a cat --ar 1:1 --ar 16:9")


@pytest.mark.parametrize(
    ("typed", "model"),
    [
        (PRO, PRO),
        ("GEMINI-3-PRO-IMAGE-PREVIEW", PRO),
        ("gemini-3-pro", PRO),
        ("Gemini-3-Pro-Image", PRO),
        ("gemini-3.1", "gemini-3.1-flash-image-preview"),
        ("gemini-2.5", "gemini-2.5-flash-image"),
        ("gemini-3", "gemini-3"),  # two models start so: left for choose_model to refuse
        ("dall-e", "dall-e"),
        ("--", "--"),
    ],
)
def test_a_model_is_its_id_label_or_a_unique_start_of_them(typed: str, model: str) -> None:
    assert resolve_model(typed, OFFERED) == model
    assert resolve_model(None, OFFERED) is None


def test_reframe_values_and_image_sources_round_trip() -> None:
    assert parse_reframe_value("t1|16:9") == ("t1", "16:9")
    assert parse_reframe_value("t1|7:3") is None and parse_reframe_value(None) is None
    assert parse_reframe_value("|1:1") is None
    photo = FileRef("F1", "p.png", "image/png", 10, "https://files.slack.com/p.png")
    source = ImageSource("C1", "1.0", (photo,), "https://hooks.slack.com/x")
    assert ImageSource.load(source.dump()) == source
    assert ImageSource.load("{}") is None and ImageSource.load("nope") is None
    huge = ImageSource("C1", "1.0", (photo,) * 3, None)
    long = FileRef("F2", "n" * 900, "image/png", 10, "https://files.slack.com/" + "u" * 900)
    stub = ImageSource.load(ImageSource("C1", "1.0", (long,) * 3, None).dump())
    assert ImageSource.load(huge.dump()) == huge
    assert stub is not None and stub.files[0] == FileRef("F2", "n" * 100, None, None, None)
    assert len(ImageSource("C1", "1.0", (long,) * 3, None).dump()) <= 3000  # files.info fills in


def test_a_messages_pictures_are_its_image_files() -> None:
    files = [
        {"id": "F1", "name": "a.pdf", "mimetype": "application/pdf"},
        {"id": "F2", "name": "b.png", "mimetype": "image/png"},
        {"id": "F3", "file_access": "check_file_info"},  # Slack Connect: unknown yet
        *({"id": f"F{i}", "name": "c.jpg", "mimetype": "image/jpeg"} for i in range(4, 8)),
    ]
    assert [f.id for f in image_files({"files": files})] == ["F2", "F3", "F4"]
    assert image_files({"text": "no files"}) == () and SHORTCUT_EDIT_IMAGE == "imagine_edit_image"


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
    assert [a["action_id"] for a in actions] == [
        "imagine:reroll",
        "imagine:edit",
        "imagine:delete",
        "imagine:reframe",
    ]
    assert {a["value"] for a in actions if a["type"] == "button"} == {"turn1"}
    assert len(text) <= 3000
    reframe = blocks.done_message(head, "turn1", duration=1, ratio="1:1", made="<!here> · 2K")
    shown = json.dumps(reframe, ensure_ascii=False)
    assert "· 1:1 · &lt;!here&gt; · 2K ·" in shown and "<!here>" not in shown


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
        # the "Edit image" message shortcut (interactivity is on, above)
        "  shortcuts:\n"
        "    # on any message with a picture (⋮ → Edit image): a new image from it\n"
        "    - name: Edit image\n"
        "      type: message\n"
        "      callback_id: imagine_edit_image\n",
        "usage_hint: a panda making latte art --ar 16:9 [--model ID] [--size 2K]",
    ]
    assert [item for item in needed if item not in manifest] == []


def test_error_sentences_are_escaped_wherever_they_are_posted() -> None:
    sentence = 'The model answered without an image: "<!channel> <https://evil|click>"'
    assert "<" not in blocks.error_text(sentence)
    text, content = blocks.failed_message("head", sentence)
    assert "<" not in text and "<" not in json.dumps(content)
