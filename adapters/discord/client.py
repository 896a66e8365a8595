"""The Discord client and the adapter the composition root starts and stops.

`DiscordAdapter.start` points discord.py at the configured REST base and gateway, logs in,
connects its gateway shards in a background task, waits until every one is READY, syncs
the slash commands and logs the invite link. Start-up failures become one clear line
(`DiscordStartError`).

Sharding: the client is always discord.py's `AutoShardedClient`. `DISCORD_SHARD_COUNT` and
`DISCORD_SHARD_IDS` choose the shards this process runs, so replicas split the gateway
(process A runs shard 0 of 2, process B shard 1 of 2); without them the process runs every
shard of the count Discord recommends (`GET /gateway/bot`; 1 below 2,500 servers).

Events act once: every interaction and every message we would act on is claimed by its id
in the store first (`Runtime.claim_interaction` / `claim_message`: the command tree's
`interaction_check`, the buttons' `interaction_check`, modal submits in `on_interaction`,
replies in `replies.on_message`), so two processes that were given the same shard by
mistake still answer once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Sequence
from typing import Any

import aiohttp
import discord
import yarl
from discord import app_commands
from discord.gateway import DiscordWebSocket
from discord.http import Route

from bot.config import Settings, StartupError
from bot.core import ImagineBot

from . import commands, replies, team
from .actions import ACTIONS
from .buttons import DYNAMIC_ITEMS
from .commands import submit_image_modal
from .convert import (
    EDIT_MODAL,
    NEW_MODAL,
    PLATFORM,
    invite_url,
    parse_custom_id,
    user_install_url,
)
from .respond import report
from .runtime import RUNTIME_ATTRIBUTE, Runtime, runtime_of
from .sink import sink_factory

log = logging.getLogger(__name__)

LIBRARY_API_BASE = Route.BASE
LIBRARY_GATEWAY = DiscordWebSocket.DEFAULT_GATEWAY


class DiscordStartError(StartupError):
    """One line an admin can act on (bad token, intent not enabled, gateway unreachable)."""


def intents() -> discord.Intents:
    """Guilds, guild messages, DMs and message content (replies are read as instructions).
    Message content is privileged: it must be switched on in the developer portal."""
    wanted = discord.Intents.none()
    wanted.guilds = True
    wanted.guild_messages = True
    wanted.dm_messages = True
    wanted.message_content = True
    return wanted


def configure_endpoints(api_base: str | None, gateway_url: str | None) -> None:
    """discord.py reads these class attributes on every request and connection."""
    Route.BASE = (api_base or LIBRARY_API_BASE).rstrip("/")
    DiscordWebSocket.DEFAULT_GATEWAY = yarl.URL(gateway_url) if gateway_url else LIBRARY_GATEWAY


class ClaimingTree(app_commands.CommandTree["ImagineClient"]):
    """Slash commands and context menus act once across processes: a duplicate is not
    answered at all (the process that claimed it answers)."""

    async def interaction_check(self, interaction: discord.Interaction[Any], /) -> bool:
        return await runtime_of(self.client).claim_interaction(interaction)


class ImagineClient(discord.AutoShardedClient):
    """The shards this process runs: `shard_ids` of `shard_count`; all of them when no ids
    are given; the count Discord recommends when none is given (resolved before connecting,
    see `DiscordAdapter`)."""

    def __init__(
        self,
        *,
        guild_ready_timeout: float = 2.0,
        shard_count: int | None = None,
        shard_ids: Sequence[int] = (),
    ) -> None:
        # discord.py wants no `shard_ids` at all (not an empty list) for "every shard"
        only: dict[str, Any] = {"shard_ids": list(shard_ids)} if shard_ids else {}
        super().__init__(
            intents=intents(),
            allowed_mentions=discord.AllowedMentions(
                everyone=False, roles=False, users=False, replied_user=True
            ),
            guild_ready_timeout=guild_ready_timeout,
            chunk_guilds_at_startup=False,
            max_messages=None,
            shard_count=shard_count,
            **only,
        )
        self.tree: ClaimingTree = ClaimingTree(self)
        self.tree.on_error = self._on_tree_error  # type: ignore[method-assign]

    @property
    def runs_shard_zero(self) -> bool:
        """Shard 0 is the one every deployment has exactly one of (and the one DMs use)."""
        return not self.shard_ids or 0 in self.shard_ids

    @property
    def runtime(self) -> Runtime:
        runtime = getattr(self, RUNTIME_ATTRIBUTE)
        assert isinstance(runtime, Runtime)
        return runtime

    async def setup_hook(self) -> None:
        self.add_dynamic_items(*DYNAMIC_ITEMS)

    async def on_message(self, message: discord.Message) -> None:
        await replies.on_message(self.runtime, message)

    async def on_interaction(self, interaction: discord.Interaction[Any]) -> None:
        """Modal submits, by custom id: independent of modal objects kept in memory.
        (Commands and buttons are claimed by their own `interaction_check`.)"""
        if interaction.type is not discord.InteractionType.modal_submit:
            return
        data: Any = interaction.data or {}
        parsed = parse_custom_id(str(data.get("custom_id") or ""))
        if parsed is None or parsed.action not in (NEW_MODAL, EDIT_MODAL):
            return
        if not await self.runtime.claim_interaction(interaction):
            return
        if parsed.action == NEW_MODAL:
            await submit_image_modal(self.runtime, interaction, parsed.target)
        elif parsed.action == EDIT_MODAL:
            await self.runtime.run_action(parsed.action, interaction, parsed.target)

    async def _on_tree_error(
        self, interaction: discord.Interaction[Any], error: app_commands.AppCommandError
    ) -> None:
        original = error.original if isinstance(error, app_commands.CommandInvokeError) else error
        await report(interaction, original)


class DiscordAdapter:
    """Runs imagine-bot on Discord until `close`. `start` returns once it is ready."""

    name = PLATFORM

    def __init__(
        self,
        core: ImagineBot,
        settings: Settings,
        *,
        guild_ready_timeout: float = 2.0,
        ready_timeout: float = 60.0,
    ) -> None:
        self.core = core
        self.settings = settings
        self.client = ImagineClient(
            guild_ready_timeout=guild_ready_timeout,
            shard_count=settings.discord_shard_count,
            shard_ids=settings.shard_ids,
        )
        self.runtime = Runtime(
            core=core,
            client=self.client,
            actions=dict(ACTIONS),
            cdn_hosts=settings.cdn_hosts,
        )
        setattr(self.client, RUNTIME_ATTRIBUTE, self.runtime)
        commands.install(self.client.tree, self.runtime)
        team.install(self.client.tree, self.runtime)
        core.register_platform(PLATFORM, sink_factory(self.runtime))
        self.invite_url: str | None = None
        self.user_install_url: str | None = None
        self._ready_timeout = ready_timeout
        self._gateway: asyncio.Task[None] | None = None
        self._login_started = False

    async def start(self) -> None:
        token = (
            self.settings.discord_token.get_secret_value() if self.settings.discord_token else ""
        )
        if not token:
            raise DiscordStartError("DISCORD_TOKEN is not set")
        configure_endpoints(self.settings.discord_api_base, self.settings.discord_gateway_url)
        self.runtime.session = aiohttp.ClientSession()
        try:
            await self._connect(token)
            await self._sync_commands()
        except BaseException:
            await self.close()
            raise
        assert self.client.application_id is not None
        self.invite_url = invite_url(self.client.application_id)
        self.user_install_url = user_install_url(self.client.application_id)
        log.info(
            "Discord: logged in as %s; invite the bot with %s; add it to your own account "
            "(User Install enabled in the developer portal) with %s",
            self.client.user,
            self.invite_url,
            self.user_install_url,
        )
        self.runtime.ready.set()

    async def ready(self) -> bool:
        """Started and every shard's gateway connection open (`/readyz`)."""
        client = self.client
        if not self.runtime.ready.is_set() or not client.is_ready() or client.is_closed():
            return False
        return bool(client.shards) and not any(s.is_closed() for s in client.shards.values())

    async def close(self) -> None:
        self.runtime.ready.clear()
        if self._login_started and not self.client.is_closed():
            # (an AutoShardedClient that never began to log in has nothing to close)
            await self.client.close()
        if self._gateway is not None:
            if not self._gateway.done():
                self._gateway.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._gateway
            self._gateway = None
        if self.runtime.session is not None:
            await self.runtime.session.close()
            self.runtime.session = None

    # --- internals --------------------------------------------------------------------------

    async def _connect(self, token: str) -> None:
        self._login_started = True
        try:
            await self.client.login(token)
            if self.client.shard_count is None:
                # What discord.py's automatic sharding asks, minus the gateway URL it
                # returns: the shards then connect to DISCORD_GATEWAY_URL when it is set.
                count, _, _ = await self.client.http.get_bot_gateway()
                self.client.shard_count = count
        except discord.LoginFailure:
            raise DiscordStartError(
                "DISCORD_TOKEN was refused by Discord: copy the bot token again from the "
                "developer portal (Bot → Reset Token)"
            ) from None
        except (
            discord.HTTPException,
            discord.GatewayNotFound,
            aiohttp.ClientError,
            OSError,
        ) as exc:
            raise DiscordStartError(f"could not reach the Discord API: {exc}") from None
        shards = self.client.shard_ids or range(self.client.shard_count)
        log.info(
            "Discord: connecting shard%s %s of %d",
            "" if len(shards) == 1 else "s",
            ", ".join(map(str, shards)),
            self.client.shard_count,
        )
        self._gateway = asyncio.create_task(
            self.client.connect(reconnect=True), name="discord-gateway"
        )
        self._gateway.add_done_callback(_log_gateway_end)
        ready = asyncio.create_task(self.client.wait_until_ready())
        try:
            done, _ = await asyncio.wait(
                {ready, self._gateway},
                timeout=self._ready_timeout,
                return_when=asyncio.FIRST_COMPLETED,
            )
        finally:
            if not ready.done():
                ready.cancel()
        if ready in done:
            return
        if self._gateway in done:
            raise _gateway_error(self._gateway)
        raise DiscordStartError(
            f"the Discord gateway did not get ready in {self._ready_timeout:g} s"
        )

    async def _sync_commands(self) -> None:
        """Only the process that runs shard 0 syncs the commands.

        A sync is an idempotent bulk overwrite (PUT), so two replicas syncing at once do no
        harm beyond rate-limit noise; but with one syncer a deployment of N replicas makes
        one sync instead of N, and during a rolling deploy an old replica that restarts on
        another shard cannot put back its old command set. Commands are global (or per
        configured guild), never per shard, so which process syncs does not matter as long
        as exactly one does: the one with shard 0, which every deployment runs once.
        """
        if not self.client.runs_shard_zero:
            log.info("Discord: commands are synced by the process that runs shard 0")
            return
        tree = self.client.tree
        guild_ids = self.settings.guild_ids
        if not guild_ids:
            synced = await tree.sync()
            log.info(
                "Discord: synced %d global commands (may take up to an hour to show)", len(synced)
            )
            return
        for guild_id in guild_ids:
            guild = discord.Object(guild_id)
            tree.copy_global_to(guild=guild)
            try:
                synced = await tree.sync(guild=guild)
            except discord.HTTPException as exc:
                log.warning(
                    "Discord: could not sync commands to guild %s (is the bot in it?): %s",
                    guild_id,
                    exc,
                )
                continue
            log.info("Discord: synced %d commands to guild %s", len(synced), guild_id)


def _gateway_error(task: asyncio.Task[None]) -> DiscordStartError:
    exc = task.exception() if not task.cancelled() else None
    if isinstance(exc, discord.PrivilegedIntentsRequired):
        return DiscordStartError(
            "Discord refused the Message Content intent: enable it in the developer portal "
            "(Bot → Privileged Gateway Intents → Message Content Intent)"
        )
    return DiscordStartError(f"the Discord gateway connection ended: {exc!r}")


def _log_gateway_end(task: asyncio.Task[None]) -> None:
    if task.cancelled():
        return
    exc = task.exception()
    if exc is not None:
        log.error("Discord gateway connection ended: %r", exc)
