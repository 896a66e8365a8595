"""Answering an interaction with an error, privately where Discord allows it.

Before any response an error is an ephemeral message. After a public defer ("thinking…")
the loading message is removed and the error sent as an ephemeral followup, so a bad
attachment or a full queue is not shown to the whole channel. After a deferred update (a
button that changes its own message) the error is just an ephemeral followup.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import discord

from bot import metrics
from bot.errors import ImagineError, InternalError

from .convert import PLATFORM, error_text
from .runtime import Runtime

log = logging.getLogger(__name__)

LOOKUP_BUDGET = 1.5
"""Seconds a handler may spend looking something up before it must answer Discord."""


def acked(interaction: discord.Interaction[Any]) -> None:
    """Record the acknowledgement latency: how long Discord's 3-second clock, which starts
    at the interaction's creation (its snowflake time), had run when it was answered."""
    seconds = (discord.utils.utcnow() - interaction.created_at).total_seconds()
    metrics.acked(PLATFORM, seconds)


async def send_error(interaction: discord.Interaction[Any], error: ImagineError) -> None:
    text = error_text(error)
    try:
        if not interaction.response.is_done():
            await interaction.response.send_message(text, ephemeral=True)
            return
        if interaction.response.type is discord.InteractionResponseType.deferred_channel_message:
            # our own "thinking…" message; after a deferred *update* @original is the
            # message the button is on, which must stay
            try:
                await interaction.delete_original_response()
            except discord.HTTPException:
                log.debug("no deferred response to remove", exc_info=True)
        await interaction.followup.send(text, ephemeral=True)
    except discord.HTTPException:
        log.warning("could not tell the user about %s", error, exc_info=True)


async def report(interaction: discord.Interaction[Any], exc: BaseException) -> None:
    """A handler's failure: the user's sentence for ours, an apology for anything else."""
    if isinstance(exc, ImagineError):
        log.info("interaction %s: %s", interaction.id, exc)
        await send_error(interaction, exc)
        return
    log.error("interaction %s failed", interaction.id, exc_info=exc)
    await send_error(interaction, InternalError(detail=repr(exc)))


async def turn_is_known(runtime: Runtime, turn_id: str) -> bool:
    """False only when the store says the turn is gone; a slow or failing store answers
    True (the core checks again and its error is reported), so the interaction is still
    answered in time — never left to expire because a lookup raised."""
    try:
        turn = await asyncio.wait_for(runtime.core.get_turn(turn_id), LOOKUP_BUDGET)
    except TimeoutError:
        return True
    except Exception:
        log.warning("looking up turn %s failed; letting the core decide", turn_id, exc_info=True)
        return True
    return turn is not None
