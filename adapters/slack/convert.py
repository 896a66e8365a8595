"""Slack payloads → the core's words: pure functions, no I/O, testable with raw dicts.

Everything here decides what a payload *means* (a new image, a message that may edit a
thread, nothing at all); the handlers do the looking up and the talking.
"""

from __future__ import annotations

import html
import json
import re
from dataclasses import asdict, dataclass, field
from enum import StrEnum
from typing import Any

from bot.inputs import clean_prompt, split_prompt_flags
from bot.models import JSON, ThreadKey

PLATFORM = "slack"

ACTION_PREFIX = "imagine:"
ACTION_CANCEL = "imagine:cancel"
ACTION_REROLL = "imagine:reroll"
ACTION_EDIT = "imagine:edit"
ACTION_DELETE = "imagine:delete"
ACTION_RETRY = "imagine:retry"
EDIT_MODAL = "imagine:edit_modal"
EDIT_BLOCK = "instruction"
EDIT_INPUT = "value"

FILE_LINK_PREFIX = "file:"
"""Message-index entries that name an uploaded file (so Delete can remove it), not a ts."""

_REPLY_SUBTYPES = frozenset({None, "file_share", "thread_broadcast"})
"""Message subtypes a person sends; edits, deletes, joins and bot posts are something else."""

_ANGLE = re.compile(r"<([^<>]*)>")


# --- text -----------------------------------------------------------------------------------------


def slack_to_plain(text: str | None, bot_user_id: str | None = None) -> str:
    """Slack's escaped message text → what the person typed, minus mentions of the bot.

    `<@U1|ana>` → `@ana`, `<#C1|general>` → `#general`, `<https://x|label>` → `label`,
    `&lt;` → `<`; a mention of the bot itself disappears, it is how the bot was addressed.
    """

    def one(match: re.Match[str]) -> str:
        inner = match.group(1)
        target, _, label = inner.partition("|")
        if target.startswith("@"):
            if bot_user_id and target[1:] == bot_user_id:
                return ""
            return f"@{label or target[1:]}"
        if target.startswith("#"):
            return f"#{label or target[1:]}"
        if target.startswith("!"):
            return f"@{label or target[1:].split('^')[0]}"
        return label or target.removeprefix("mailto:")

    plain = _ANGLE.sub(one, text or "")
    return html.unescape(plain).strip()


def mentions(text: str | None, user_id: str | None) -> bool:
    """Whether a message's raw text mentions `user_id` (`<@U1>` or `<@U1|name>`)."""
    if not text or not user_id:
        return False
    return f"<@{user_id}>" in text or f"<@{user_id}|" in text


def parse_prompt(text: str | None, bot_user_id: str | None = None) -> tuple[str, str | None]:
    """Command text or a message → (prompt, aspect ratio); raises the core's input errors."""
    return parse_plain_prompt(slack_to_plain(text, bot_user_id))


def parse_plain_prompt(text: str | None) -> tuple[str, str | None]:
    """Text typed into a modal (not escaped by Slack) → (prompt, aspect ratio)."""
    prompt, ratio = split_prompt_flags(text or "")
    return clean_prompt(prompt), ratio


# --- files ----------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class FileRef:
    """What Slack says about an attached file, before a byte of it is downloaded."""

    id: str
    name: str
    mimetype: str | None
    size: int | None
    url: str | None

    @classmethod
    def of(cls, raw: dict[str, Any]) -> FileRef:
        size = raw.get("size")
        return cls(
            id=str(raw.get("id") or ""),
            name=str(raw.get("name") or raw.get("title") or "file"),
            mimetype=raw.get("mimetype") or None,
            size=size if isinstance(size, int) else None,
            url=raw.get("url_private_download") or raw.get("url_private") or None,
        )


def files_of(event: dict[str, Any]) -> tuple[FileRef, ...]:
    return tuple(FileRef.of(f) for f in event.get("files") or () if isinstance(f, dict))


# --- events ---------------------------------------------------------------------------------------


class Intent(StrEnum):
    NEW = "new"
    """Start an image thread keyed by `thread_ts`."""
    REPLY = "reply"
    """A message in a thread: an edit if the bot owns the thread, else nothing."""
    REPLY_OR_NEW = "reply_or_new"
    """A mention in a thread: an edit if the bot owns it, else a new image in that thread."""


@dataclass(frozen=True, slots=True)
class Inbound:
    """A person's message the bot may act on."""

    intent: Intent
    team: str
    channel: str
    ts: str
    thread_ts: str
    """The thread it belongs to, or will: for a top-level message, its own ts."""
    user: str
    text: str
    """Raw Slack text (still escaped, mentions included)."""
    files: tuple[FileRef, ...] = field(default=())

    @property
    def key(self) -> ThreadKey:
        return ThreadKey(PLATFORM, self.team, self.channel, self.thread_ts)

    @property
    def dedupe_id(self) -> str:
        """The same message seen as `app_mention` and as `message` shares this id."""
        return f"msg:{self.channel}:{self.ts}"


def _is_person(event: dict[str, Any], bot_user_id: str | None) -> bool:
    user = event.get("user")
    return (
        bool(user)
        and user != bot_user_id
        and not event.get("bot_id")
        and not event.get("bot_profile")
        and event.get("subtype") in _REPLY_SUBTYPES
    )


def message_intent(event: dict[str, Any], team: str, bot_user_id: str | None) -> Inbound | None:
    """A `message` event: a reply in some thread, a DM prompt, or nothing.

    In channels a message that mentions the bot is left to its `app_mention` twin, which
    Slack sends too. Direct messages get no `app_mention`, so there a top-level message is
    a prompt and a reply is a possible edit.
    """
    if event.get("type") != "message" or not _is_person(event, bot_user_id):
        return None
    is_dm = event.get("channel_type") == "im"
    if not is_dm and mentions(event.get("text"), bot_user_id):
        return None
    ts = str(event.get("ts") or "")
    thread_ts = str(event.get("thread_ts") or "")
    in_thread = bool(thread_ts) and thread_ts != ts
    if not ts or not (in_thread or is_dm):
        return None
    return _inbound(event, Intent.REPLY if in_thread else Intent.NEW, team, ts, thread_ts)


def mention_intent(event: dict[str, Any], team: str, bot_user_id: str | None) -> Inbound | None:
    """An `app_mention`: top level starts a thread on the mention itself; in a thread, see
    `Intent.REPLY_OR_NEW`."""
    if event.get("type") != "app_mention" or not _is_person(event, bot_user_id):
        return None
    ts = str(event.get("ts") or "")
    if not ts:
        return None
    thread_ts = str(event.get("thread_ts") or "")
    in_thread = bool(thread_ts) and thread_ts != ts
    return _inbound(event, Intent.REPLY_OR_NEW if in_thread else Intent.NEW, team, ts, thread_ts)


def _inbound(event: dict[str, Any], intent: Intent, team: str, ts: str, thread_ts: str) -> Inbound:
    """A message or mention as the handlers see it; a top-level one is its own thread root."""
    return Inbound(
        intent=intent,
        team=team,
        channel=str(event.get("channel") or ""),
        ts=ts,
        thread_ts=thread_ts if intent is not Intent.NEW else ts,
        user=str(event["user"]),
        text=str(event.get("text") or ""),
        files=files_of(event),
    )


def team_of(body: dict[str, Any], fallback: str | None = None) -> str:
    """The installation's workspace for a request (a shared channel's guest keeps ours)."""
    team = body.get("team_id") or (body.get("team") or {}).get("id") or fallback
    if not team:
        event = body.get("event") or {}
        team = event.get("team") or ""
    return str(team)


# --- where answers go -----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Destination:
    """Where one job's answers go, stored as the job's `destination` JSON.

    `status_ts` is the bot message that shows progress and then the outcome with buttons:
    the root itself for `/imagine`, a reply in the thread otherwise.
    """

    channel: str
    thread_ts: str
    root_ts: str
    status_ts: str | None
    user: str
    team: str = ""

    @property
    def status_is_root(self) -> bool:
        return self.status_ts is not None and self.status_ts == self.root_ts

    def to_json(self) -> JSON:
        return asdict(self)

    @classmethod
    def from_json(cls, value: JSON) -> Destination | None:
        if not isinstance(value, dict) or not value.get("channel") or not value.get("thread_ts"):
            return None
        return cls(
            channel=str(value["channel"]),
            thread_ts=str(value["thread_ts"]),
            root_ts=str(value.get("root_ts") or value["thread_ts"]),
            status_ts=str(value["status_ts"]) if value.get("status_ts") else None,
            user=str(value.get("user") or ""),
            team=str(value.get("team") or ""),
        )


@dataclass(frozen=True, slots=True)
class EditTarget:
    """The Edit modal's `private_metadata`: which turn, and the thread the answer goes to."""

    turn_id: str
    channel: str
    thread_ts: str

    def dump(self) -> str:
        return json.dumps({"turn": self.turn_id, "channel": self.channel, "thread": self.thread_ts})

    @classmethod
    def load(cls, raw: str | None) -> EditTarget | None:
        try:
            value = json.loads(raw or "")
            return cls(str(value["turn"]), str(value["channel"]), str(value["thread"]))
        except (ValueError, KeyError, TypeError):
            return None


def modal_instruction(view: dict[str, Any]) -> str:
    """The text typed into the Edit modal."""
    values = (view.get("state") or {}).get("values") or {}
    return str(((values.get(EDIT_BLOCK) or {}).get(EDIT_INPUT) or {}).get("value") or "")
