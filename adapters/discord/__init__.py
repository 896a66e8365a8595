"""imagine-bot on Discord: `/imagine`, reply-to-edit, persistent buttons (discord.py 2.x).

The composition root builds `DiscordAdapter(core, settings)`, awaits `start()` and, on
shutdown, `close()`. Everything else here is the adapter's own business.
"""

from __future__ import annotations

from .client import DiscordAdapter, DiscordStartError, intents
from .convert import BOT_PERMISSIONS, SCOPES, invite_url, user_install_url

__all__ = [
    "BOT_PERMISSIONS",
    "SCOPES",
    "DiscordAdapter",
    "DiscordStartError",
    "intents",
    "invite_url",
    "user_install_url",
]
