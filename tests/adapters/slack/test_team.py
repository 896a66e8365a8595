"""Team control on Slack, through real Bolt against the fake Web API: refusals are private,
instant and cost nothing; `/imagine-usage`; `/imagine-admin` and its modal."""

from __future__ import annotations

import asyncio
import json
import logging
import re
from typing import Any

import pytest
from slack_sdk.models.views import View

from bot.policy import Policy
from bot.team import NotAdmin, TeamSettings
from tests.adapters.slack.conftest import (
    TEAM,
    Bot,
    Launch,
    block_action,
    images_in,
    imagine,
    message_event,
    root_of,
    view_submission,
)
from tests.fakes.slack_server import ApiCall, FakeSlack

BLOCKED = "You can't make images with this bot. Ask an admin if you think that's a mistake."
CHANNEL = "I don't make images in this channel. Ask an admin which channels I serve."
IN = r"in (\d+ days?|\d+ h( \d+ min)?|\d+ min)"
USER_DAY = rf"You've made 1 of your 1 image today; more at 00:00 UTC, {IN}\."
WORKSPACE_DAY = rf"This workspace has made 1 of its 1 image today; more at 00:00 UTC, {IN}\."
BUDGET = (
    r"This workspace has used an estimated \$0\.00 of its \$0\.01 monthly budget; "
    rf"more on 1 [A-Z][a-z]+ at 00:00 UTC, {IN}\."
)


def team(admins: set[str] | None = None, **policy: Any) -> TeamSettings:
    return TeamSettings(env=Policy(**policy), admin_users=frozenset(admins or ()))


def warned(sentence: str) -> str:
    """A refusal as the bot words it: the sentence after a warning sign, nothing else."""
    return "^:warning: " + sentence + "$"


def calls(bot: Bot) -> int:
    return int(bot.provider.calls)  # type: ignore[attr-defined]


def public_posts(slack: FakeSlack) -> int:
    return len(slack.api("chat.postMessage"))


async def ephemeral(slack: FakeSlack, count: int = 1) -> ApiCall:
    found = await slack.wait_for(
        lambda: (e := slack.api("chat.postEphemeral")) and len(e) >= count and e
    )
    return found[count - 1]


# --- /imagine refused inside its ack --------------------------------------------------------------


@pytest.mark.parametrize(
    ("settings", "sentence"),
    [
        (team(blocked_users=frozenset({"U1"})), re.escape(BLOCKED)),
        (team(allowed_channels=frozenset({"C2"})), re.escape(CHANNEL)),
        (team(monthly_budget=0.01), BUDGET),
    ],
    ids=["blocked", "channel", "budget"],
)
async def test_imagine_is_refused_in_its_ephemeral_ack_and_calls_no_provider(
    slack: FakeSlack, launch: Launch, settings: TeamSettings, sentence: str
) -> None:
    bot = await launch(team=settings)
    status, body = await bot.command("a lighthouse at dusk")
    assert status == 200
    answer = json.loads(body)
    assert re.match(warned(sentence), answer["text"]), answer["text"]
    assert answer["response_type"] == "ephemeral"
    await bot.core.idle()
    assert public_posts(slack) == 0 and calls(bot) == 0


async def test_the_user_daily_limit_makes_one_image_then_refuses_the_second(
    slack: FakeSlack, launch: Launch
) -> None:
    bot = await launch(team=team(user_daily_limit=1))
    await imagine(bot, "a first lighthouse")
    posted = public_posts(slack)

    status, body = await bot.command("a second lighthouse")
    assert status == 200
    answer = json.loads(body)
    assert re.match(warned(USER_DAY), answer["text"]), answer["text"]
    assert answer["response_type"] == "ephemeral"
    await bot.core.idle()
    assert calls(bot) == 1 and public_posts(slack) == posted

    # another user still has their image today
    status, body = await bot.command("a lighthouse for U2", user="U2")
    assert status == 200 and body == ""
    await images_in(slack, (await root_of(slack, "a lighthouse for U2")).ts, 1)
    await bot.core.idle()
    assert calls(bot) == 2


async def test_a_refusal_after_the_ack_withdraws_the_root_and_tells_only_the_asker(
    slack: FakeSlack, launch: Launch
) -> None:
    """Two requests pass the precheck before either is recorded; the exact check admits one."""
    bot = await launch(team=team(workspace_daily_limit=1))
    slack.posts_open.clear()
    first = await bot.command("a red kite", user="U1", rid="r1")
    second = await bot.command("a blue kite", user="U2", rid="r2")
    assert first == (200, "") and second == (200, "")  # both passed the precheck
    await slack.wait_for(lambda: slack.posts_held >= 2)
    slack.posts_open.set()

    (told,) = await slack.wait_for(lambda: slack.responses)
    assert re.match(warned(WORKSPACE_DAY), told["text"]) and told["response_type"] == "ephemeral"
    await slack.wait_for(lambda: slack.api("chat.delete"))
    made = [m for m in slack.roots("C1") if not m.deleted]
    assert len(made) == 1  # the refused request's root is gone
    await images_in(slack, made[0].ts, 1)
    await bot.core.idle()
    assert calls(bot) == 1
    assert not any("has made" in m.text for m in slack.messages.values() if not m.deleted)


# --- messages, mentions, buttons: chat.postEphemeral ----------------------------------------------


async def test_a_refused_thread_edit_is_told_ephemerally_in_the_thread(
    slack: FakeSlack, launch: Launch
) -> None:
    bot = await launch(team=team(user_daily_limit=1))
    root, _ = await imagine(bot, "a paper boat")
    posted = public_posts(slack)

    status, _ = await bot.event(
        message_event("make it red", ts="1700000100.000001", thread_ts=root.ts), "Ev1"
    )
    assert status == 200
    refusal = await ephemeral(slack)
    assert refusal.params["user"] == "U1" and refusal.params["channel"] == "C1"
    assert refusal.params["thread_ts"] == root.ts
    assert re.match(warned(USER_DAY), refusal.params["text"]), refusal.params["text"]
    await bot.core.idle()
    assert calls(bot) == 1 and public_posts(slack) == posted


async def test_a_refused_mention_is_told_ephemerally_where_it_was(
    slack: FakeSlack, launch: Launch
) -> None:
    bot = await launch(team=team(blocked_users=frozenset({"U2"})))
    mention = message_event(
        f"<@{slack.bot_user_id}> a castle in the clouds",
        ts="1700000200.000001",
        user="U2",
        kind="app_mention",
    )
    assert (await bot.event(mention, "Ev2"))[0] == 200
    refusal = await ephemeral(slack)
    assert refusal.params["user"] == "U2" and refusal.params["channel"] == "C1"
    assert not refusal.params.get("thread_ts")  # in the channel, where the mention is
    assert refusal.params["text"] == f":warning: {BLOCKED}"
    await bot.core.idle()
    assert calls(bot) == 0 and public_posts(slack) == 0


async def test_buttons_and_the_edit_modal_are_refused_ephemerally(
    slack: FakeSlack, launch: Launch
) -> None:
    bot = await launch(team=team(user_daily_limit=1))
    root, _ = await imagine(bot, "a glass whale")
    (turn,) = await bot.turns(root.ts)
    posted = public_posts(slack)

    await bot.interactive(block_action("imagine:reroll", turn.id, user="U1", message_ts=root.ts))
    reroll = await ephemeral(slack, 1)
    assert reroll.params["user"] == "U1" and re.match(warned(USER_DAY), reroll.params["text"])

    await bot.interactive(block_action("imagine:edit", turn.id, user="U1", message_ts=root.ts))
    edit = await ephemeral(slack, 2)
    assert re.match(warned(USER_DAY), edit.params["text"])
    assert slack.api("views.open") == []  # no form to fill in for nothing

    # a modal opened before the limit was reached: Save closes it and says why, privately
    metadata = json.dumps({"turn": turn.id, "channel": "C1", "thread": root.ts})
    status, body = await bot.interactive(view_submission(metadata, "make it gold", user="U1"))
    assert status == 200 and body == ""
    submitted = await ephemeral(slack, 3)
    assert submitted.params["thread_ts"] == root.ts
    assert re.match(warned(USER_DAY), submitted.params["text"])

    await bot.core.idle()
    assert calls(bot) == 1 and public_posts(slack) == posted


# --- /imagine-usage -------------------------------------------------------------------------------


async def usage(bot: Bot, user: str) -> str:
    """`/imagine-usage`: acked at once, answered privately through its response_url."""
    bot.slack.responses.clear()
    status, body = await bot.command("", command="/imagine-usage", user=user)
    assert status == 200 and body == ""
    (answer,) = await bot.slack.wait_for(lambda: bot.slack.responses)
    assert answer["response_type"] == "ephemeral"
    return str(answer["text"])


async def test_usage_for_a_member_shows_their_numbers_only(
    slack: FakeSlack, launch: Launch
) -> None:
    bot = await launch(team=team(user_daily_limit=5))
    await imagine(bot, "a tin robot")
    text = await usage(bot, "U1")
    lines = text.splitlines()
    assert lines[0] == "*Your images*: 1 image today ($0.04), 1 this month ($0.04)."
    assert lines[1].startswith("Your daily limit: 4 left of 5 images; it resets in ")
    assert "*This workspace*" not in text and "DM" not in text
    assert slack.api("conversations.open") == [] and len(slack.completed) == 1  # the image only


async def test_an_admin_of_another_organisation_is_not_an_admin_here(
    slack: FakeSlack, launch: Launch
) -> None:
    slack.admins.add("U9")
    slack.external_users["U9"] = "T0OTHER"  # a Slack Connect guest, admin at home
    bot = await launch()
    text = await usage(bot, "U9")
    assert "*This workspace*" not in text


@pytest.mark.parametrize("how", ["IMAGINE_ADMIN_USERS", "users.info"])
async def test_usage_for_an_admin_adds_the_workspace_and_the_chart_in_a_dm(
    slack: FakeSlack, launch: Launch, how: str
) -> None:
    if how == "users.info":
        slack.admins.add("U9")
    bot = await launch(team=team({"U9"} if how == "IMAGINE_ADMIN_USERS" else None))
    await imagine(bot, "a tin robot")
    text = await usage(bot, "U9")
    assert "*This workspace*: 1 image today ($0.04), 1 image this month ($0.04 estimated)." in text
    assert "1. <@U1> — 1 image, $0.04" in text
    assert text.endswith("I sent you the chart of images per day in a DM.")
    (opened,) = slack.api("conversations.open")
    assert opened.params["users"] == "U9"
    chart = await slack.wait_for(lambda: [c for c in slack.completed if c["channel_id"] == "DU9"])
    assert slack.uploads[chart[0]["files"][0]["id"]].startswith(b"\x89PNG")
    assert calls(bot) == 1
    await open_admin(bot, "U9")  # Slack's answer is remembered for a few minutes
    assert len(slack.api("users.info")) == (1 if how == "users.info" else 0)


async def test_without_users_read_nobody_is_a_slack_admin_and_the_log_says_so_once(
    slack: FakeSlack, launch: Launch, caplog: pytest.LogCaptureFixture
) -> None:
    slack.admins.add("U9")
    slack.users_read_scope = False
    bot = await launch()
    with caplog.at_level(logging.WARNING, logger="adapters.slack.team"):
        first = await usage(bot, "U9")
        slack.responses.clear()
        await bot.command("", command="/imagine-admin", user="U8")
        (second,) = await slack.wait_for(lambda: slack.responses)
    assert "*This workspace*" not in first
    assert second["text"] == f":warning: {NotAdmin('slack').user_message}"
    assert len(slack.api("users.info")) == 2
    (warning,) = [r.getMessage() for r in caplog.records if "users.info" in r.getMessage()]
    assert "users:read" in warning and "IMAGINE_ADMIN_USERS" in warning


# --- /imagine-admin -------------------------------------------------------------------------------


def submission(view: dict[str, Any], values: dict[str, Any], *, user: str) -> dict[str, Any]:
    """What Slack sends on Save: the view as opened (blocks and all) with the form's state."""
    state = {block: {"value": value} for block, value in values.items()}
    return {
        "type": "view_submission",
        "team": {"id": TEAM, "domain": "test"},
        "user": {"id": user, "team_id": TEAM},
        "api_app_id": "A1",
        "trigger_id": "trig.3",
        "view": {**view, "id": "V9", "state": {"values": state}},
    }


def text_input(value: str | None) -> dict[str, Any]:
    return {"type": "plain_text_input", "value": value}


def users(*ids: str) -> dict[str, Any]:
    return {"type": "multi_users_select", "selected_users": list(ids)}


async def open_admin(bot: Bot, user: str = "U9") -> dict[str, Any]:
    before = len(bot.slack.api("views.open"))
    status, body = await bot.command("", command="/imagine-admin", user=user)
    assert status == 200 and body == ""
    opened = await bot.slack.wait_for(
        lambda: (found := bot.slack.api("views.open")) and len(found) > before and found[-1]
    )
    assert opened.params["trigger_id"] == "t.123"
    view = opened.params["view"]
    view = json.loads(view) if isinstance(view, str) else view
    View(**view).validate_json()  # Slack's own rules for a modal and its elements
    return dict(view)


def element(view: dict[str, Any], block_id: str) -> dict[str, Any]:
    return next(b["element"] for b in view["blocks"] if b.get("block_id") == block_id)


async def test_admin_for_a_member_is_refused_privately(slack: FakeSlack, launch: Launch) -> None:
    bot = await launch(team=team({"U9"}))
    status, body = await bot.command("", command="/imagine-admin", user="U1")
    assert status == 200 and body == ""
    (answer,) = await slack.wait_for(lambda: slack.responses)
    assert answer["text"] == f":warning: {NotAdmin('slack').user_message}"
    assert answer["response_type"] == "ephemeral"
    assert slack.api("views.open") == []


async def test_admin_modal_sets_a_limit_and_blocks_a_user_and_the_next_imagine_obeys(
    slack: FakeSlack, launch: Launch
) -> None:
    bot = await launch(team=team({"U9"}))
    view = await open_admin(bot)
    summary = view["blocks"][0]["text"]["text"]
    assert summary.startswith("*Settings in force* (days begin at midnight UTC; $0.04 per image):")
    assert "• User daily limit: no limit (default)" in summary and "Roles" not in summary
    assert "initial_value" not in element(view, "user_daily_limit")

    saved = submission(
        view, {"user_daily_limit": text_input("1"), "blocked_users": users("U2")}, user="U9"
    )
    assert await bot.interactive(saved) == (200, "")
    confirmed = await ephemeral(slack)
    assert confirmed.params["user"] == "U9" and confirmed.params["channel"] == "C1"
    text = confirmed.params["text"]
    assert text.startswith(
        ":white_check_mark: *Saved.* You set the user daily limit to 1 image; blocked <@U2>."
    )
    assert "• User daily limit: 1 image (set here)" in text
    assert "• Blocked: <@U2> (set here)" in text

    _, body = await bot.command("a blocked idea", user="U2")
    assert json.loads(body)["text"] == f":warning: {BLOCKED}"
    await imagine(bot, "a first sketch")
    _, body = await bot.command("a second sketch")
    assert re.match(warned(USER_DAY), json.loads(body)["text"])
    await bot.core.idle()
    assert calls(bot) == 1

    # the form shows what was set here; emptying the limit follows the environment again,
    # and "give a day back" lets U1 make another image today
    again = await open_admin(bot)
    assert element(again, "user_daily_limit")["initial_value"] == "1"
    assert element(again, "blocked_users")["initial_users"] == ["U2"]
    cleared = submission(
        again,
        {
            "user_daily_limit": text_input("1"),
            "blocked_users": users(),
            "day_back": {"type": "users_select", "selected_user": "U1"},
        },
        user="U9",
    )
    assert await bot.interactive(cleared) == (200, "")
    done = (await ephemeral(slack, 2)).params["text"]
    assert done.startswith(
        ":white_check_mark: *Saved.* You unblocked <@U2>; gave <@U1> their day back."
    )
    await imagine(bot, "a sketch after the day back")
    assert calls(bot) == 2

    last = await open_admin(bot)
    emptied = submission(last, {"user_daily_limit": text_input(None)}, user="U9")
    assert await bot.interactive(emptied) == (200, "")
    assert "• User daily limit: no limit (default)" in (await ephemeral(slack, 3)).params["text"]


@pytest.mark.parametrize(
    ("block", "typed", "error"),
    [
        ("user_daily_limit", "lots", "Type a number, like 20 (0: no limit), or leave it empty."),
        ("user_daily_limit", "1.5", "A daily limit is a whole number of images."),
        ("monthly_budget", "-3", "A limit must be a number from 0 (no limit) up."),
    ],
)
async def test_a_bad_number_gets_a_field_error_and_changes_nothing(
    slack: FakeSlack, launch: Launch, block: str, typed: str, error: str
) -> None:
    bot = await launch(team=team({"U9"}))
    view = await open_admin(bot)
    form = {block: text_input(typed), "blocked_users": users("U2")}
    status, body = await bot.interactive(submission(view, form, user="U9"))
    assert status == 200
    assert json.loads(body) == {"response_action": "errors", "errors": {block: error}}
    await asyncio.sleep(0.1)
    assert slack.api("chat.postEphemeral") == []
    status, body = await bot.command("still allowed", user="U2")
    assert body == ""  # nothing was applied, not even the valid part of the form
    await images_in(slack, (await root_of(slack, "still allowed")).ts, 1)
    await bot.core.idle()
