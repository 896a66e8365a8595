"""`/imagine` and the "Edit image" message command.

Both check what is instant (prompt, aspect ratio, model and size, attachment metadata)
before answering — errors then go back as ephemeral messages — and defer before any
download, database write or provider call, so Discord's 3 s deadline holds however long the
queue is.

`/imagine` is built at start-up from the core: its `model` option is there when
`IMAGINE_MODELS` offers more than one model, its `size` option when one of them has sizes.
Both commands (and `/usage`) can be installed to a server or to a user's account and run in
servers, the bot's DMs and private channels (`USER_INSTALL_*`).
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Sequence
from typing import Any, Final, TypeVar

import discord
from discord import app_commands

from bot.catalog import SIZES, model_info
from bot.core import ImagineRequest
from bot.errors import MAX_PROMPT_CHARS, MAX_REFERENCE_IMAGES, ImagineError
from bot.inputs import clean_prompt, parse_aspect_ratio
from bot.models import ASPECT_RATIOS

from . import attachments
from .buttons import instruction_modal
from .convert import (
    NEW_MODAL,
    clip,
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
SIZE_CHOICES = [app_commands.Choice(name=size, value=size) for size in SIZES]

USER_INSTALL_INSTALLS: Final = app_commands.AppInstallationType(guild=True, user=True)
"""integration_types [0, 1]: installable to a server and to a user's account."""
USER_INSTALL_CONTEXTS: Final = app_commands.AppCommandContext(
    guild=True, dm_channel=True, private_channel=True
)
"""contexts [0, 1, 2]: servers, DMs with the bot, DMs and group DMs between users."""

IMAGINE_DESCRIPTIONS: Final = {
    "prompt": "What to draw",
    "aspect_ratio": "Shape of the image (default 1:1)",
    "image": "A reference image (PNG, JPEG, WebP, HEIC)",
    "image2": "A second reference image",
    "image3": "A third reference image",
    "model": "Which model draws it",
    "size": "Output size, for models that offer it (default 1K)",
}


def model_choices(models: Sequence[str]) -> list[app_commands.Choice[str]]:
    """The offered models by name (`Gemini 3 Pro Image`), the default first."""
    return [
        app_commands.Choice(name=clip(model_info(model).label, 100), value=model)
        for model in models[:25]
    ]


def offers_sizes(models: Sequence[str]) -> bool:
    return any(model_info(model).sizes for model in models)


def imagine_description(models: Sequence[str]) -> str:
    label = model_info(models[0]).label if models else "Gemini"
    more = " or another model" if len(models) > 1 else ""
    return clip(f"Create an image with {label}{more}", 100)


Installable = TypeVar("Installable", app_commands.Command[Any, ..., None], app_commands.ContextMenu)


def user_installable(command: Installable) -> Installable:
    """Installable to servers and user accounts, usable in servers, the bot's DMs and
    private channels (Discord checks this; nothing to check on our side)."""
    command.allowed_installs = USER_INSTALL_INSTALLS
    command.allowed_contexts = USER_INSTALL_CONTEXTS
    return command


async def start_imagine(
    runtime: Runtime,
    interaction: discord.Interaction[Any],
    prompt: str,
    aspect_ratio: str | None,
    refs: Sequence[AttachmentRef],
    model: str | None = None,
    size: str | None = None,
) -> None:
    """Validate (instant), check team control (a quick read), defer, download, hand the
    job to the core. A refusal is ephemeral and calls no provider."""
    try:
        clean_prompt(prompt)
        parse_aspect_ratio(aspect_ratio)
        chosen_model, chosen_size = runtime.core.choose_model(model, size)
        attachments.check(refs, runtime.cdn_hosts)
    except ImagineError as error:
        await interaction.response.send_message(error_text(error), ephemeral=True)
        acked(interaction)
        return
    who = interaction_requester(interaction)
    if await refused_at_once(runtime, interaction, who, chosen_model, chosen_size):
        return
    await interaction.response.defer(thinking=True)
    acked(interaction)
    try:
        await _imagine(runtime, interaction, prompt, refs, aspect_ratio, model, size)
    except Exception as exc:
        await report(interaction, exc)


async def _imagine(
    runtime: Runtime,
    interaction: discord.Interaction[Any],
    prompt: str,
    refs: Sequence[AttachmentRef],
    aspect_ratio: str | None = None,
    model: str | None = None,
    size: str | None = None,
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
        parent_channel=interaction_requester(interaction).parent_channel,
        model=model,
        size=size,
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
    except (discord.NotFound, discord.Forbidden):  # gone, or a channel the bot can't read
        return ()
    refs = (AttachmentRef.of(a) for a in message.attachments)
    return tuple(ref for ref in refs if attachments.looks_like_image(ref))[:MAX_REFERENCE_IMAGES]


def imagine_command(runtime: Runtime) -> app_commands.Command[Any, ..., None]:
    """`/imagine` for the models the core offers: `model` only when there is a choice,
    `size` only when an offered model has sizes (Discord shows every option it is sent)."""
    models = runtime.core.models

    async def imagine(
        interaction: discord.Interaction[Any],
        prompt: app_commands.Range[str, 1, MAX_PROMPT_CHARS],
        aspect_ratio: app_commands.Choice[str] | None = None,
        image: discord.Attachment | None = None,
        image2: discord.Attachment | None = None,
        image3: discord.Attachment | None = None,
        model: app_commands.Choice[str] | None = None,
        size: app_commands.Choice[str] | None = None,
    ) -> None:
        refs = [AttachmentRef.of(a) for a in (image, image2, image3) if a is not None]
        await start_imagine(
            runtime,
            interaction,
            prompt,
            aspect_ratio.value if aspect_ratio is not None else None,
            refs,
            model.value if model is not None else None,
            size.value if size is not None else None,
        )

    choices: dict[str, list[app_commands.Choice[str]]] = {"aspect_ratio": RATIO_CHOICES}
    if len(models) > 1:
        choices["model"] = model_choices(models)
    if offers_sizes(models):
        choices["size"] = SIZE_CHOICES
    dropped = {"model", "size"} - set(choices)
    # discord.py reads the options from the callback's signature: leave out the absent ones
    signature = inspect.signature(imagine)
    kept = [p for p in signature.parameters.values() if p.name not in dropped]
    setattr(imagine, "__signature__", signature.replace(parameters=kept))  # noqa: B010
    described = {k: v for k, v in IMAGINE_DESCRIPTIONS.items() if k not in dropped}
    callback = app_commands.choices(**choices)(app_commands.describe(**described)(imagine))
    command: app_commands.Command[Any, ..., None] = app_commands.Command(
        name="imagine", description=imagine_description(models), callback=callback
    )
    return user_installable(command)


def install(tree: app_commands.CommandTree[Any], runtime: Runtime) -> None:
    """Add `/imagine` and "Edit image" to the tree (synced at start-up)."""

    async def edit_image(interaction: discord.Interaction[Any], message: discord.Message) -> None:
        await open_image_modal(runtime, interaction, message)

    tree.add_command(imagine_command(runtime))
    tree.add_command(
        user_installable(app_commands.ContextMenu(name="Edit image", callback=edit_image))
    )
