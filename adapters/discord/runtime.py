"""What every Discord handler needs at hand: the core, the client, the download session.

One object per adapter, reachable from any interaction through `runtime_of(client)`, so
buttons rebuilt from a custom id after a restart find the same core.
"""

from __future__ import annotations

import asyncio
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import aiohttp
import discord

from bot.core import ImagineBot

RUNTIME_ATTRIBUTE = "imagine_runtime"
READY_TIMEOUT = 60.0

ActionHandler = Callable[["Runtime", discord.Interaction, str], Awaitable[None]]
"""Handles one button or modal action for a target id (turn, job, channel:message)."""


@dataclass(frozen=True, slots=True)
class AttachmentRef:
    """An attachment as metadata: enough to check it and download it later."""

    url: str
    filename: str
    content_type: str | None
    size: int | None

    @classmethod
    def of(cls, attachment: discord.Attachment) -> AttachmentRef:
        return cls(attachment.url, attachment.filename, attachment.content_type, attachment.size)


@dataclass
class Runtime:
    core: ImagineBot
    client: discord.Client
    ready: asyncio.Event = field(default_factory=asyncio.Event)
    session: aiohttp.ClientSession | None = None
    targets: OrderedDict[str, tuple[AttachmentRef, ...]] = field(default_factory=OrderedDict)
    """Images chosen with "Edit image", by modal custom id, until the modal is submitted."""
    max_targets: int = 512
    actions: dict[str, ActionHandler] = field(default_factory=dict)
    """Action name → handler; the components only know the name (no import cycle)."""

    async def wait_ready(self) -> None:
        """Resumed jobs may finish before the gateway is up: wait for it, not forever."""
        async with asyncio.timeout(READY_TIMEOUT):
            await self.ready.wait()

    def remember_targets(self, key: str, refs: tuple[AttachmentRef, ...]) -> None:
        self.targets[key] = refs
        self.targets.move_to_end(key)
        while len(self.targets) > self.max_targets:
            self.targets.popitem(last=False)

    async def run_action(self, action: str, interaction: discord.Interaction, target: str) -> None:
        handler = self.actions.get(action)
        if handler is None:
            raise RuntimeError(f"no handler for action {action!r}")
        await handler(self, interaction, target)

    def http(self) -> aiohttp.ClientSession:
        if self.session is None or self.session.closed:
            raise RuntimeError("the Discord adapter is not started")
        return self.session

    @property
    def bot_user_id(self) -> int | None:
        user = self.client.user
        return user.id if user is not None else None


def runtime_of(client: discord.Client) -> Runtime:
    runtime = getattr(client, RUNTIME_ATTRIBUTE, None)
    if not isinstance(runtime, Runtime):
        raise RuntimeError("this client has no imagine-bot runtime")
    return runtime
