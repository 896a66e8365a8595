"""Retention through the real Slack adapter: a reply to an expired image says so."""

from __future__ import annotations

import pytest
import sqlalchemy as sa

from bot.errors import ImageExpired
from tests.adapters.slack.conftest import Launch, images_in, imagine, message_event
from tests.fakes.slack_server import FakeSlack

EXPIRED = "That image is older than 30 days and has been cleaned up; start again with /imagine."


async def test_a_reply_to_an_expired_image_says_so_and_its_text_stays(
    slack: FakeSlack, launch: Launch
) -> None:
    bot = await launch()
    root, _ = await imagine(bot, "a lighthouse at dusk")
    await bot.event(message_event("add gulls", ts="1700000800.000001", thread_ts=root.ts), "E0")
    await images_in(slack, root.ts, 2)
    await bot.core.idle()
    turn, edit = await bot.turns(root.ts)
    bot.core.retention_days = 30
    assert (await bot.core.purge_expired()).images == 0  # a new turn keeps its image

    async with bot.store.engine.begin() as conn:  # 31 days pass
        for table in ("turns", "images", "jobs"):
            await conn.execute(sa.text(f"UPDATE {table} SET created_at = created_at - 31 * 86400"))
    swept = await bot.core.purge_expired()
    assert swept.images == 2 and swept.bytes > 0
    assert await bot.store.get_image(turn.result_sha) is None
    kept = await bot.store.get_turn(turn.id)
    assert kept is not None and kept.prompt == "a lighthouse at dusk"
    calls = bot.provider.calls  # type: ignore[attr-defined]

    await bot.event(
        message_event("make it stormy", ts="1700000900.000001", thread_ts=root.ts), "E1"
    )
    await slack.wait_for(
        lambda: next((m for m in slack.replies(root.ts) if EXPIRED in m.text), None)
    )
    await bot.core.idle()
    assert bot.provider.calls == calls  # type: ignore[attr-defined]
    assert len(slack.uploads_in(root.ts)) == 2

    with pytest.raises(ImageExpired) as raised:  # the edit's Reroll button needs its parent
        await bot.core.reroll(edit.id, "U1", None)  # type: ignore[arg-type]
    assert raised.value.user_message == EXPIRED


async def test_deleting_a_turn_removes_its_image_bytes(slack: FakeSlack, launch: Launch) -> None:
    bot = await launch()
    root, _ = await imagine(bot, "a paper boat")
    (turn,) = await bot.turns(root.ts)
    await bot.core.delete(turn.id, "U1")
    assert await bot.store.get_image(turn.result_sha) is None
    assert (await bot.store.get_turn(turn.id)) is not None  # the row (and text) stays
