"""What the buttons, the 📐 menu and the Edit modal do. Every handler answers Discord first.

Reroll, 📐 and Edit look the turn up within a small budget so a deleted image gets an
ephemeral explanation instead of a modal or a "thinking…" message; Delete, Cancel and
Retry defer at once and do their work after (the core says whether a job can be retried).
Everything answers through the interaction (its response, `@original`, followups), so it
all works where the bot user can't post: a user install in a server without the bot, a
group DM.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

import discord

from bot.core import EditRequest
from bot.errors import ImagineError, InternalError, UnknownTurn
from bot.inputs import parse_aspect_ratio
from bot.models import JSON, Job

from .buttons import instruction_modal
from .convert import (
    CANCEL,
    DELETE,
    EDIT,
    EDIT_MODAL,
    PLATFORM,
    REFRAME,
    REROLL,
    RETRY,
    bot_in_channel,
    custom_id,
    error_text,
    interaction_destination,
    interaction_requester,
    modal_value,
)
from .respond import acked, refused_at_once, report, send_error, turn_is_known
from .runtime import ActionHandler, Runtime
from .sink import DiscordSink

log = logging.getLogger(__name__)

DELETED_TEXT = "Deleted."
ALREADY_FINISHED_TEXT = "That image is no longer in progress, so there is nothing to cancel."


def _is_moderator(interaction: discord.Interaction[Any]) -> bool:
    return interaction.guild_id is not None and interaction.permissions.manage_messages


StartJob = Callable[[DiscordSink, JSON], Awaitable[Job]]
"""Hands a new job to the core, given the sink and the stored destination it answers to."""


async def start_job(
    runtime: Runtime, interaction: discord.Interaction[Any], start: StartJob
) -> None:
    """A button or modal that makes a new image: refused privately at once when team
    control (or a full queue) would refuse it; else "thinking…" at once, the image later as
    this interaction's response (or a channel message once its token expired)."""
    if await refused_at_once(runtime, interaction, interaction_requester(interaction)):
        return
    await interaction.response.defer(thinking=True)
    acked(interaction)
    destination = interaction_destination(interaction)
    try:
        await start(DiscordSink(runtime, destination), destination.to_json())
    except Exception as exc:
        await report(interaction, exc)


async def reroll(runtime: Runtime, interaction: discord.Interaction[Any], turn_id: str) -> None:
    if not await turn_is_known(runtime, turn_id):
        await send_error(interaction, UnknownTurn(detail=f"reroll of {turn_id}"))
        return
    who = interaction_requester(interaction)
    user, roles, parent = who.user, who.roles, who.parent_channel
    await start_job(
        runtime,
        interaction,
        lambda sink, destination: runtime.core.reroll(
            turn_id, user, sink, destination=destination, roles=roles, parent_channel=parent
        ),
    )


async def reframe(runtime: Runtime, interaction: discord.Interaction[Any], turn_id: str) -> None:
    """📐: the chosen aspect ratio (the select's value) of the same picture, answered like a
    Reroll: a new result message, refused privately at once when team control would."""
    data: Any = interaction.data or {}
    values = data.get("values") or [""]
    try:
        ratio = parse_aspect_ratio(str(values[0])) or ""
    except ImagineError as error:
        await send_error(interaction, error)
        return
    if not await turn_is_known(runtime, turn_id):
        await send_error(interaction, UnknownTurn(detail=f"reframe of {turn_id}"))
        return
    who = interaction_requester(interaction)
    user, roles, parent = who.user, who.roles, who.parent_channel
    await start_job(
        runtime,
        interaction,
        lambda sink, destination: runtime.core.reframe(
            turn_id, ratio, user, sink, destination=destination, roles=roles, parent_channel=parent
        ),
    )


async def retry(runtime: Runtime, interaction: discord.Interaction[Any], job_id: str) -> None:
    """A failed job again, as a new job of whoever clicks; it lands where a Reroll would.
    A job that can't be retried (its image deleted meanwhile) or a full queue is answered
    privately."""
    who = interaction_requester(interaction)
    user, roles, parent = who.user, who.roles, who.parent_channel
    await start_job(
        runtime,
        interaction,
        lambda sink, destination: runtime.core.retry(
            job_id, user, sink, destination=destination, roles=roles, parent_channel=parent
        ),
    )


async def open_edit_modal(
    runtime: Runtime, interaction: discord.Interaction[Any], turn_id: str
) -> None:
    if not await turn_is_known(runtime, turn_id):
        await send_error(interaction, UnknownTurn(detail=f"edit of {turn_id}"))
        return
    if await refused_at_once(runtime, interaction, interaction_requester(interaction)):
        return  # before the user types an instruction that could not run
    modal = instruction_modal(
        custom_id(EDIT_MODAL, turn_id),
        title="Edit this image",
        label="What should change?",
        placeholder="make the cup blue, add steam, keep everything else",
    )
    await interaction.response.send_modal(modal)


async def submit_edit(
    runtime: Runtime, interaction: discord.Interaction[Any], turn_id: str
) -> None:
    """The Edit modal's text is handled exactly like a reply to the image."""
    data: Any = interaction.data or {}
    instruction = modal_value(data.get("components") or ())
    who = interaction_requester(interaction)
    user, roles, parent = who.user, who.roles, who.parent_channel
    await start_job(
        runtime,
        interaction,
        lambda sink, destination: runtime.core.edit(
            EditRequest(
                user_id=user,
                instruction=instruction,
                turn_id=turn_id,
                destination=destination,
                roles=roles,
                parent_channel=parent,
            ),
            sink,
        ),
    )


async def delete(runtime: Runtime, interaction: discord.Interaction[Any], turn_id: str) -> None:
    """Only the requester or someone with Manage Messages; the answer is private."""
    if not bot_in_channel(interaction):
        await _delete_through_interaction(runtime, interaction, turn_id)
        return
    await interaction.response.defer(ephemeral=True, thinking=True)
    try:
        turn = await runtime.core.delete(
            turn_id, str(interaction.user.id), moderator=_is_moderator(interaction)
        )
        shown = set(await runtime.core.messages_for_turn(PLATFORM, turn.id))
        if interaction.message is not None:
            shown.add(str(interaction.message.id))
        channel = runtime.client.get_partial_messageable(interaction.channel_id or 0)
        for message_id in shown:
            if not message_id.isdigit():
                continue
            try:
                await channel.get_partial_message(int(message_id)).delete()
            except discord.NotFound:
                pass
            except discord.HTTPException:
                log.warning("could not delete message %s", message_id, exc_info=True)
        await interaction.edit_original_response(content=DELETED_TEXT)
    except Exception as exc:
        await _answer_privately(interaction, exc)


async def _delete_through_interaction(
    runtime: Runtime, interaction: discord.Interaction[Any], turn_id: str
) -> None:
    """Where the bot user can't delete messages (user install, group DM): the click's own
    deferred update makes the image's message this interaction's `@original`, which its
    webhook may delete. The answer is an ephemeral followup."""
    await interaction.response.defer()
    try:
        await runtime.core.delete(
            turn_id, str(interaction.user.id), moderator=_is_moderator(interaction)
        )
        await interaction.delete_original_response()
        await interaction.followup.send(DELETED_TEXT, ephemeral=True)
    except Exception as exc:
        await report(interaction, exc)


async def cancel(runtime: Runtime, interaction: discord.Interaction[Any], job_id: str) -> None:
    """The progress message itself turns into "Cancelled."; only refusals get a message."""
    await interaction.response.defer()
    try:
        cancelled = await runtime.core.cancel(
            job_id, str(interaction.user.id), moderator=_is_moderator(interaction)
        )
    except Exception as exc:
        await report(interaction, exc)
        return
    if not cancelled:
        await interaction.followup.send(ALREADY_FINISHED_TEXT, ephemeral=True)


async def _answer_privately(interaction: discord.Interaction[Any], exc: Exception) -> None:
    """After an ephemeral defer the error simply replaces the private "thinking…"."""
    error = exc if isinstance(exc, ImagineError) else InternalError(detail=repr(exc))
    if not isinstance(exc, ImagineError):
        log.error("interaction %s failed", interaction.id, exc_info=exc)
    try:
        await interaction.edit_original_response(content=error_text(error))
    except discord.HTTPException:
        log.warning("could not tell the user about %s", error, exc_info=True)


ACTIONS: dict[str, ActionHandler] = {
    REROLL: reroll,
    REFRAME: reframe,
    EDIT: open_edit_modal,
    EDIT_MODAL: submit_edit,
    DELETE: delete,
    CANCEL: cancel,
    RETRY: retry,
}
