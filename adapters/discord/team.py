"""Team control on Discord: `/usage` for everyone, `/imagine-admin` for a server's admins.

The numbers, the settings and every decision live in the core (`bot.team`); this module
turns them into ephemeral answers with Discord's mentions. `/imagine-admin` is hidden from
members without Manage Server (`default_member_permissions`), but a server can grant a
command to anyone, so each subcommand checks again (Manage Server or `IMAGINE_ADMIN_USERS`).
"""

from __future__ import annotations

import io
import logging
from typing import Any, Final, Literal

import discord
from discord import app_commands

from bot.chart import usage_chart
from bot.team import (
    Change,
    GiveDayBack,
    NotAdmin,
    SetMember,
    SetNumber,
    describe_change,
    render_settings,
)
from bot.usage import UsageReport, render_usage

from .convert import MESSAGE_LIMIT, PLATFORM, clip, interaction_requester
from .respond import acked, report
from .runtime import Runtime

log = logging.getLogger(__name__)

CHART_FILENAME: Final = "usage.png"
MANAGE_SERVER: Final = discord.Permissions(manage_guild=True)
QUIET: Final = discord.AllowedMentions.none()
"""Mentions in these answers name people and roles; they never ping them."""

NUMBER_LABELS: Final = {
    "user_daily_limit": "User daily limit",
    "workspace_daily_limit": "Server daily limit",
    "monthly_budget": "Monthly budget",
}
LIMIT_CHOICES: Final = [
    app_commands.Choice(name=label, value=name) for name, label in NUMBER_LABELS.items()
]

CHANNEL, ROLE, USER = "<#{id}>", "<@&{id}>", "<@{id}>"
MENTIONS: Final = {"channel": CHANNEL, "role": ROLE, "user": USER}
USER_ACTIONS: Final = {
    "block": ("blocked_users", True),
    "unblock": ("blocked_users", False),
    "allow": ("allowed_users", True),
    "disallow": ("allowed_users", False),
}


class ChatChannel(app_commands.Transformer):
    """A channel people write in, threads included (a category or a forum is never where a
    command runs, so allowing one would allow nothing); as Discord resolved it, uncached."""

    @property
    def type(self) -> discord.AppCommandOptionType:
        return discord.AppCommandOptionType.channel

    @property
    def channel_types(self) -> list[discord.ChannelType]:
        kinds = discord.ChannelType
        return [
            kinds.text,
            kinds.news,
            kinds.voice,
            kinds.stage_voice,
            kinds.public_thread,
            kinds.private_thread,
            kinds.news_thread,
        ]

    async def transform(self, interaction: discord.Interaction[Any], value: Any, /) -> Any:
        return value


# --- texts -----------------------------------------------------------------------------------


def usage_text(report: UsageReport) -> str:
    return clip("\n".join(render_usage(report, bold="**", mention="<@{user}>")), MESSAGE_LIMIT)


def change_sentence(change: Change) -> str:
    """What an admin's change did, with Discord mentions."""
    return f"You {describe_change(change, **MENTIONS)}."


def settings_text(lines: list[str], done: str | None = None) -> str:
    head = [f"✅ {done}", ""] if done else []
    return clip("\n".join(head + lines), MESSAGE_LIMIT)


# --- /usage ----------------------------------------------------------------------------------


async def show_usage(runtime: Runtime, interaction: discord.Interaction[Any]) -> None:
    """The caller's numbers, privately; an admin also gets the server's and a chart."""
    await interaction.response.defer(ephemeral=True, thinking=True)
    acked(interaction)
    try:
        usage = await runtime.core.team.usage(interaction_requester(interaction))
        files: list[discord.File] = []
        if usage.workspace is not None:
            chart = await usage_chart(usage.workspace.per_day, usage.workspace.chart_title)
            files.append(discord.File(io.BytesIO(chart.data), filename=CHART_FILENAME))
        await interaction.edit_original_response(
            content=usage_text(usage), attachments=files, allowed_mentions=QUIET
        )
    except Exception as exc:
        await report(interaction, exc)


# --- /imagine-admin --------------------------------------------------------------------------


async def _as_admin(
    runtime: Runtime,
    interaction: discord.Interaction[Any],
    change: Change | None,
) -> None:
    """Show (`change` None) or change the server's settings, privately, for admins only."""
    who = interaction_requester(interaction)
    team = runtime.core.team
    if not team.is_admin(who):
        log.info("user %s is not an admin of %s", who.user, who.workspace)
        await interaction.response.send_message(
            NotAdmin(PLATFORM).user_message, ephemeral=True, allowed_mentions=QUIET
        )
        acked(interaction)
        return
    await interaction.response.defer(ephemeral=True, thinking=True)
    acked(interaction)
    try:
        view = await (team.view(who) if change is None else team.change(who, change))
        lines = render_settings(view, bold="**", channel=CHANNEL, role=ROLE, user=USER, roles=True)
        done = None if change is None else change_sentence(change)
        await interaction.edit_original_response(
            content=settings_text(lines, done), allowed_mentions=QUIET
        )
    except Exception as exc:  # BadSetting, NotAdmin: their sentence, privately
        await report(interaction, exc)


def admin_group(runtime: Runtime) -> app_commands.Group:
    """`/imagine-admin`: Manage Server by default, servers only (DMs have none to run)."""
    group = app_commands.Group(
        name="imagine-admin",
        description="See and change who may make images here, and how many",
        default_permissions=MANAGE_SERVER,
        guild_only=True,
        # a server's own install and its channels only: a user install has no server to run
        allowed_installs=app_commands.AppInstallationType(guild=True, user=False),
        allowed_contexts=app_commands.AppCommandContext(guild=True),
    )

    @group.command(name="show", description="The settings in force here and where each comes from")
    async def show(interaction: discord.Interaction[Any]) -> None:
        await _as_admin(runtime, interaction, None)

    @group.command(name="limit", description="Set a daily limit or the monthly budget (0: none)")
    @app_commands.describe(setting="Which limit", value="Images per day, or US$ per month")
    @app_commands.choices(setting=LIMIT_CHOICES)
    async def limit(
        interaction: discord.Interaction[Any],
        setting: app_commands.Choice[str],
        value: app_commands.Range[float, 0.0, 1e9],
    ) -> None:
        await _as_admin(runtime, interaction, SetNumber(setting.value, value))

    @group.command(name="reset", description="Let a limit follow the environment again")
    @app_commands.describe(setting="Which limit")
    @app_commands.choices(setting=LIMIT_CHOICES)
    async def reset(
        interaction: discord.Interaction[Any], setting: app_commands.Choice[str]
    ) -> None:
        await _as_admin(runtime, interaction, SetNumber(setting.value, None))

    @group.command(name="channel", description="Allow a channel, or take it off the allow-list")
    @app_commands.describe(action="Allow or remove", channel="The channel (default: this one)")
    async def channel(
        interaction: discord.Interaction[Any],
        action: Literal["allow", "remove"],
        channel: app_commands.Transform[discord.abc.Snowflake, ChatChannel] | None = None,
    ) -> None:
        target = str(channel.id if channel is not None else interaction.channel_id)
        change = SetMember("allowed_channels", target, action == "allow")
        await _as_admin(runtime, interaction, change)

    @group.command(name="role", description="Allow a role, or take it off the allow-list")
    @app_commands.describe(action="Allow or remove", role="The role")
    async def role(
        interaction: discord.Interaction[Any],
        action: Literal["allow", "remove"],
        role: discord.Role,
    ) -> None:
        change = SetMember("allowed_roles", str(role.id), action == "allow")
        await _as_admin(runtime, interaction, change)

    @group.command(
        name="user", description="Block or unblock someone, or let them pass allow-lists"
    )
    @app_commands.describe(action="What to do", user="Who")
    async def user(
        interaction: discord.Interaction[Any],
        action: Literal["block", "unblock", "allow", "disallow"],
        user: discord.User,
    ) -> None:
        name, present = USER_ACTIONS[action]
        await _as_admin(runtime, interaction, SetMember(name, str(user.id), present))

    @group.command(name="giveback", description="Give someone their day back: their count restarts")
    @app_commands.describe(user="Who")
    async def giveback(interaction: discord.Interaction[Any], user: discord.User) -> None:
        await _as_admin(runtime, interaction, GiveDayBack(str(user.id)))

    return group


def install(tree: app_commands.CommandTree[Any], runtime: Runtime) -> None:
    """Add `/usage` and `/imagine-admin` to the tree (synced at start-up)."""

    @app_commands.command(
        name="usage", description="Your images today and this month, and what is left"
    )
    async def usage(interaction: discord.Interaction[Any]) -> None:
        await show_usage(runtime, interaction)

    # wherever /imagine is (a user install too): the caller's numbers where they are
    usage.allowed_installs = app_commands.AppInstallationType(guild=True, user=True)
    usage.allowed_contexts = app_commands.AppCommandContext(
        guild=True, dm_channel=True, private_channel=True
    )
    tree.add_command(usage)
    tree.add_command(admin_group(runtime))
