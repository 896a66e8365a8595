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
from bot.policy import Requester

from .convert import PLATFORM, error_text
from .runtime import Runtime

log = logging.getLogger(__name__)

LOOKUP_BUDGET = 1.5
"""Seconds a handler may spend looking something up before it must answer Discord."""
ACK_DEADLINE = 2.5
"""Answer by then (Discord's clock, the interaction's snowflake time): 3 s, minus margin."""
MIN_BUDGET = 0.25
"""A check gets at least this long: a local clock running ahead must not skip it."""


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


async def refused_at_once(
    runtime: Runtime,
    interaction: discord.Interaction[Any],
    who: Requester,
    model: str | None = None,
    size: str | None = None,
) -> bool:
    """Refuse inside the acknowledgement (ephemeral, no provider call) when the core would:
    team control, a full queue, shutting down. True when it answered. `model` and `size`
    price a new thread's image for the monthly budget (None: the default model).

    A read, within what is left of Discord's 3 s (claims and lookups came first); a slow
    or failing store lets the request through, since recording the job decides again,
    exactly, and its refusal is then reported after the defer.
    """
    try:
        await asyncio.wait_for(runtime.core.precheck(who, model, size), _budget_left(interaction))
    except ImagineError as error:
        log.info("interaction %s refused: %s", interaction.id, error)
        await send_error(interaction, error)
        acked(interaction)
        return True
    except TimeoutError:
        log.warning("team control check for interaction %s timed out", interaction.id)
    except Exception:
        log.warning("team control check for interaction %s failed", interaction.id, exc_info=True)
    return False


def _budget_left(interaction: discord.Interaction[Any]) -> float:
    elapsed = (discord.utils.utcnow() - interaction.created_at).total_seconds()
    return min(LOOKUP_BUDGET, max(MIN_BUDGET, ACK_DEADLINE - elapsed))
