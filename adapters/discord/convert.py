"""Pure conversions between Discord's shapes and the core's: ids, destinations, texts.

Nothing here talks to Discord, so every rule (custom id format, token lifetime, message
limits) is testable with plain values.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any, Final

import discord

from bot.catalog import made_with
from bot.core import Phase, Progress
from bot.errors import ImagineError
from bot.models import JSON, Job, ThreadKey, Turn, TurnKind
from bot.policy import Requester

PLATFORM: Final = "discord"

MESSAGE_LIMIT: Final = 2000
EMBED_DESCRIPTION_LIMIT: Final = 4096
EMBED_FIELD_LIMIT: Final = 1024
EMBED_TOTAL_LIMIT: Final = 6000
CUSTOM_ID_LIMIT: Final = 100

TOKEN_LIFETIME: Final = 15 * 60.0
"""Interaction tokens (followups, `@original` edits) work for 15 minutes."""
TOKEN_MARGIN: Final = 60.0
"""Stop using a token a minute early: a slow upload must not straddle the expiry."""

SCOPES: Final = ("bot", "applications.commands")
BOT_PERMISSIONS: Final = discord.Permissions(
    view_channel=True,
    send_messages=True,
    send_messages_in_threads=True,
    embed_links=True,
    attach_files=True,
    read_message_history=True,
)
"""Everything the bot does, nothing more (274878024704). It deletes only its own messages,
so it needs no Manage Messages; Read Message History lets it reply to messages and read the
image a user edits with the context menu."""

# --- custom ids -----------------------------------------------------------------------------

PREFIX: Final = "imagine"
REROLL: Final = "reroll"
EDIT: Final = "edit"
DELETE: Final = "delete"
CANCEL: Final = "cancel"
RETRY: Final = "retry"
REFRAME: Final = "reframe"
EDIT_MODAL: Final = "edit-modal"
NEW_MODAL: Final = "new-modal"
INSTRUCTION_FIELD: Final = "instruction"

ID_PATTERN: Final = r"[0-9A-Za-z_-]{1,64}"
"""Turn and job ids (`bot.models.new_id`: 16 hex digits), with room to spare."""

_CUSTOM_ID = re.compile(rf"{PREFIX}:(?P<action>[a-z-]+):(?P<target>[0-9A-Za-z_:-]{{1,80}})")


def custom_id(action: str, target: str) -> str:
    """`imagine:<action>:<turn, job or channel:message id>`: all a button needs to survive
    a restart; everything else is looked up."""
    value = f"{PREFIX}:{action}:{target}"
    if len(value) > CUSTOM_ID_LIMIT or not _CUSTOM_ID.fullmatch(value):
        raise ValueError(f"bad custom id {value!r}")
    return value


def template(action: str) -> str:
    """The `DynamicItem` template for one action; the id is the group `id`."""
    return rf"{PREFIX}:{re.escape(action)}:(?P<id>{ID_PATTERN})"


@dataclass(frozen=True, slots=True)
class ParsedId:
    action: str
    target: str


def parse_custom_id(value: str) -> ParsedId | None:
    """The action and target of one of our custom ids; None for anybody else's."""
    match = _CUSTOM_ID.fullmatch(value or "")
    if match is None:
        return None
    return ParsedId(match["action"], match["target"])


def message_target(channel_id: int, message_id: int) -> str:
    return f"{channel_id}:{message_id}"


def parse_message_target(target: str) -> tuple[int, int] | None:
    channel, _, message = target.partition(":")
    if not channel.isdigit() or not message.isdigit():
        return None
    return int(channel), int(message)


# --- where answers go -----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Destination:
    """Where one job's answers go, stored in the job so a restart can still deliver.

    An interaction job (`token` set) edits the interaction's response while the token lives
    and otherwise posts a channel message mentioning the requester. A reply job posts a
    reply to `reply_to`.
    """

    channel_id: int
    user_id: int
    guild_id: int | None = None
    application_id: int | None = None
    token: str | None = None
    token_created_at: float | None = None
    reply_to: int | None = None
    upload_limit: int | None = None
    """Bytes one attachment may have here (the interaction's `attachment_size_limit`, or
    the server's limit for a reply); `DEFAULT_UPLOAD_LIMIT` when unknown."""
    bot_absent: bool = False
    """The bot user cannot post in this channel (a user-installed command in a server
    without the bot, a group DM): answers go through the interaction webhook only."""

    def to_json(self) -> dict[str, Any]:
        """Ids as strings: snowflakes do not survive every JSON reader as numbers."""
        fields = asdict(self)
        fields["bot_absent"] = self.bot_absent or None  # only where it matters
        return {
            key: (str(value) if isinstance(value, int) and not isinstance(value, bool) else value)
            for key, value in fields.items()
            if value is not None
        }

    @classmethod
    def from_json(cls, data: JSON) -> Destination:
        if not isinstance(data, Mapping):
            raise ValueError(f"destination is not an object: {data!r:.100}")

        def snowflake(key: str, required: bool = False) -> int | None:
            value = data.get(key)
            if value is None:
                if required:
                    raise ValueError(f"destination lacks {key}")
                return None
            if isinstance(value, bool) or not str(value).isdigit():
                raise ValueError(f"destination {key} is not an id: {value!r:.40}")
            return int(value)

        created = data.get("token_created_at")
        token = data.get("token")
        return cls(
            channel_id=snowflake("channel_id", True) or 0,
            user_id=snowflake("user_id", True) or 0,
            guild_id=snowflake("guild_id"),
            application_id=snowflake("application_id"),
            token=str(token) if token else None,
            token_created_at=float(created) if isinstance(created, int | float) else None,
            reply_to=snowflake("reply_to"),
            upload_limit=snowflake("upload_limit"),
            bot_absent=data.get("bot_absent") is True,
        )

    def token_usable(self, now: float) -> bool:
        """Whether the interaction token can still edit its response (15 min, minus margin)."""
        if not self.token or self.application_id is None or self.token_created_at is None:
            return False
        return now - self.token_created_at < TOKEN_LIFETIME - TOKEN_MARGIN


def workspace_of(guild_id: int | None) -> str:
    """A server's id, or `@dm`: the workspace of threads and of team control alike."""
    return str(guild_id) if guild_id else "@dm"


def thread_key(guild_id: int | None, channel_id: int, anchor_id: int) -> ThreadKey:
    """A Discord conversation: guild (or `@dm`), channel, the id that started it."""
    return ThreadKey(PLATFORM, workspace_of(guild_id), str(channel_id), str(anchor_id))


# --- who asks (team control) ----------------------------------------------------------------


def role_ids(user: discord.User | discord.Member, guild_id: int | None) -> frozenset[str]:
    """A member's role ids, @everyone (the guild's id) included so allowing it means
    everyone. Read from the payload's ids as well as `member.roles`, which drops any role
    missing from the guild cache (a server not yet loaded, a role event not yet seen): an
    allowed role must never be missed."""
    if not isinstance(user, discord.Member) or not guild_id:
        return frozenset()
    cached = {role.id for role in user.roles} if _in_cached_guild(user) else set()
    raw = {int(role_id) for role_id in getattr(user, "_roles", ())}
    return frozenset(str(role_id) for role_id in cached | raw | {guild_id})


def _in_cached_guild(member: discord.Member) -> bool:
    """A message from a server this process does not hold (another shard's, or one not
    loaded yet) has a Member whose `guild` is None: its roles and permissions can't be
    computed from the cache (discord.py raises)."""
    return isinstance(getattr(member, "guild", None), discord.Guild)


def _manages(permissions: discord.Permissions) -> bool:
    """Manage Server, which Administrator implies whether or not Discord lists it."""
    return permissions.manage_guild or permissions.administrator


def parent_of(channel: object) -> str:
    """The channel a thread or forum post belongs to (its `parent_id`), else "": allowing a
    channel in `IMAGINE_ALLOWED_CHANNELS` allows its threads."""
    parent = getattr(channel, "parent_id", None)
    return str(parent) if parent else ""


def interaction_requester(interaction: discord.Interaction[Any]) -> Requester:
    """Who runs a command or clicks a button, and where. Manage Server makes a platform
    admin; in DMs there is no server to administer."""
    guild_id = interaction.guild_id
    return Requester(
        platform=PLATFORM,
        workspace=workspace_of(guild_id),
        channel=str(interaction.channel_id or 0),
        user=str(interaction.user.id),
        roles=role_ids(interaction.user, guild_id),
        platform_admin=bool(guild_id) and _manages(interaction.permissions),
        parent_channel=parent_of(interaction.channel),
    )


def message_requester(message: discord.Message) -> Requester:
    """Who wrote a message (a reply that edits an image), and where."""
    guild_id = message.guild.id if message.guild else getattr(message.channel, "guild_id", None)
    author = message.author
    admin = (
        isinstance(author, discord.Member)
        and _in_cached_guild(author)
        and _manages(author.guild_permissions)
    )
    return Requester(
        platform=PLATFORM,
        workspace=workspace_of(guild_id),
        channel=str(message.channel.id),
        user=str(author.id),
        roles=role_ids(author, guild_id),
        platform_admin=bool(guild_id) and admin,
        parent_channel=parent_of(message.channel),
    )


# --- texts users see ------------------------------------------------------------------------


def clip(text: str, limit: int) -> str:
    """At most `limit` characters, cut with an ellipsis."""
    return text if len(text) <= limit else text[: limit - 1].rstrip() + "…"


def one_line(text: str, limit: int) -> str:
    return clip(" ".join(text.split()), limit)


_INLINE_MARKDOWN = re.compile(r"[\\*_~`|\[\]]")
_LINE_MARKDOWN = re.compile(r"^([ \t]*)([>#+-]|\d+\.)", re.MULTILINE)
_LINK_BRACKETS = re.compile(r"[\\\[\]]")


def _escape_marker(match: re.Match[str]) -> str:
    indent, marker = match[1], match[2]
    return indent + (marker[:-1] + "\\." if marker.endswith(".") else "\\" + marker)


def plain(text: str) -> str:
    """Someone's text shown as typed: Discord markdown escaped (the backslashes do not
    show), so `[text](https://…)` is not a masked link, `**` not bold, `# x` not a heading,
    `||x||` not a spoiler. Bare URLs stay visible as what they are."""
    text = _INLINE_MARKDOWN.sub(lambda match: "\\" + match[0], text)
    return _LINE_MARKDOWN.sub(_escape_marker, text)


def no_links(text: str) -> str:
    """Our own sentences (which may quote a provider or the model): only the brackets and
    backslashes escaped, so no masked link can form and nothing else changes."""
    return _LINK_BRACKETS.sub(lambda match: "\\" + match[0], text)


_VERBS = {TurnKind.IMAGINE: "Generating", TurnKind.EDIT: "Editing", TurnKind.REROLL: "Rerolling"}


def progress_text(update: Progress) -> str:
    """One short line per phase; the prompt quoted so a busy channel knows which is which."""
    prompt = plain(one_line(update.job.prompt, 300))
    if update.phase is Phase.QUEUED:
        position = f" (position {update.position})" if update.position else ""
        head = f"⏳ Queued{position}"
    elif update.phase is Phase.GENERATING:
        head = f"🎨 {_VERBS.get(update.job.kind, 'Generating')}… {int(update.elapsed)} s"
    else:
        head = "📤 Uploading…"
    return clip(f"{head}\n> {prompt}", MESSAGE_LIMIT)


def error_text(error: ImagineError) -> str:
    """What a user sees of a failure: its sentence, never its `detail`."""
    return clip(no_links(error.user_message), MESSAGE_LIMIT)


def failure_text(error: ImagineError, job: Job | None, mention: int | None = None) -> str:
    """A failed job's message: who (when the token is gone), the sentence, the prompt."""
    parts = []
    if mention is not None:
        parts.append(f"<@{mention}>")
    parts.append(f"⚠️ {no_links(error.user_message)}")
    text = " ".join(parts)
    if job is not None:
        text += f"\n> {plain(one_line(job.prompt, 300))}"
    return clip(text, MESSAGE_LIMIT)


def ready_text(user_id: int) -> str:
    """The mention that goes with an image delivered after the interaction token expired."""
    return f"<@{user_id}> your image is ready."


_EXTENSIONS = {"image/png": "png", "image/jpeg": "jpg", "image/webp": "webp"}


DEFAULT_UPLOAD_LIMIT: Final = 10 * 1024 * 1024
"""Discord's attachment limit without server boosts."""


def image_filename(turn_id: str, mime: str) -> str:
    return f"imagine-{turn_id}.{_EXTENSIONS.get(mime, 'png')}"


@dataclass(frozen=True, slots=True)
class Caption:
    description: str
    fields: tuple[tuple[str, str], ...]


_KIND_LABEL = {TurnKind.IMAGINE: "Prompt", TurnKind.EDIT: "Edit", TurnKind.REROLL: "Reroll"}


def caption(turn: Turn, notes: Sequence[str] = ()) -> Caption:
    """The prompt, model, aspect ratio, time and requester, inside Discord's embed limits
    (description 4096, field 1024, all together 6000). The prompt and the model's text are
    `plain`: a masked link in them never becomes a live link in our embed."""
    label = _KIND_LABEL.get(turn.kind, "Prompt")
    description = clip(f"**{label}:** {plain(turn.prompt)}", 3000)
    fields: list[tuple[str, str]] = [
        ("Model", clip(made_with(turn.model, turn.size, turn.provider), 200)),
        ("Aspect ratio", turn.aspect_ratio),
        ("Time", f"{turn.duration_s:.1f} s"),
        ("Requested by", f"<@{turn.user_id}>" if turn.user_id.isdigit() else "?"),
    ]
    if turn.text.strip():
        fields.append(("The model said", clip(plain(turn.text.strip()), 900)))
    if notes:
        fields.append(("Note", clip(no_links(" ".join(notes)), 900)))
    return Caption(description, tuple(fields))


def caption_embed(turn: Turn, filename: str, notes: Sequence[str] = ()) -> discord.Embed:
    parts = caption(turn, notes)
    embed = discord.Embed(description=parts.description, colour=discord.Colour.blurple())
    for name, value in parts.fields:
        embed.add_field(name=name, value=value, inline=len(value) < 60)
    embed.set_image(url=f"attachment://{filename}")
    return embed


def modal_value(components: Sequence[Any], field_id: str = INSTRUCTION_FIELD) -> str:
    """The text typed into a modal's field, from the submit payload (rows or labels)."""
    for component in components:
        if not isinstance(component, Mapping):
            continue
        if component.get("type") == 1:
            found = modal_value(component.get("components") or (), field_id)
        elif component.get("type") == 18:
            found = modal_value([component.get("component") or {}], field_id)
        elif component.get("custom_id") == field_id:
            found = str(component.get("value") or "")
        else:
            continue
        if found:
            return found
    return ""


def strip_mention(text: str, user_id: int | None) -> str:
    """A reply that also @mentions the bot: the mention is not part of the instruction."""
    if user_id is None:
        return text.strip()
    return re.sub(rf"<@!?{user_id}>", " ", text).strip()


def invite_url(application_id: int | str) -> str:
    """The link a server admin opens to add the bot, with exactly the scopes and permissions
    it uses."""
    return discord.utils.oauth_url(int(application_id), permissions=BOT_PERMISSIONS, scopes=SCOPES)


def user_install_url(application_id: int | str) -> str:
    """The link anyone opens to add the app to their own account (user install): the
    commands then work wherever they are, without the bot user (so no permissions)."""
    return (
        f"https://discord.com/oauth2/authorize?client_id={int(application_id)}"
        "&integration_type=1&scope=applications.commands"
    )


GUILD_INSTALL: Final = 0
USER_INSTALL: Final = 1


def bot_in_channel(interaction: discord.Interaction[Any]) -> bool:
    """Whether the bot user can post in the interaction's channel.

    Not in a group DM or a DM between other people (context 2), nor in a server reached only
    through a user install (`authorizing_integration_owners` without the guild install
    "0"); there the interaction webhook is the only way to answer. A DM with the bot
    (context 1), a guild install, and payloads without these fields are the bot's own.
    """
    context = interaction.context
    if context.private_channel:
        return False
    if context.dm_channel:
        return True
    owners: Mapping[int, int] = getattr(interaction, "_integration_owners", None) or {}
    return not owners or GUILD_INSTALL in owners


def interaction_destination(interaction: discord.Interaction[Any]) -> Destination:
    """Answer through this interaction's token while it lives, else in its channel."""
    return Destination(
        channel_id=interaction.channel_id or 0,
        user_id=interaction.user.id,
        guild_id=interaction.guild_id,
        application_id=interaction.application_id,
        token=interaction.token,
        token_created_at=interaction.created_at.timestamp(),
        upload_limit=interaction.filesize_limit or None,
        bot_absent=not bot_in_channel(interaction),
    )


def message_destination(message: discord.Message) -> Destination:
    """Answer a user's message with a reply to it."""
    return Destination(
        channel_id=message.channel.id,
        user_id=message.author.id,
        guild_id=message.guild.id if message.guild else getattr(message.channel, "guild_id", None),
        reply_to=message.id,
        upload_limit=message.guild.filesize_limit if message.guild else None,
    )
