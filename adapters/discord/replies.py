"""Reply-to-edit: a user's reply to one of our images edits that image.

The reply's text is the instruction and its attachments (up to three) are new reference
images. Replying to an older image of a thread branches from it — the core finds the turn
by message id. Messages from bots (ourselves included), replies to anyone else's messages
and plain chatter are ignored without touching the database when Discord already told us
who wrote the referenced message. A message this process would act on is claimed by its id
first (one insert), so a message delivered to two processes is acted on by one of them.
"""

from __future__ import annotations

import asyncio
import logging

import discord

from bot.core import EditRequest
from bot.errors import ImagineError, InternalError, UnknownTurn
from bot.models import Turn

from . import attachments
from .convert import (
    PLATFORM,
    error_text,
    message_destination,
    message_requester,
    strip_mention,
)
from .runtime import AttachmentRef, Runtime
from .sink import DiscordSink

log = logging.getLogger(__name__)

INDEX_GRACE = 0.5
"""Seconds to wait before looking a just-posted image message up again."""


def _referenced_id(message: discord.Message) -> int | None:
    reference = message.reference
    if message.type is not discord.MessageType.reply or reference is None:
        return None
    return reference.message_id


def _written_by_someone_else(message: discord.Message, bot_id: int | None) -> bool:
    """True when the gateway's copy of the replied-to message shows another author."""
    resolved = message.reference.resolved if message.reference else None
    if isinstance(resolved, discord.Message):
        return bot_id is None or resolved.author.id != bot_id
    return False


async def on_message(runtime: Runtime, message: discord.Message) -> None:
    if message.author.bot or message.webhook_id is not None:
        return
    target = _referenced_id(message)
    bot_id = runtime.bot_user_id
    if target is None or _written_by_someone_else(message, bot_id):
        return
    turn = await _turn_of(runtime, message, target)
    if turn is None:
        resolved = message.reference.resolved if message.reference else None
        an_image = isinstance(resolved, discord.Message) and bool(resolved.attachments)
        if an_image and await runtime.claim_message(message):
            await _reply(message, error_text(UnknownTurn(detail=f"message {target}")))
        return
    instruction = strip_mention(message.content, bot_id)
    if not instruction and not message.attachments:
        return
    if not await runtime.claim_message(message):
        return
    refs = [AttachmentRef.of(a) for a in message.attachments]
    who = message_requester(message)
    try:
        attachments.check(refs, runtime.cdn_hosts)
        await runtime.core.precheck(who)  # a refusal downloads nothing (the edit checks again)
        images = await attachments.download(runtime.http(), refs, runtime.cdn_hosts)
        destination = message_destination(message)
        request = EditRequest(
            user_id=str(message.author.id),
            instruction=instruction,
            turn_id=turn.id,
            references=images,
            destination=destination.to_json(),
            roles=who.roles,
            parent_channel=who.parent_channel,
        )
        await runtime.core.edit(request, DiscordSink(runtime, destination))
    except ImagineError as error:
        log.info("reply %s: %s", message.id, error)
        await _reply(message, error_text(error))
    except Exception as exc:
        log.exception("reply %s failed", message.id)
        await _reply(message, error_text(InternalError(detail=repr(exc))))


async def _turn_of(runtime: Runtime, message: discord.Message, target: int) -> Turn | None:
    """The turn a replied-to message shows. Our image message is indexed just after Discord
    confirms the post, so a reply racing that confirmation gets a short second look."""
    turn = await runtime.core.turn_for_message(PLATFORM, str(target))
    resolved = message.reference.resolved if message.reference else None
    ours = isinstance(resolved, discord.Message) and resolved.author.id == runtime.bot_user_id
    if turn is None and ours:
        await asyncio.sleep(INDEX_GRACE)
        turn = await runtime.core.turn_for_message(PLATFORM, str(target))
    return turn


async def _reply(message: discord.Message, text: str) -> None:
    try:
        await message.reply(
            text, mention_author=False, allowed_mentions=discord.AllowedMentions.none()
        )
    except discord.HTTPException:
        log.warning("could not answer message %s", message.id, exc_info=True)
