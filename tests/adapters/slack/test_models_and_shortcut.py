"""Issue #12 on Slack, through real Bolt against the fake Web API: `--model` / `--size`, the
result line naming what made the image, 📐 aspect ratio on every result, and the "Edit image"
message shortcut (a new image thread from any message's picture)."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest
from slack_sdk.models.blocks import ActionsBlock, Block, StaticSelectElement
from slack_sdk.models.views import View

from bot.core import reframe_instruction
from bot.models import ASPECT_RATIOS
from bot.policy import Policy
from bot.team import TeamSettings
from tests.adapters.slack.conftest import (
    BOT,
    MODEL,
    Bot,
    Launch,
    images_in,
    imagine,
    message_event,
    message_shortcut,
    nexconn_provider,
    root_of,
    select_action,
    view_submission,
)
from tests.fakes.nexconn_server import CHAT, GENERATIONS, FakeNexconn
from tests.fakes.recording_provider import RecordingProvider
from tests.fakes.scripted_json_server import png
from tests.fakes.slack_server import ApiCall, FakeSlack, Message

PRO = "gemini-3-pro-image-preview"
FLASH_31 = "gemini-3.1-flash-image-preview"
USAGE = (
    "Usage: `/imagine a panda making latte art --ar 16:9 --model ID --size 2K`\n"
    "Models: `gemini-2.5-flash-image` (Gemini 2.5 Flash Image, default), "
    "`gemini-3-pro-image-preview` (Gemini 3 Pro Image, --size 1K/2K/4K)"
)
USER_DAY = r"You've made 1 of your 1 image today; more at 00:00 UTC, in .+\."
NO_IMAGE = ":warning: That message has no image to edit."


def recorded(bot: Bot) -> RecordingProvider:
    assert isinstance(bot.provider, RecordingProvider)
    return bot.provider


def actions_of(message: Message) -> list[dict[str, Any]]:
    return [e for b in message.blocks if b["type"] == "actions" for e in b["elements"]]


async def done(slack: FakeSlack, message: Message) -> Message:
    return await slack.wait_for(lambda: "Done in" in json.dumps(message.blocks) and message)


def done_line(message: Message) -> str:
    return next(
        e["text"]
        for b in message.blocks
        if b["type"] == "context"
        for e in b["elements"]
        if "Done in" in e["text"]
    )


async def ephemeral(slack: FakeSlack, count: int = 1) -> ApiCall:
    found = await slack.wait_for(
        lambda: (e := slack.api("chat.postEphemeral")) and len(e) >= count and e
    )
    return found[count - 1]


# --- --model and --size ---------------------------------------------------------------------------


async def test_model_and_size_reach_the_provider_the_caption_says_so_and_the_thread_keeps_them(
    slack: FakeSlack, launch: Launch, nexconn: FakeNexconn
) -> None:
    bot = await launch(nexconn_provider(nexconn), models=(MODEL, PRO))
    status, body = await bot.command(f"a neon sign that says OPEN --model {PRO} --size 2K")
    assert (status, body) == (200, "")
    root = await root_of(slack, "a neon sign that says OPEN")
    await images_in(slack, root.ts, 1)
    (first,) = [r for r in nexconn.requests if r.path == GENERATIONS]
    assert first.json["model"] == "gemini-3.0-pro-image-preview"  # Nexconn's id for 3 Pro
    assert first.json["image_config"] == {"aspect_ratio": "1:1", "image_size": "2K"}
    assert "--model" not in first.json["prompt"] and "--size" not in first.json["prompt"]
    final = await done(slack, root)
    assert re.fullmatch(
        r":white_check_mark: Done in \d+\.\d s · 1:1 · Gemini 3 Pro Image · 2K · via Nexconn"
        r" · the image is in the thread",
        done_line(final),
    ), done_line(final)
    await bot.core.idle()

    # a plain reply in the thread continues on 3 Pro at 2K
    reply = message_event("make the sign blue", ts="1700000100.000001", thread_ts=root.ts)
    assert (await bot.event(reply, "Ev1"))[0] == 200
    await images_in(slack, root.ts, 2)
    (edit,) = [r for r in nexconn.requests if r.path == CHAT]
    assert edit.json["model"] == "gemini-3.0-pro-image-preview"
    assert edit.json["image_config"]["image_size"] == "2K"
    await bot.core.idle()
    second = (await bot.turns(root.ts))[-1]
    assert (second.model, second.size, second.provider) == (PRO, "2K", "nexconn")
    status_message = next(m for m in slack.replies(root.ts) if "make the sign blue" in m.text)
    assert "Gemini 3 Pro Image · 2K · via Nexconn" in done_line(await done(slack, status_message))


async def test_a_mention_takes_a_model_prefix_and_a_lowercase_size(
    slack: FakeSlack, launch: Launch
) -> None:
    bot = await launch(RecordingProvider(), models=(MODEL, PRO))
    mention = message_event(
        f"<@{BOT}> a fox in the snow --model gemini-3-pro --size 4k",
        ts="1700000200.000001",
        kind="app_mention",
    )
    assert (await bot.event(mention, "Ev2"))[0] == 200
    await images_in(slack, "1700000200.000001", 1)
    await bot.core.idle()
    (request,) = recorded(bot).requests
    assert (request.model, request.size, request.prompt) == (PRO, "4K", "a fox in the snow")


async def test_without_flags_the_default_model_is_named(slack: FakeSlack, launch: Launch) -> None:
    bot = await launch(RecordingProvider())
    root, _ = await imagine(bot, "a plain teapot")
    (request,) = recorded(bot).requests
    assert (request.model, request.size) == (MODEL, None)
    assert "· 1:1 · Gemini 2.5 Flash Image · via the offline demo ·" in done_line(
        await done(slack, root)
    )


@pytest.mark.parametrize(
    ("flags", "sentence"),
    [
        (
            f"--model {PRO} --size 8K",
            "Gemini 3 Pro Image can't make 8K images; it offers 1K, 2K, 4K.",
        ),
        (
            "--size 2K",
            "Gemini 2.5 Flash Image can't make 2K images; it offers only its standard size (1K).",
        ),
        (
            f"--model {FLASH_31}",
            f"This bot doesn't offer '{FLASH_31}'. Choose one of: {MODEL}, {PRO}.",
        ),
        ("--model gemini", f"This bot doesn't offer 'gemini'. Choose one of: {MODEL}, {PRO}."),
        (f"--model {PRO} --model {MODEL}", f"Give --model only once, like --model {PRO}."),
        ("--model", f"--model needs a model id after it, like --model {PRO}."),
        ("--size --ar 16:9", "--size needs a size after it, like --size 2K."),
    ],
    ids=["8K", "size-on-flash", "not-offered", "ambiguous", "model-twice", "no-model", "no-size"],
)
async def test_a_model_or_size_that_cannot_run_is_refused_in_the_ack(
    slack: FakeSlack, launch: Launch, flags: str, sentence: str
) -> None:
    bot = await launch(RecordingProvider(), models=(MODEL, PRO))
    status, body = await bot.command(f"a lighthouse {flags}")
    assert status == 200
    answer = json.loads(body)
    assert answer["text"] == f":warning: {sentence}\n{USAGE}"
    assert answer.get("response_type") == "ephemeral"
    await bot.core.idle()
    assert recorded(bot).requests == [] and slack.api("chat.postMessage") == []


async def test_an_edit_cannot_switch_the_threads_model(slack: FakeSlack, launch: Launch) -> None:
    bot = await launch(RecordingProvider(), models=(MODEL, PRO))
    root, _ = await imagine(bot, "a paper crane")
    reply = message_event(f"bluer --model {PRO}", ts="1700000300.000001", thread_ts=root.ts)
    assert (await bot.event(reply, "Ev3"))[0] == 200
    said = await slack.wait_for(
        lambda: next((m for m in slack.replies(root.ts) if "keeps the model" in m.text), None)
    )
    assert said.text.startswith(":warning: An image thread keeps the model and size")
    await bot.core.idle()
    assert len(recorded(bot).requests) == 1


# --- 📐 aspect ratio ------------------------------------------------------------------------------


def ratio_select(message: Message) -> dict[str, Any]:
    (select,) = [e for e in actions_of(message) if e["type"] == "static_select"]
    return select


async def test_every_result_has_an_aspect_ratio_menu_that_recomposes_in_the_thread(
    slack: FakeSlack, launch: Launch
) -> None:
    bot = await launch(RecordingProvider())
    root, first = await imagine(bot, "a red cup on a table")
    final = await done(slack, root)
    (turn,) = await bot.turns(root.ts)

    # Slack's own models accept the block as it was sent
    (actions,) = [b for b in final.blocks if b["type"] == "actions"]
    parsed = Block.parse(actions)
    assert isinstance(parsed, ActionsBlock)
    parsed.validate_json()
    assert parsed.to_dict() == actions
    assert any(isinstance(e, StaticSelectElement) for e in parsed.elements)

    select = ratio_select(final)
    assert select["action_id"] == "imagine:reframe"
    assert "Aspect ratio" in select["placeholder"]["text"]
    options = [o["text"]["text"] for o in select["options"]]
    assert options == [r for r in ASPECT_RATIOS if r != "1:1"] and len(options) == 9
    assert {o["value"] for o in select["options"]} == {f"{turn.id}|{r}" for r in options}

    wide = next(o["value"] for o in select["options"] if o["text"]["text"] == "16:9")
    status, body = await bot.interactive(select_action("imagine:reframe", wide, user="U2"))
    assert (status, body) == (200, "")
    images = await images_in(slack, root.ts, 2)
    await bot.core.idle()
    request = recorded(bot).requests[-1]
    assert request.aspect_ratio == "16:9"
    assert request.prompt == reframe_instruction("16:9")
    assert [h.result.data for h in request.history] == [first]  # the picture it recomposes
    reframed = (await bot.turns(root.ts))[-1]
    assert reframed.aspect_ratio == "16:9" and reframed.user_id == "U2"
    assert images[1] == (await bot.image(reframed)).data
    status_message = next(
        m for m in slack.replies(root.ts) if "changed the aspect ratio to 16:9" in m.text
    )
    assert status_message.text.startswith("<@U2> changed the aspect ratio to 16:9")
    again = ratio_select(await done(slack, status_message))  # 📐 on the new result too
    assert "16:9" not in [o["text"]["text"] for o in again["options"]]


async def test_the_aspect_ratio_menu_is_refused_privately_by_a_daily_limit(
    slack: FakeSlack, launch: Launch
) -> None:
    bot = await launch(RecordingProvider(), team=TeamSettings(env=Policy(user_daily_limit=1)))
    root, _ = await imagine(bot, "a glass whale")
    (turn,) = await bot.turns(root.ts)
    posted = len(slack.api("chat.postMessage"))
    value = f"{turn.id}|9:16"
    await bot.interactive(select_action("imagine:reframe", value, user="U1", message_ts=root.ts))
    refusal = await ephemeral(slack)
    assert refusal.params["user"] == "U1" and refusal.params["channel"] == "C1"
    assert re.fullmatch(":warning: " + USER_DAY, refusal.params["text"]), refusal.params["text"]
    await bot.core.idle()
    assert len(recorded(bot).requests) == 1 and len(slack.api("chat.postMessage")) == posted


# --- the "Edit image" message shortcut ------------------------------------------------------------


def picture_message(
    slack: FakeSlack, *files: dict[str, Any], ts: str = "1700000400.000001"
) -> dict:
    return message_event("look at this", ts=ts, user="U7", files=list(files))


def opened_view(slack: FakeSlack) -> dict[str, Any]:
    (opened,) = slack.api("views.open")
    assert opened.params["trigger_id"] == "trig.shortcut"
    view = opened.params["view"]
    return json.loads(view) if isinstance(view, str) else view


async def test_edit_image_opens_a_modal_and_makes_a_new_thread_from_the_picture(
    slack: FakeSlack, launch: Launch
) -> None:
    bot = await launch(RecordingProvider(), models=(MODEL, PRO))
    picture = png((10, 120, 240), (32, 24))
    message = picture_message(slack, slack.host_file("photo.png", picture))
    status, body = await bot.interactive(message_shortcut(message, user="U1"))
    assert (status, body) == (200, "")
    await slack.wait_for(lambda: slack.api("views.open"))
    view = opened_view(slack)
    View(**view).validate_json()  # Slack's model of a view accepts it
    assert view["callback_id"] == "imagine:image_modal" and view["title"]["text"] == "Edit image"
    assert "What should I make of this image?" in json.dumps(view)
    assert recorded(bot).requests == [] and slack.downloads == []  # nothing until submitted

    submission = view_submission(
        view["private_metadata"],
        f"turn it into a watercolor postcard --ar 3:2 --model {PRO}",
        user="U1",
        callback_id="imagine:image_modal",
    )
    status, body = await bot.interactive(submission)
    assert (status, body) == (200, "")
    root = await root_of(slack, "turn it into a watercolor postcard")
    assert root.text.startswith("<@U1> imagined:") and root.thread_ts is None
    await images_in(slack, root.ts, 1)
    await bot.core.idle()
    (request,) = recorded(bot).requests
    assert [r.data for r in request.references] == [picture]
    assert (request.aspect_ratio, request.model) == ("3:2", PRO)
    assert request.prompt == "turn it into a watercolor postcard"
    (turn,) = await bot.turns(root.ts)
    assert turn.user_id == "U1"
    assert {d.authorization for d in slack.downloads} == {f"Bearer {slack.bot_token}"}


async def test_edit_image_on_a_message_without_a_picture_says_so_privately(
    slack: FakeSlack, launch: Launch
) -> None:
    bot = await launch(RecordingProvider())
    pdf = slack.host_file("notes.pdf", b"%PDF-1.4 ...", mimetype="application/pdf")
    for message in [
        message_event("just words", ts="1700000500.000001"),
        picture_message(slack, pdf),
    ]:
        slack.responses.clear()
        await bot.interactive(message_shortcut(message))
        (answer,) = await slack.wait_for(lambda: slack.responses)
        assert answer == {"text": NO_IMAGE, "response_type": "ephemeral"}
    await bot.core.idle()
    assert slack.api("views.open") == [] and recorded(bot).requests == []


async def test_edit_image_is_refused_before_the_modal_by_team_control(
    slack: FakeSlack, launch: Launch
) -> None:
    bot = await launch(
        RecordingProvider(), team=TeamSettings(env=Policy(blocked_users=frozenset({"U1"})))
    )
    message = picture_message(slack, slack.host_file("photo.png", png()))
    await bot.interactive(message_shortcut(message, user="U1"))
    (answer,) = await slack.wait_for(lambda: slack.responses)
    assert answer["text"].startswith(":warning: You can't make images with this bot.")
    assert answer["response_type"] == "ephemeral"
    await bot.core.idle()
    assert slack.api("views.open") == [] and recorded(bot).requests == []


async def test_a_picture_that_slack_serves_as_a_login_page_is_refused_privately(
    slack: FakeSlack, launch: Launch
) -> None:
    """Without `files:read` the download is Slack's HTML page: a clear error, no provider."""
    bot = await launch(RecordingProvider())
    message = picture_message(slack, slack.host_file("photo.png", png()))
    await bot.interactive(message_shortcut(message))
    await slack.wait_for(lambda: slack.api("views.open"))
    slack.files_read_scope = False
    metadata = opened_view(slack)["private_metadata"]
    await bot.interactive(
        view_submission(metadata, "make it a poster", user="U1", callback_id="imagine:image_modal")
    )
    (answer,) = await slack.wait_for(lambda: slack.responses)
    sentence = "“photo.png” isn't an image. Attach a PNG, JPEG, WebP, HEIC or HEIF file."
    assert answer == {"text": f":warning: {sentence}", "response_type": "ephemeral"}
    await bot.core.idle()
    assert recorded(bot).requests == [] and slack.api("chat.postMessage") == []


async def test_edit_image_refuses_a_picture_too_large_before_the_modal(
    slack: FakeSlack, launch: Launch
) -> None:
    bot = await launch(RecordingProvider())
    big = slack.host_file("huge.png", png())
    big["size"] = 50 * 1024 * 1024
    await bot.interactive(message_shortcut(picture_message(slack, big)))
    (answer,) = await slack.wait_for(lambda: slack.responses)
    assert answer["text"] == ":warning: That image is 50.0 MB; the limit is 7.0 MB per image."
    assert slack.api("views.open") == [] and slack.downloads == []


async def test_the_edit_modal_refuses_another_model_in_its_field(
    slack: FakeSlack, launch: Launch
) -> None:
    bot = await launch(RecordingProvider(), models=(MODEL, PRO))
    root, _ = await imagine(bot, "a paper crane")
    (turn,) = await bot.turns(root.ts)
    metadata = json.dumps({"turn": turn.id, "channel": "C1", "thread": root.ts})
    status, body = await bot.interactive(view_submission(metadata, "gold --size 2K", user="U1"))
    assert status == 200
    answer = json.loads(body)
    assert answer["response_action"] == "errors"
    assert answer["errors"]["instruction"].startswith("An image thread keeps the model and size")
    await bot.core.idle()
    assert len(recorded(bot).requests) == 1


async def test_the_aspect_ratio_menu_and_a_shortcut_modal_work_after_a_restart(
    slack: FakeSlack, launch: Launch
) -> None:
    before = await launch(RecordingProvider(), db="shared.db")
    root, _ = await imagine(before, "a paper boat")
    (turn,) = await before.turns(root.ts)
    picture = png((250, 200, 0))
    await before.interactive(
        message_shortcut(picture_message(slack, slack.host_file("sun.png", picture)))
    )
    await slack.wait_for(lambda: slack.api("views.open"))
    metadata = opened_view(slack)["private_metadata"]
    await before.close()

    after = await launch(RecordingProvider(), db="shared.db")
    await after.interactive(select_action("imagine:reframe", f"{turn.id}|4:5", user="U1"))
    await images_in(slack, root.ts, 2)
    await after.core.idle()
    assert recorded(after).requests[-1].aspect_ratio == "4:5"

    submission = view_submission(
        metadata, "a sun on a flag", user="U1", callback_id="imagine:image_modal"
    )
    assert await after.interactive(submission) == (200, "")
    made = await root_of(slack, "a sun on a flag")
    await images_in(slack, made.ts, 1)
    await after.core.idle()
    assert [r.data for r in recorded(after).requests[-1].references] == [picture]
