"""`/imagine` and the "Edit image" message command.

Both check what is instant (prompt, aspect ratio, attachment metadata) before answering —
errors then go back as ephemeral messages — and defer before any download, database write
or provider call, so Discord's 3 s deadline holds however long the queue is.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import discord
from discord import app_commands

from bot.core import ImagineRequest
from bot.errors import MAX_PROMPT_CHARS, MAX_REFERENCE_IMAGES, ImagineError
from bot.inputs import clean_prompt, parse_aspect_ratio
from bot.models import ASPECT_RATIOS

from . import attachments
from .buttons import instruction_modal
from .convert import (
    NEW_MODAL,
    custom_id,
    error_text,
    interaction_destination,
    interaction_requester,
    message_target,
    modal_value,
    parse_message_target,
    thread_key,
)
from .respond import acked, refused_at_once, report, send_error
from .runtime import AttachmentRef, Runtime
from .sink import DiscordSink

log = logging.getLogger(__name__)

NO_IMAGE_TEXT = "That message has no image to edit. Use “Edit image” on a message with a picture."
RATIO_CHOICES = [app_commands.Choice(name=ratio, value=ratio) for ratio in ASPECT_RATIOS]


async def start_imagine(
    runtime: Runtime,
    interaction: discord.Interaction[Any],
    prompt: str,
    aspect_ratio: str | None,
    refs: Sequence[AttachmentRef],
) -> None:
    """Validate (instant), check team control (a quick read), defer, download, hand the
    job to the core. A refusal is ephemeral and calls no provider."""
    try:
        clean_prompt(prompt)
        parse_aspect_ratio(aspect_ratio)
        attachments.check(refs, runtime.cdn_hosts)
    except ImagineError as error:
        await interaction.response.send_message(error_text(error), ephemeral=True)
        acked(interaction)
        return
    if await refused_at_once(runtime, interaction, interaction_requester(interaction)):
        return
    await interaction.response.defer(thinking=True)
    acked(interaction)
    try:
        await _imagine(runtime, interaction, prompt, refs, aspect_ratio)
    except Exception as exc:
        await report(interaction, exc)


async def _imagine(
    runtime: Runtime,
    interaction: discord.Interaction[Any],
    prompt: str,
    refs: Sequence[AttachmentRef],
    aspect_ratio: str | None = None,
) -> None:
    """After the defer: download the references and start a new thread answering here."""
    images = await attachments.download(runtime.http(), refs, runtime.cdn_hosts)
    destination = interaction_destination(interaction)
    request = ImagineRequest(
        key=thread_key(interaction.guild_id, interaction.channel_id or 0, interaction.id),
        user_id=str(interaction.user.id),
        prompt=prompt,
        aspect_ratio=aspect_ratio,
        references=images,
        destination=destination.to_json(),
        roles=interaction_requester(interaction).roles,
    )
    await runtime.core.imagine(request, DiscordSink(runtime, destination))


async def open_image_modal(
    runtime: Runtime, interaction: discord.Interaction[Any], message: discord.Message
) -> None:
    """ "Edit image" on anyone's message: ask what to do with its picture(s)."""
    refs = tuple(
        ref
        for ref in map(AttachmentRef.of, message.attachments)
        if attachments.looks_like_image(ref)
    )[:MAX_REFERENCE_IMAGES]
    if not refs:
        await interaction.response.send_message(NO_IMAGE_TEXT, ephemeral=True)
        return
    try:
        attachments.check(refs, runtime.cdn_hosts)
    except ImagineError as error:
        await send_error(interaction, error)
        return
    if await refused_at_once(runtime, interaction, interaction_requester(interaction)):
        return  # before the user types an instruction that could not run
    modal_id = custom_id(NEW_MODAL, message_target(message.channel.id, message.id))
    runtime.remember_targets(modal_id, refs)
    modal = instruction_modal(
        modal_id,
        title="Edit image",
        label="What should I make of this image?",
        placeholder="turn it into a watercolor postcard",
    )
    await interaction.response.send_modal(modal)


async def submit_image_modal(
    runtime: Runtime, interaction: discord.Interaction[Any], target: str
) -> None:
    """A new thread with the chosen message's image(s) as references."""
    data: Any = interaction.data or {}
    prompt = modal_value(data.get("components") or ())
    if await refused_at_once(runtime, interaction, interaction_requester(interaction)):
        return
    await interaction.response.defer(thinking=True)
    acked(interaction)
    try:
        refs = runtime.targets.get(str(data.get("custom_id"))) or await _refetch(runtime, target)
        if not refs:  # the message was deleted or lost its pictures since the menu opened
            raise ImagineError(NO_IMAGE_TEXT, detail=f"no image left on {target}")
        attachments.check(refs, runtime.cdn_hosts)
        await _imagine(runtime, interaction, prompt, refs)
    except Exception as exc:
        await report(interaction, exc)


async def _refetch(runtime: Runtime, target: str) -> tuple[AttachmentRef, ...]:
    """The modal outlived this process: read the message again (fresh CDN links, too)."""
    parsed = parse_message_target(target)
    if parsed is None:
        return ()
    channel_id, message_id = parsed
    channel = runtime.client.get_partial_messageable(channel_id)
    try:
        message = await channel.fetch_message(message_id)
    except discord.NotFound:
        return ()
    refs = (AttachmentRef.of(a) for a in message.attachments)
    return tuple(ref for ref in refs if attachments.looks_like_image(ref))[:MAX_REFERENCE_IMAGES]


def install(tree: app_commands.CommandTree[Any], runtime: Runtime) -> None:
    """Add `/imagine` and "Edit image" to the tree (synced at start-up)."""

    @app_commands.command(name="imagine", description="Create an image with Gemini 2.5 Flash Image")
    @app_commands.describe(
        prompt="What to draw",
        aspect_ratio="Shape of the image (default 1:1)",
        image="A reference image (PNG, JPEG, WebP, HEIC)",
        image2="A second reference image",
        image3="A third reference image",
    )
    @app_commands.choices(aspect_ratio=RATIO_CHOICES)
    async def imagine(
        interaction: discord.Interaction[Any],
        prompt: app_commands.Range[str, 1, MAX_PROMPT_CHARS],
        aspect_ratio: app_commands.Choice[str] | None = None,
        image: discord.Attachment | None = None,
        image2: discord.Attachment | None = None,
        image3: discord.Attachment | None = None,
    ) -> None:
        refs = [AttachmentRef.of(a) for a in (image, image2, image3) if a is not None]
        ratio = aspect_ratio.value if aspect_ratio is not None else None
        await start_imagine(runtime, interaction, prompt, ratio, refs)

    async def edit_image(interaction: discord.Interaction[Any], message: discord.Message) -> None:
        await open_image_modal(runtime, interaction, message)

    tree.add_command(imagine)
    tree.add_command(app_commands.ContextMenu(name="Edit image", callback=edit_image))
