"""📐 Aspect ratio under every image: a select of the other ratios that survives a restart;
choosing one recomposes the same picture as an edit of that turn, answered like a Reroll."""

from __future__ import annotations

import json
import re
from typing import Any

from bot.core import reframe_instruction
from bot.errors import UnknownAspectRatio
from bot.models import ASPECT_RATIOS, TurnKind
from bot.providers.nexconn import NexconnProvider
from tests.fakes.discord_server import Call, FakeDiscord, User
from tests.fakes.nexconn_server import CHAT
from tests.fakes.scripted_json_server import b64, png

from .conftest import (
    TimedNexconn,
    custom_ids,
    imagine,
    is_callback,
    is_original_edit,
    run_bot,
    select_of,
    turn_of,
)
from .discord_spec import check_components

EPHEMERAL = 64
IN = r"in (\d+ h( \d+ min)?|\d+ min)"
USER_DAILY = rf"You've made 1 of your 1 image today; more at 00:00 UTC, {IN}\."


async def choose(fake: FakeDiscord, payload: dict[str, Any]) -> tuple[int, Call]:
    """Send a select interaction; the index to wait from and its acknowledgement."""
    start = len(fake.calls)
    await fake.dispatch("INTERACTION_CREATE", payload)
    return start, await fake.wait_for(is_callback(payload["token"]), start=start)


def ratios_offered(message: dict[str, Any]) -> list[str]:
    return [option["value"] for option in select_of(message)["options"]]


async def test_the_menu_offers_the_other_nine_ratios_and_recomposes_after_a_restart(
    fake: FakeDiscord,
    db_url: str,
    provider: NexconnProvider,
    nexconn: TimedNexconn,
    alice: User,
) -> None:
    first = await run_bot(fake, db_url, provider)
    try:
        payload, delivered = await imagine(fake, alice, "a red fox in snow", aspect_ratio="4:5")
        message = fake.original_message(payload["token"])
        assert message is not None
        original = await turn_of(first, message)
    finally:
        await first.stop()
    original_image = nexconn.image

    # what Discord was sent: the buttons in one row, the select alone in the next
    rows = delivered.json["components"]
    check_components(rows)
    assert [[item["type"] for item in row["components"]] for row in rows] == [[2, 2, 2], [3]]
    select = select_of(delivered.json)
    assert select["custom_id"] == f"imagine:reframe:{original.id}"
    assert select["placeholder"] == "📐 Aspect ratio"
    assert (select["min_values"], select["max_values"]) == (1, 1)
    assert ratios_offered(delivered.json) == [r for r in ASPECT_RATIOS if r != "4:5"]
    assert len(select["options"]) == 9
    labels = {option["value"]: option["description"] for option in select["options"]}
    assert (labels["16:9"], labels["9:16"], labels["1:1"]) == ("Landscape", "Portrait", "Square")

    second = await run_bot(fake, db_url, provider)  # the custom id alone carries it
    try:
        nexconn.image = png((1, 120, 200))
        pick = fake.select(alice, message, select["custom_id"], ["16:9"])
        start, ack = await choose(fake, pick)
        assert ack.json == {"type": 5}  # "thinking…", then a new result message, as Reroll
        result = await fake.wait_for(is_original_edit(pick["token"], with_file=True), start=start)
        assert result.files[0].data == nexconn.image

        request = nexconn.requests[-1]
        assert request.path == CHAT  # an edit of that turn: the thread's history goes along
        assert request.json["image_config"]["aspect_ratio"] == "16:9"
        sent = json.dumps(request.json)
        assert b64(original_image) in sent
        assert json.dumps(reframe_instruction("16:9"))[1:-1] in sent

        reframed_message = fake.original_message(pick["token"])
        assert reframed_message is not None
        assert reframed_message["id"] != message["id"]  # the original image stays
        assert int(message["id"]) in fake.messages
        reframed = await turn_of(second, reframed_message)
        assert reframed.kind is TurnKind.EDIT
        assert reframed.parent_id == original.id
        assert reframed.aspect_ratio == "16:9"
        assert ratios_offered(reframed_message) == [r for r in ASPECT_RATIOS if r != "16:9"]
        assert custom_ids(reframed_message) == [
            f"imagine:reroll:{reframed.id}",
            f"imagine:edit:{reframed.id}",
            f"imagine:delete:{reframed.id}",
        ]
    finally:
        await second.stop()


async def test_a_ratio_refused_by_the_daily_limit_is_answered_privately(
    fake: FakeDiscord,
    db_url: str,
    provider: NexconnProvider,
    nexconn: TimedNexconn,
    alice: User,
) -> None:
    bot = await run_bot(fake, db_url, provider, IMAGINE_USER_DAILY_LIMIT="1")
    try:
        payload, _ = await imagine(fake, alice, "a lighthouse at dusk")
        message = fake.original_message(payload["token"])
        assert message is not None
        pick = fake.select(alice, message, select_of(message)["custom_id"], ["9:16"])
        _, ack = await choose(fake, pick)
        assert ack.json["type"] == 4
        assert ack.json["data"]["flags"] == EPHEMERAL
        assert re.fullmatch(USER_DAILY, ack.json["data"]["content"])
        await bot.core.idle()
        assert len(nexconn.requests) == 1
    finally:
        await bot.stop()


async def test_a_forged_ratio_is_refused_privately(
    fake: FakeDiscord,
    db_url: str,
    provider: NexconnProvider,
    nexconn: TimedNexconn,
    alice: User,
) -> None:
    bot = await run_bot(fake, db_url, provider)
    try:
        payload, _ = await imagine(fake, alice, "a lighthouse at dusk")
        message = fake.original_message(payload["token"])
        assert message is not None
        pick = fake.select(alice, message, select_of(message)["custom_id"], ["7:3"])
        _, ack = await choose(fake, pick)
        assert ack.json["type"] == 4 and ack.json["data"]["flags"] == EPHEMERAL
        assert ack.json["data"]["content"] == UnknownAspectRatio("7:3").user_message
        await bot.core.idle()
        assert len(nexconn.requests) == 1
    finally:
        await bot.stop()
