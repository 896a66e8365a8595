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

from bot.catalog import model_info
from bot.errors import MAX_REFERENCE_IMAGES, ImagineError
from bot.inputs import clean_prompt, split_prompt_flags
from bot.models import ASPECT_RATIOS, JSON, ThreadKey

PLATFORM = "slack"

ACTION_PREFIX = "imagine:"
ACTION_CANCEL = "imagine:cancel"
ACTION_REROLL = "imagine:reroll"
ACTION_EDIT = "imagine:edit"
ACTION_DELETE = "imagine:delete"
ACTION_RETRY = "imagine:retry"
ACTION_REFRAME = "imagine:reframe"
"""📐: a `static_select` whose option values are `<turn id>|<ratio>`."""
EDIT_MODAL = "imagine:edit_modal"
IMAGE_MODAL = "imagine:image_modal"
"""The modal of the "Edit image" message shortcut (a new thread from a message's picture)."""
SHORTCUT_EDIT_IMAGE = "imagine_edit_image"
"""The message shortcut's `callback_id`, as manifest.yml declares it."""
EDIT_BLOCK = "instruction"
EDIT_INPUT = "value"

FILE_LINK_PREFIX = "file:"
"""Message-index entries that name an uploaded file (so Delete can remove it), not a ts."""

_REPLY_SUBTYPES = frozenset({None, "file_share", "thread_broadcast"})
"""Message subtypes a person sends; edits, deletes, joins and bot posts are something else."""

_ANGLE = re.compile(r"<([^<>]*)>")

_METADATA_LIMIT = 3000
"""Slack's limit on a view's `private_metadata`."""


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


# --- --model and --size ---------------------------------------------------------------------------

_FLAG = r"(?:^|(?<=\s))--(?:{names})(?:=(\S*)|(?=\s|$)(?:\s+(?!--)(\S+))?)"
_MODEL_FLAG = re.compile(_FLAG.format(names="model"), re.IGNORECASE)
_SIZE_FLAG = re.compile(_FLAG.format(names="size"), re.IGNORECASE)
_SIZE_VALUE = re.compile(r"\d+k", re.IGNORECASE)


class FlagMisused(ImagineError):
    """`--model` or `--size` with nothing after it, or given twice (worded like `--ar`'s)."""

    code = "bad_flag"

    def __init__(self, flag: str, example: str, *, twice: bool, detail: str | None = None) -> None:
        self.twice = twice
        what = "a model id" if flag == "--model" else "a size"
        super().__init__(
            f"Give {flag} only once, like {flag} {example}."
            if twice
            else f"{flag} needs {what} after it, like {flag} {example}.",
            detail=detail,
        )


class ModelFixedInThread(ImagineError):
    """An edit keeps its thread's model and size; `--model`/`--size` only start threads."""

    code = "model_fixed_in_thread"

    def __init__(self, *, detail: str | None = None) -> None:
        super().__init__(
            "An image thread keeps the model and size it started with. To use another, "
            "start a new image: /imagine <prompt> --model ID --size 2K.",
            detail=detail,
        )


@dataclass(frozen=True, slots=True)
class Asked:
    """What a person typed, with its flags taken out (model and size not yet checked)."""

    prompt: str
    ratio: str | None = None
    model: str | None = None
    size: str | None = None

    @property
    def chose_model(self) -> bool:
        return self.model is not None or self.size is not None


def _take_flag(
    text: str, pattern: re.Pattern[str], flag: str, example: str
) -> tuple[str, str | None]:
    matches = list(pattern.finditer(text))
    if not matches:
        return text, None
    if len(matches) > 1:
        raise FlagMisused(flag, example, twice=True)
    match = matches[0]
    value = match.group(1) if match.group(1) is not None else match.group(2)
    if not value:
        raise FlagMisused(flag, example, twice=False)
    return text[: match.start()] + " " + text[match.end() :], value


def parse_request(text: str | None, bot_user_id: str | None = None) -> Asked:
    """Command text or a message → prompt and `--ar`, `--model`, `--size`; raises the
    input errors (a flag twice or without a value is one error, like `--ar`)."""
    return parse_plain_request(slack_to_plain(text, bot_user_id))


def parse_plain_request(text: str | None) -> Asked:
    """Text typed into a modal (not escaped by Slack) → `Asked`."""
    rest, model = _take_flag(text or "", _MODEL_FLAG, "--model", "gemini-3-pro-image-preview")
    rest, size = _take_flag(rest, _SIZE_FLAG, "--size", "2K")
    prompt, ratio = split_prompt_flags(rest)
    if "\n" not in prompt:
        prompt = " ".join(prompt.split())
    if size is not None and _SIZE_VALUE.fullmatch(size):
        size = size.upper()
    return Asked(clean_prompt(prompt), ratio, model, size)


def _folded(text: str) -> str:
    return "".join(char for char in text.lower() if char.isalnum())


def resolve_model(value: str | None, offered: tuple[str, ...]) -> str | None:
    """`--model`'s value → one of the offered model ids: the id itself, or, ignoring case
    and punctuation, an id or label (`Gemini-3-Pro-Image`) or the start of exactly one of
    them (`gemini-3-pro`). Anything else comes back as typed, for `choose_model` to refuse
    by name."""
    if value is None:
        return None
    if value in offered:
        return value
    key = _folded(value)
    if not key:
        return value
    names = {model: (_folded(model), _folded(model_info(model).label)) for model in offered}
    exact = [model for model, folded in names.items() if key in folded]
    if len(exact) == 1:
        return exact[0]
    prefixed = [m for m, folded in names.items() if any(f.startswith(key) for f in folded)]
    return prefixed[0] if len(prefixed) == 1 else value


def reframe_value(turn_id: str, ratio: str) -> str:
    return f"{turn_id}|{ratio}"


def parse_reframe_value(value: str | None) -> tuple[str, str] | None:
    """A 📐 option's value → (turn id, ratio), or None if it is not one of ours."""
    turn_id, _, ratio = (value or "").partition("|")
    if not turn_id or ratio not in ASPECT_RATIOS:
        return None
    return turn_id, ratio


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


def image_files(message: dict[str, Any]) -> tuple[FileRef, ...]:
    """The files of a message that are (or may be: a Slack Connect stub says nothing yet)
    pictures, at most as many as a request takes."""
    refs = files_of(message)
    images = (f for f in refs if f.mimetype is None or f.mimetype.lower().startswith("image/"))
    return tuple(images)[:MAX_REFERENCE_IMAGES]


@dataclass(frozen=True, slots=True)
class ImageSource:
    """The "Edit image" modal's `private_metadata`: the message's channel, its pictures and
    the shortcut's `response_url` (for private answers where the bot is not a member).
    Slack gives it back untouched with the submission, so it survives a restart."""

    channel: str
    message_ts: str
    files: tuple[FileRef, ...]
    response_url: str | None = None

    def dump(self) -> str:
        value = {
            "channel": self.channel,
            "ts": self.message_ts,
            "files": [asdict(f) for f in self.files],
            "response_url": self.response_url,
        }
        text = json.dumps(value, separators=(",", ":"))
        if len(text) > _METADATA_LIMIT:  # long names and URLs: ids only, files.info completes
            value["files"] = [{"id": f.id, "name": f.name[:100]} for f in self.files]
            text = json.dumps(value, separators=(",", ":"))
        return text

    @classmethod
    def load(cls, raw: str | None) -> ImageSource | None:
        try:
            value = json.loads(raw or "")
            files = tuple(
                FileRef(
                    id=str(f["id"]),
                    name=str(f.get("name") or "file"),
                    mimetype=f.get("mimetype") or None,
                    size=f.get("size") if isinstance(f.get("size"), int) else None,
                    url=f.get("url") or None,
                )
                for f in value["files"]
            )
            url = value.get("response_url")
            return cls(str(value["channel"]), str(value["ts"]), files, str(url) if url else None)
        except (ValueError, KeyError, TypeError, AttributeError):
            return None


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
