"""Buttons and the 📐 menu that survive restarts, and the instruction modal.

Each button (and the 📐 aspect ratio select) is a discord.py `DynamicItem`: its custom id
carries the action and the turn (or job) id, and `client.add_dynamic_items` at start-up lets
any process rebuild it from a click. The item only knows its action's name; the handler is
looked up in the runtime (the select's chosen ratio travels in the interaction's `values`).
"""

from __future__ import annotations

import logging
import re
from typing import Any

import discord

from bot.models import ASPECT_RATIOS

from .convert import (
    CANCEL,
    DELETE,
    EDIT,
    INSTRUCTION_FIELD,
    REFRAME,
    REROLL,
    RETRY,
    custom_id,
    template,
)
from .runtime import runtime_of

log = logging.getLogger(__name__)

INSTRUCTION_MAX = 2000


class _Durable(discord.ui.DynamicItem[Any], template=r"(?!)"):
    """A component for `action` on `target` whose custom id carries both, so it keeps
    working after a restart; a click acts once across processes."""

    action = ""
    target = ""

    @classmethod
    async def from_custom_id(
        cls,
        interaction: discord.Interaction[Any],
        item: discord.ui.Item[Any],
        match: re.Match[str],
        /,
    ) -> _Durable:
        return cls(match["id"])

    async def interaction_check(self, interaction: discord.Interaction[Any], /) -> bool:
        """A duplicate delivery is left to the process that took it."""
        return await runtime_of(interaction.client).claim_interaction(interaction)

    async def callback(self, interaction: discord.Interaction[Any]) -> None:
        await runtime_of(interaction.client).run_action(self.action, interaction, self.target)


class _ActionButton(_Durable, template=r"(?!)"):
    """A button for `action` on `target`; subclasses set the action, label and emoji."""

    label = ""
    emoji = ""
    style = discord.ButtonStyle.secondary

    def __init__(self, target: str, *, row: int | None = None) -> None:
        super().__init__(
            discord.ui.Button(
                style=self.style,
                label=self.label,
                emoji=self.emoji,
                custom_id=custom_id(self.action, target),
                row=row,
            )
        )
        self.target = target


class RerollButton(_ActionButton, template=template(REROLL)):
    action, label, emoji = REROLL, "Reroll", "🔄"


class EditButton(_ActionButton, template=template(EDIT)):
    action, label, emoji = EDIT, "Edit", "✏️"


class DeleteButton(_ActionButton, template=template(DELETE)):
    action, label, emoji = DELETE, "Delete", "🗑️"
    style = discord.ButtonStyle.danger


class CancelButton(_ActionButton, template=template(CANCEL)):
    action, label, emoji = CANCEL, "Cancel", "✖️"


class RetryButton(_ActionButton, template=template(RETRY)):
    action, label, emoji = RETRY, "Retry", "🔁"


REFRAME_PLACEHOLDER = "📐 Aspect ratio"


def ratio_shape(ratio: str) -> str:
    """`16:9` → "Landscape": a word for the menu, so a ratio reads at a glance."""
    width, _, height = ratio.partition(":")
    if not (width.isdigit() and height.isdigit()) or int(width) == int(height):
        return "Square"
    return "Landscape" if int(width) > int(height) else "Portrait"


class ReframeSelect(_Durable, template=template(REFRAME)):
    """📐: the other aspect ratios of a finished image; choosing one recomposes it.

    One select per action row (Discord's rule), at most 25 options (there are 9).
    """

    action = REFRAME

    def __init__(self, target: str, current: str | None = None, *, row: int | None = None) -> None:
        ratios = [ratio for ratio in ASPECT_RATIOS if ratio != current]
        super().__init__(
            discord.ui.Select(
                custom_id=custom_id(REFRAME, target),
                placeholder=REFRAME_PLACEHOLDER,
                min_values=1,
                max_values=1,
                options=[
                    discord.SelectOption(label=ratio, value=ratio, description=ratio_shape(ratio))
                    for ratio in ratios[:25]
                ],
                row=row,
            )
        )
        self.target = target


DYNAMIC_ITEMS: tuple[type[discord.ui.DynamicItem[Any]], ...] = (
    RerollButton,
    EditButton,
    DeleteButton,
    CancelButton,
    RetryButton,
    ReframeSelect,
)


def turn_view(turn_id: str, aspect_ratio: str | None = None) -> discord.ui.View:
    """Under a finished image: Reroll, Edit, Delete in the first row (5 fit), the 📐 menu
    of the other aspect ratios in a row of its own."""
    view = discord.ui.View(timeout=None)
    for button in (RerollButton, EditButton, DeleteButton):
        view.add_item(button(turn_id, row=0))
    view.add_item(ReframeSelect(turn_id, aspect_ratio, row=1))
    return view


def cancel_view(job_id: str) -> discord.ui.View:
    """The button under a queued or running job."""
    view = discord.ui.View(timeout=None)
    view.add_item(CancelButton(job_id))
    return view


def retry_view(job_id: str) -> discord.ui.View:
    """The button under a failure that trying again may fix (`ImagineError.retryable`)."""
    view = discord.ui.View(timeout=None)
    view.add_item(RetryButton(job_id))
    return view


def instruction_modal(modal_id: str, title: str, label: str, placeholder: str) -> discord.ui.Modal:
    """A one-field modal. Its submit is handled by custom id in `on_interaction`, not by
    this object, so a submit still works when the bot restarted while the modal was open."""
    modal = discord.ui.Modal(title=title, custom_id=modal_id, timeout=15 * 60)
    modal.add_item(
        discord.ui.TextInput(
            label=label,
            custom_id=INSTRUCTION_FIELD,
            style=discord.TextStyle.paragraph,
            placeholder=placeholder,
            min_length=1,
            max_length=INSTRUCTION_MAX,
        )
    )
    return modal
