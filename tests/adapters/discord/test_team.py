"""Team control on Discord, through the real discord.py against the fake: refusals inside the
acknowledgement (ephemeral, no provider call), `/usage`, `/imagine-admin` and its
permission, and the commands' registration shape."""

from __future__ import annotations

import asyncio
import io
import re
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from PIL import Image as PILImage

from adapters.discord.team import CHART_FILENAME
from bot.policy import Overrides, Scope
from bot.providers.nexconn import NexconnProvider
from tests.fakes.discord_server import (
    MANAGE_GUILD,
    MEMBER_PERMISSIONS,
    Call,
    FakeDiscord,
    User,
)
from tests.fakes.scripted_json_server import png

from .conftest import (
    RunningBot,
    TimedNexconn,
    assert_nothing_leaked,
    custom_ids,
    imagine,
    is_callback,
    is_original_edit,
    run_bot,
)
from .discord_spec import check_command

ADMIN = MEMBER_PERMISSIONS | MANAGE_GUILD
EPHEMERAL = 64
IN = r"in (\d+ h( \d+ min)?|\d+ min)"
"""How long until midnight, as the sentences say it (`3 h 12 min`, `45 min`)."""

BLOCKED = "You can't make images with this bot. Ask an admin if you think that's a mistake."
CHANNEL = "I don't make images in this channel. Ask an admin which channels I serve."
ROLE = "Making images here needs a role this server allows. Ask an admin for access."
NOT_ADMIN = (
    "Only admins can see and change the bot's settings here: members with Manage Server "
    "and the users the bot's operator named."
)
USER_DAILY = rf"You've made 1 of your 1 image today; more at 00:00 UTC, {IN}\."
SERVER_DAILY = rf"This server has made 1 of its 1 image today; more at 00:00 UTC, {IN}\."

Launch = Callable[..., Awaitable[RunningBot]]


def budget_sentence() -> str:
    """The budget refusal after one $0.039 image of a $0.05 budget, this month."""
    today = datetime.now(UTC).date()
    following = (today.replace(day=1) + timedelta(days=32)).replace(day=1)
    return (
        r"This server has used an estimated \$0\.04 of its \$0\.05 monthly budget; "
        rf"more on 1 {following:%B} at 00:00 UTC, in (\d+ days?|\d+ h( \d+ min)?|\d+ min)\."
    )


@pytest.fixture
async def launch(
    fake: FakeDiscord, db_url: str, provider: NexconnProvider
) -> AsyncIterator[Launch]:
    """Start the bot with team-control environment variables (stopped after the test)."""
    running: list[RunningBot] = []

    async def start(**env: str) -> RunningBot:
        variables: dict[str, Any] = dict(env)
        bot = await run_bot(fake, db_url, provider, **variables)
        running.append(bot)
        return bot

    yield start
    for bot in running:
        await bot.stop()
    assert_nothing_leaked(fake)


@pytest.fixture
def bob(fake: FakeDiscord) -> User:
    return fake.user("bob")


@pytest.fixture
def carol(fake: FakeDiscord) -> User:
    """Has Manage Server in the tests that pass `permissions=ADMIN`."""
    return fake.user("carol")


# --- helpers ---------------------------------------------------------------------------------


async def answer(fake: FakeDiscord, payload: dict[str, Any]) -> Call:
    """Send an interaction; its callback (the acknowledgement)."""
    start = len(fake.calls)
    await fake.dispatch("INTERACTION_CREATE", payload)
    return await fake.wait_for(is_callback(payload["token"]), start=start)


def refusal(callback: Call) -> str:
    """The text of an ephemeral message sent as the acknowledgement itself."""
    assert callback.json["type"] == 4, callback.json
    assert callback.json["data"]["flags"] == EPHEMERAL
    text = callback.json["data"]["content"]
    assert isinstance(text, str)
    return text


async def private_answer(fake: FakeDiscord, payload: dict[str, Any]) -> Call:
    """An ephemeral defer, then the answer as the edit of that private message."""
    start = len(fake.calls)
    callback = await answer(fake, payload)
    assert callback.json == {"type": 5, "data": {"flags": EPHEMERAL}}
    edit = await fake.wait_for(is_original_edit(payload["token"]), start=start)
    message = fake.original_message(payload["token"])
    assert message is not None and message["flags"] & EPHEMERAL
    return edit


def command(
    fake: FakeDiscord,
    user: User,
    name: str,
    options: list[dict[str, Any]] | None = None,
    resolved: dict[str, Any] | None = None,
    **where: Any,
) -> dict[str, Any]:
    """A slash command as Discord sends it (`where`: permissions, roles, channel)."""
    data: dict[str, Any] = {
        "id": str(fake.new_id()),
        "name": name,
        "type": 1,
        "options": options or [],
    }
    if resolved:
        data["resolved"] = resolved
    return fake.interaction(2, data, user, **where)


def admin(
    fake: FakeDiscord,
    user: User,
    sub: str,
    *options: tuple[str, int, str],
    resolved: dict[str, Any] | None = None,
    permissions: int = ADMIN,
) -> dict[str, Any]:
    """`/imagine-admin <sub>` with (name, type, value) options."""
    subcommand = {
        "name": sub,
        "type": 1,
        "options": [{"name": n, "type": t, "value": v} for n, t, v in options],
    }
    return command(
        fake, user, "imagine-admin", [subcommand], resolved=resolved, permissions=permissions
    )


def resolved_user(user: User) -> dict[str, Any]:
    return {"users": {str(user.id): user.payload()}}


async def refused_imagine(
    fake: FakeDiscord, nexconn: TimedNexconn, user: User, **where: Any
) -> str:
    """`/imagine` that must be refused in its acknowledgement, with no provider call and
    nothing else sent for it; the sentence."""
    calls = len(nexconn.requests)
    payload = fake.slash(user, "a red bicycle", **where)
    text = refusal(await answer(fake, payload))
    assert len(nexconn.requests) == calls
    assert [c for c in fake.calls if payload["token"] in c.path] == fake.find(
        is_callback(payload["token"])
    )
    return text


def content(call: Call) -> str:
    text = call.json.get("content")
    assert isinstance(text, str), call.json
    return text


# --- refusals --------------------------------------------------------------------------------

CASES = ["blocked user", "channel", "role", "user daily", "server daily", "monthly budget"]


@pytest.mark.parametrize("rule", CASES)
async def test_imagine_is_refused_for_each_rule_privately_at_once_without_a_provider_call(
    rule: str,
    launch: Launch,
    fake: FakeDiscord,
    nexconn: TimedNexconn,
    alice: User,
    bob: User,
) -> None:
    env, made_first, expected = {
        "blocked user": ({"IMAGINE_BLOCKED_USERS": str(alice.id)}, None, re.escape(BLOCKED)),
        "channel": ({"IMAGINE_ALLOWED_CHANNELS": str(fake.new_id())}, None, re.escape(CHANNEL)),
        "role": ({"IMAGINE_ALLOWED_ROLES": str(fake.role("artists"))}, None, re.escape(ROLE)),
        "user daily": ({"IMAGINE_USER_DAILY_LIMIT": "1"}, alice, USER_DAILY),
        "server daily": ({"IMAGINE_WORKSPACE_DAILY_LIMIT": "1"}, bob, SERVER_DAILY),
        "monthly budget": ({"IMAGINE_MONTHLY_BUDGET": "0.05"}, bob, budget_sentence()),
    }[rule]
    await launch(**env)
    if made_first is not None:
        await imagine(fake, made_first, "the one image there was room for")
    assert re.fullmatch(expected, await refused_imagine(fake, nexconn, alice))


async def test_an_allowed_user_passes_the_channel_allow_list_and_a_role_is_read_from_member_roles(
    launch: Launch, fake: FakeDiscord, nexconn: TimedNexconn, alice: User, bob: User
) -> None:
    artists = fake.role("artists")
    await launch(
        IMAGINE_ALLOWED_CHANNELS=str(fake.new_id()),
        IMAGINE_ALLOWED_USERS=str(alice.id),
        IMAGINE_ALLOWED_ROLES=str(artists),
    )
    _, delivered = await imagine(fake, alice, "a kite over the dunes")
    assert delivered.files and len(nexconn.requests) == 1
    assert await refused_imagine(fake, nexconn, bob, roles=[artists]) == CHANNEL


async def test_allowing_a_channel_allows_its_threads(
    launch: Launch, fake: FakeDiscord, nexconn: TimedNexconn, alice: User
) -> None:
    design_lab = fake.new_id()
    await launch(IMAGINE_ALLOWED_CHANNELS=str(design_lab))
    thread = fake.new_id()
    _, delivered = await imagine(
        fake, alice, "a kite over the dunes", channel_id=thread, thread_of=design_lab
    )
    assert delivered.files and len(nexconn.requests) == 1
    elsewhere = fake.new_id()
    assert (
        await refused_imagine(fake, nexconn, alice, channel_id=fake.new_id(), thread_of=elsewhere)
        == CHANNEL
    )


async def test_a_member_with_an_allowed_role_makes_images_and_one_without_is_refused(
    launch: Launch, fake: FakeDiscord, nexconn: TimedNexconn, alice: User, bob: User
) -> None:
    artists, other = fake.role("artists"), fake.role("gamers")
    await launch(IMAGINE_ALLOWED_ROLES=str(artists))
    _, delivered = await imagine(fake, alice, "a kite over the dunes", roles=[other, artists])
    assert delivered.files
    assert await refused_imagine(fake, nexconn, bob, roles=[other]) == ROLE


async def test_a_refused_reroll_edit_button_and_reply_make_nothing(
    launch: Launch, fake: FakeDiscord, nexconn: TimedNexconn, alice: User
) -> None:
    await launch(IMAGINE_USER_DAILY_LIMIT="1")
    payload, _ = await imagine(fake, alice, "a lighthouse at dusk")
    message = fake.original_message(payload["token"])
    assert message is not None
    reroll_id, edit_id, _ = custom_ids(message)

    press = fake.button(alice, message, reroll_id)
    assert re.fullmatch(USER_DAILY, refusal(await answer(fake, press)))
    press = fake.button(alice, message, edit_id)  # refused before the modal opens
    assert re.fullmatch(USER_DAILY, refusal(await answer(fake, press)))
    picture = fake.attachment("cat.png", png((10, 200, 10)), "image/png")
    target = fake.user_message(fake.user("bob"), "my cat", attachments=[picture])
    menu = fake.context_menu(alice, target)  # "Edit image" on anyone's picture: no modal
    assert re.fullmatch(USER_DAILY, refusal(await answer(fake, menu)))

    reply = fake.user_message(alice, "make it night", reply_to=message)
    start = len(fake.calls)
    await fake.dispatch("MESSAGE_CREATE", reply)
    answered = await fake.wait_for(
        lambda c: c.method == "POST" and c.path == f"/channels/{fake.channel_id}/messages",
        start=start,
    )
    assert re.fullmatch(USER_DAILY, content(answered))
    assert str(answered.json["message_reference"]["message_id"]) == reply["id"]
    assert not answered.files
    assert len(nexconn.requests) == 1


async def test_an_edit_modal_submitted_after_the_day_ran_out_is_refused(
    launch: Launch, fake: FakeDiscord, nexconn: TimedNexconn, alice: User
) -> None:
    await launch(IMAGINE_USER_DAILY_LIMIT="2")
    payload, _ = await imagine(fake, alice, "a lighthouse at dusk")
    message = fake.original_message(payload["token"])
    assert message is not None
    _, edit_id, _ = custom_ids(message)
    modal = await answer(fake, fake.button(alice, message, edit_id))
    assert modal.json["type"] == 9  # one image left: the modal opens
    await imagine(fake, alice, "a second picture meanwhile")

    submit = fake.modal_submit(
        alice, modal.json["data"]["custom_id"], {"instruction": "make it night"}, message
    )
    text = refusal(await answer(fake, submit))
    assert re.fullmatch(USER_DAILY.replace("1 of your 1 image", "2 of your 2 images"), text)
    assert len(nexconn.requests) == 2


async def test_a_refusal_that_races_the_defer_replaces_the_thinking_message_privately(
    launch: Launch, fake: FakeDiscord, nexconn: TimedNexconn, alice: User
) -> None:
    """The quick check passed, then another image used the day up while this one's
    reference downloaded: recording the job refuses, exactly, and the user is told."""
    await launch(IMAGINE_USER_DAILY_LIMIT="1")
    fake.cdn_gate = gate = asyncio.Event()
    photo = fake.attachment("cat.png", png((200, 120, 40)), "image/png")
    slow = fake.slash(alice, "the cat as an astronaut", images=[photo])
    try:
        assert (await answer(fake, slow)).json["type"] == 5
        async with asyncio.timeout(10):
            while not fake.downloads:  # its reference is downloading, held by the CDN
                await asyncio.sleep(0.01)
        await imagine(fake, alice, "a quick sketch")
    finally:
        gate.set()
    followup = await fake.wait_for(
        lambda c: c.method == "POST" and c.path == f"/webhooks/{fake.app_id}/{slow['token']}"
    )
    assert followup.json["flags"] == EPHEMERAL
    assert re.fullmatch(USER_DAILY, content(followup))
    assert fake.find(
        lambda c: c.method == "DELETE" and c.path.endswith(f"/{slow['token']}/messages/@original")
    )
    assert len(nexconn.requests) == 1


# --- /usage ----------------------------------------------------------------------------------


async def test_usage_shows_a_member_their_own_numbers_privately(
    launch: Launch, fake: FakeDiscord, alice: User
) -> None:
    await launch(IMAGINE_USER_DAILY_LIMIT="3")
    await imagine(fake, alice, "a lighthouse at dusk")
    shown = await private_answer(fake, command(fake, alice, "usage"))
    lines = content(shown).split("\n")
    assert lines[0] == "**Your images**: 1 image today ($0.04), 1 this month ($0.04)."
    assert re.fullmatch(rf"Your daily limit: 2 left of 3 images; it resets {IN}\.", lines[1])
    assert lines[2:] == [
        "This server today: no limit.",
        "Monthly budget: no limit.",
        "Days begin at midnight UTC.",
    ]
    assert not shown.files


async def test_usage_in_direct_messages_counts_the_direct_message_space(
    launch: Launch, fake: FakeDiscord, alice: User
) -> None:
    await launch(IMAGINE_WORKSPACE_DAILY_LIMIT="5")
    await imagine(fake, alice, "a lighthouse at dusk", dm=True)
    shown = await private_answer(fake, command(fake, alice, "usage", dm=True))
    lines = content(shown).split("\n")
    assert lines[0] == "**Your images**: 1 image today ($0.04), 1 this month ($0.04)."
    assert re.fullmatch(
        rf"This direct-message space today: 4 left of 5 images; it resets {IN}\.", lines[2]
    )


async def test_usage_shows_an_admin_the_server_and_a_chart(
    launch: Launch, fake: FakeDiscord, alice: User, bob: User, carol: User
) -> None:
    await launch()
    await imagine(fake, alice, "a lighthouse at dusk")
    await imagine(fake, bob, "a kite over the dunes")
    shown = await private_answer(fake, command(fake, carol, "usage", permissions=ADMIN))
    first, second = sorted([alice, bob], key=lambda u: str(u.id))
    assert content(shown).split("\n") == [
        "**Your images**: 0 images today ($0.00), 0 this month ($0.00).",
        "Your daily limit: no limit.",
        "This server today: no limit.",
        "Monthly budget: no limit.",
        "",
        "**This server**: 2 images today ($0.08), 2 images this month ($0.08 estimated).",
        "Top users this month:",
        f"1. <@{first.id}> — 1 image, $0.04",
        f"2. <@{second.id}> — 1 image, $0.04",
        "Days begin at midnight UTC.",
    ]
    assert shown.json["allowed_mentions"]["parse"] == []  # named, not pinged
    [chart] = shown.files
    assert chart.filename == CHART_FILENAME
    with PILImage.open(io.BytesIO(chart.data)) as image:
        assert image.format == "PNG"
        assert image.size == (640, 240)


# --- /imagine-admin --------------------------------------------------------------------------


async def test_an_admin_sets_a_limit_that_the_next_imagine_obeys_and_gives_a_day_back(
    launch: Launch, fake: FakeDiscord, nexconn: TimedNexconn, alice: User, carol: User
) -> None:
    await launch()
    shown = await private_answer(
        fake, admin(fake, carol, "limit", ("setting", 3, "user_daily_limit"), ("value", 10, "1"))
    )
    lines = content(shown).split("\n")
    assert lines[:3] == [
        "✅ You set the user daily limit to 1 image.",
        "",
        "**Settings in force** (days begin at midnight UTC; $0.04 per image):",
    ]
    assert "• User daily limit: 1 image (set here)" in lines

    await imagine(fake, alice, "a lighthouse at dusk")
    assert re.fullmatch(USER_DAILY, await refused_imagine(fake, nexconn, alice))

    given = await private_answer(
        fake,
        admin(fake, carol, "giveback", ("user", 6, str(alice.id)), resolved=resolved_user(alice)),
    )
    assert content(given).startswith(f"✅ You gave <@{alice.id}> their day back.\n")
    _, delivered = await imagine(fake, alice, "a lighthouse at dawn")
    assert delivered.files and len(nexconn.requests) == 2


async def test_an_admin_allows_a_channel_and_the_bot_serves_only_there(
    launch: Launch, fake: FakeDiscord, nexconn: TimedNexconn, alice: User, carol: User
) -> None:
    await launch()
    art = fake.new_id()
    channel = {"id": str(art), "type": 0, "name": "art", "permissions": str(ADMIN)}
    shown = await private_answer(
        fake,
        admin(
            fake,
            carol,
            "channel",
            ("action", 3, "allow"),
            ("channel", 7, str(art)),
            resolved={"channels": {str(art): channel}},
        ),
    )
    text = content(shown)
    assert text.startswith(f"✅ You allowed <#{art}>.\n")
    assert f"• Channels: <#{art}> (set here)" in text.split("\n")

    assert await refused_imagine(fake, nexconn, alice) == CHANNEL
    _, delivered = await imagine(fake, alice, "a mural", channel_id=art)
    assert delivered.files


async def test_an_admin_allows_a_role_and_blocks_a_user(
    launch: Launch, fake: FakeDiscord, nexconn: TimedNexconn, alice: User, bob: User, carol: User
) -> None:
    artists = fake.role("artists")
    await launch()
    role = fake.role_payload(artists)
    shown = await private_answer(
        fake,
        admin(
            fake,
            carol,
            "role",
            ("action", 3, "allow"),
            ("role", 8, str(artists)),
            resolved={"roles": {str(artists): role}},
        ),
    )
    assert content(shown).startswith(f"✅ You allowed the role <@&{artists}>.\n")
    assert f"• Roles: <@&{artists}> (set here)" in content(shown).split("\n")
    assert await refused_imagine(fake, nexconn, alice) == ROLE

    shown = await private_answer(
        fake,
        admin(
            fake,
            carol,
            "user",
            ("action", 3, "block"),
            ("user", 6, str(bob.id)),
            resolved=resolved_user(bob),
        ),
    )
    assert content(shown).startswith(f"✅ You blocked <@{bob.id}>.\n")
    assert await refused_imagine(fake, nexconn, bob, roles=[artists]) == BLOCKED
    _, delivered = await imagine(fake, alice, "a mural", roles=[artists])
    assert delivered.files


async def test_a_non_admin_is_refused_privately_and_nothing_changes(
    launch: Launch, fake: FakeDiscord, bob: User, carol: User
) -> None:
    bot = await launch(IMAGINE_ADMIN_USERS=str(carol.id))
    for payload in (
        admin(fake, bob, "show", permissions=MEMBER_PERMISSIONS),
        admin(
            fake,
            bob,
            "limit",
            ("setting", 3, "workspace_daily_limit"),
            ("value", 10, "0"),
            permissions=MEMBER_PERMISSIONS,
        ),
    ):
        assert refusal(await answer(fake, payload)) == NOT_ADMIN
    assert await bot.store.get_overrides(Scope("discord", str(fake.guild_id))) == Overrides()

    # IMAGINE_ADMIN_USERS is an admin without Manage Server
    shown = await private_answer(fake, admin(fake, carol, "show", permissions=MEMBER_PERMISSIONS))
    assert content(shown).startswith("**Settings in force**")


async def test_a_bad_value_is_explained_privately(
    launch: Launch, fake: FakeDiscord, carol: User
) -> None:
    await launch()
    payload = admin(fake, carol, "limit", ("setting", 3, "user_daily_limit"), ("value", 10, "1.5"))
    start = len(fake.calls)
    await answer(fake, payload)
    followup = await fake.wait_for(
        lambda c: c.method == "POST" and c.path == f"/webhooks/{fake.app_id}/{payload['token']}",
        start=start,
    )
    assert followup.json["flags"] == EPHEMERAL
    assert content(followup) == "A daily limit is a whole number of images."


# --- registration ----------------------------------------------------------------------------


async def test_usage_and_imagine_admin_are_registered_with_the_right_permissions(
    launch: Launch, fake: FakeDiscord
) -> None:
    await launch()
    [sync] = fake.find(
        lambda c: (
            c.method == "PUT"
            and c.path == f"/applications/{fake.app_id}/guilds/{fake.guild_id}/commands"
        )
    )
    commands = {command["name"]: command for command in sync.json}
    for command_ in sync.json:
        check_command(command_)

    usage = commands["usage"]
    assert usage["type"] == 1 and usage["options"] == []
    assert usage["default_member_permissions"] is None  # everyone

    group = commands["imagine-admin"]
    assert group["type"] == 1
    # the request schema types it as an integer (responses carry the string "32")
    assert group["default_member_permissions"] == MANAGE_GUILD == 32
    assert group["dm_permission"] is False
    # a server's own install, in its channels only (no user install, no DMs)
    assert group["integration_types"] == [0]
    assert group["contexts"] == [0]
    # /usage goes wherever /imagine goes, a user install included
    assert usage["integration_types"] == [0, 1]
    assert usage["contexts"] == [0, 1, 2]
    subcommands = {option["name"]: option for option in group["options"]}
    assert set(subcommands) == {"show", "limit", "reset", "channel", "role", "user", "giveback"}
    assert all(option["type"] == 1 for option in subcommands.values())

    def types(sub: str) -> dict[str, int]:
        return {o["name"]: o["type"] for o in subcommands[sub].get("options") or []}

    assert types("limit") == {"setting": 3, "value": 10}
    assert types("channel") == {"action": 3, "channel": 7}
    assert types("role") == {"action": 3, "role": 8}
    assert types("user") == {"action": 3, "user": 6}
    assert types("giveback") == {"user": 6}
    limit = {o["name"]: o for o in subcommands["limit"]["options"]}
    assert [c["value"] for c in limit["setting"]["choices"]] == [
        "user_daily_limit",
        "workspace_daily_limit",
        "monthly_budget",
    ]
    assert limit["value"]["min_value"] == 0
    actions = {o["name"]: o for o in subcommands["user"]["options"]}["action"]
    assert [c["value"] for c in actions["choices"]] == ["block", "unblock", "allow", "disallow"]
    channel = {o["name"]: o for o in subcommands["channel"]["options"]}["channel"]
    assert channel.get("required") is False  # this channel by default
    # where commands run: text, news, voice and stage chat, threads (no category or forum)
    assert set(channel["channel_types"]) == {0, 5, 2, 13, 10, 11, 12}
