"""What every Discord handler needs at hand: the core, the client, the download session.

One object per adapter, reachable from any interaction through `runtime_of(client)`, so
buttons rebuilt from a custom id after a restart find the same core.
"""

from __future__ import annotations

import asyncio
import logging
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import aiohttp
import discord

from bot.core import ImagineBot

from .convert import PLATFORM

log = logging.getLogger(__name__)

RUNTIME_ATTRIBUTE = "imagine_runtime"
READY_TIMEOUT = 60.0
CLAIM_BUDGET = 1.5
"""Seconds claiming an event may take before the handler acts anyway (3 s deadline)."""

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
    cdn_hosts: frozenset[str] = frozenset({"cdn.discordapp.com", "media.discordapp.net"})
    """The only hosts attachments are downloaded from (`DISCORD_CDN_HOSTS`)."""

    async def wait_ready(self) -> None:
        """Resumed jobs may finish before the gateway is up: wait for it, not forever."""
        async with asyncio.timeout(READY_TIMEOUT):
            await self.ready.wait()

    async def claim_interaction(self, interaction: discord.Interaction) -> bool:
        """Whether this process answers `interaction`: False when another process sharing
        the database took it first, and then it must not be answered at all."""
        return await self._claim("interaction", interaction.id)

    async def claim_message(self, message: discord.Message) -> bool:
        """Whether this process acts on `message` (a reply to one of our images)."""
        return await self._claim("message", message.id)

    async def _claim(self, kind: str, event_id: int) -> bool:
        """One insert into the store's event table, shared by every process on the database.

        Discord delivers an event once per shard connection, so a duplicate means two
        processes run the same shard (a misconfiguration): say so. A store that fails or
        is slow does not cost the user an answer: the event is acted on (the claim only
        guards against that misconfiguration, and the action reports its own errors).
        """
        try:
            async with asyncio.timeout(CLAIM_BUDGET):
                first = await self.core.claim_event(PLATFORM, f"{kind}:{event_id}")
        except Exception:
            log.warning(
                "could not claim Discord %s %s; acting on it", kind, event_id, exc_info=True
            )
            return True
        if not first:
            log.warning(
                "Discord %s %s was already taken by another process: do two processes run "
                "the same DISCORD_SHARD_IDS?",
                kind,
                event_id,
            )
        return first

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
