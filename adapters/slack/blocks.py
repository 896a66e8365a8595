"""Block Kit for the bot's messages and the Edit modal: pure builders, inside Slack's limits.

Each builder returns `(text, blocks)`: `text` is the notification / screen-reader fallback
Slack asks for alongside blocks. Buttons carry only the action (in `action_id`) and a job or
turn id (in `value`), so they keep working after a restart.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from adapters.slack.convert import (
    ACTION_CANCEL,
    ACTION_DELETE,
    ACTION_EDIT,
    ACTION_REFRAME,
    ACTION_REROLL,
    ACTION_RETRY,
    EDIT_BLOCK,
    EDIT_INPUT,
    EDIT_MODAL,
    IMAGE_MODAL,
    EditTarget,
    ImageSource,
    reframe_value,
)
from bot.catalog import model_info
from bot.core import Phase, Progress, reframe_instruction
from bot.errors import MAX_PROMPT_CHARS
from bot.models import ASPECT_RATIOS

Block = dict[str, Any]
Message = tuple[str, list[Block]]

SECTION_LIMIT = 3000
TEXT_LIMIT = 3000

_VERBS = {"imagine": "imagined", "edit": "asked for an edit", "reroll": "rerolled"}
_REFRAMES = {reframe_instruction(ratio): ratio for ratio in ASPECT_RATIOS}
"""A 📐 job's prompt is the core's instruction: its header names the ratio instead."""


def escape(text: str) -> str:
    """Slack's three control characters, so a prompt can't ping @channel or fake a link."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def trim(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1].rstrip() + "…"


def header(user: str, kind: str, prompt: str) -> str:
    """`@ana imagined: a panda making latte art` (mrkdwn, escaped, within a section's limit)."""
    who = f"<@{user}>" if user else "Someone"
    ratio = _REFRAMES.get(prompt)
    if ratio is not None:
        return f"{who} changed the aspect ratio to {ratio}"
    return trim(f"{who} {_VERBS.get(kind, kind)}: {escape(prompt)}", SECTION_LIMIT)


def usage(models: Sequence[str]) -> str:
    """How to use `/imagine`, with the models on offer when there is a choice."""
    text = "Usage: `/imagine a panda making latte art --ar 16:9`"
    if len(models) < 2:
        return text
    choices = []
    for index, model in enumerate(models):
        info = model_info(model)
        sizes = f", --size {'/'.join(info.sizes)}" if info.sizes else ""
        default = ", default" if index == 0 else ""
        choices.append(f"`{escape(model)}` ({escape(info.label)}{default}{sizes})")
    return trim(
        f"Usage: `/imagine a panda making latte art --ar 16:9 --model ID --size 2K`\n"
        f"Models: {', '.join(choices)}",
        TEXT_LIMIT,
    )


def _section(text: str) -> Block:
    return {"type": "section", "text": {"type": "mrkdwn", "text": trim(text, SECTION_LIMIT)}}


def _context(*lines: str) -> Block:
    return {
        "type": "context",
        "elements": [{"type": "mrkdwn", "text": trim(line, TEXT_LIMIT)} for line in lines[:10]],
    }


def _button(label: str, action_id: str, value: str, style: str | None = None) -> Block:
    button: Block = {
        "type": "button",
        "text": {"type": "plain_text", "text": label, "emoji": True},
        "action_id": action_id,
        "value": value,
    }
    if style:
        button["style"] = style
    return button


def progress_line(update: Progress) -> str:
    if update.phase is Phase.QUEUED:
        where = f" — position {update.position} in line" if update.position else ""
        return f":hourglass_flowing_sand: Queued{where}"
    if update.phase is Phase.GENERATING:
        return f":art: Generating… {int(update.elapsed)} s"
    return ":outbox_tray: Uploading…"


def status_message(head: str, line: str, *, cancel_job: str | None = None) -> Message:
    """A request with its current status, and Cancel while it is queued or running."""
    blocks = [_section(head), _context(line)]
    if cancel_job:
        blocks.append(
            {"type": "actions", "elements": [_button("Cancel", ACTION_CANCEL, cancel_job)]}
        )
    return trim(f"{head} — {line}", TEXT_LIMIT), blocks


def _option(label: str, value: str) -> Block:
    return {"text": {"type": "plain_text", "text": label}, "value": value}


def reframe_select(turn_id: str, ratio: str) -> Block:
    """📐: every other aspect ratio; each option carries the turn, so it survives restarts."""
    return {
        "type": "static_select",
        "action_id": ACTION_REFRAME,
        "placeholder": {
            "type": "plain_text",
            "text": ":triangular_ruler: Aspect ratio",
            "emoji": True,
        },
        "options": [_option(r, reframe_value(turn_id, r)) for r in ASPECT_RATIOS if r != ratio],
    }


def done_message(
    head: str,
    turn_id: str,
    *,
    duration: float,
    ratio: str,
    made: str | None = None,
    notes: Sequence[str] = (),
) -> Message:
    """The outcome: the image is in the thread; Reroll, Edit, 📐 and Delete act on this
    turn. `made` is `bot.catalog.made_with` (model · size · via provider)."""
    by = f" · {escape(made)}" if made else ""
    line = f":white_check_mark: Done in {duration:.1f} s · {ratio}{by} · the image is in the thread"
    delete = _button("Delete", ACTION_DELETE, turn_id, style="danger")
    delete["confirm"] = {
        "title": {"type": "plain_text", "text": "Delete this image?"},
        "text": {"type": "plain_text", "text": "The image is removed from the thread."},
        "confirm": {"type": "plain_text", "text": "Delete"},
        "deny": {"type": "plain_text", "text": "Keep"},
    }
    buttons = [
        _button("Reroll", ACTION_REROLL, turn_id),
        _button("Edit", ACTION_EDIT, turn_id, style="primary"),
        delete,
        reframe_select(turn_id, ratio),
    ]
    blocks = [
        _section(head),
        _context(line, *[f":information_source: {escape(n)}" for n in notes]),
        {"type": "actions", "block_id": f"turn:{turn_id}", "elements": buttons},
    ]
    return trim(f"{head} — done", TEXT_LIMIT), blocks


def _retry_actions(job_id: str) -> Block:
    return {
        "type": "actions",
        "block_id": f"retry:{job_id}",
        "elements": [_button(":repeat: Retry", ACTION_RETRY, job_id)],
    }


def failed_message(head: str, user_message: str, *, retry_job: str | None = None) -> Message:
    """The request and the one human sentence that says what went wrong; Retry when trying
    again may help (`ImagineError.retryable`), for the failed job `retry_job`."""
    line = f":warning: {escape(user_message)}"
    content = [_section(head), _context(line)]
    if retry_job:
        content.append(_retry_actions(retry_job))
    return trim(f"{head} — {escape(user_message)}", TEXT_LIMIT), content


def error_message(user_message: str, *, retry_job: str | None = None) -> Message:
    """`error_text` as a thread reply, with Retry for the failed job `retry_job` if given."""
    text = error_text(user_message)
    if not retry_job:
        return text, []
    return text, [_context(text), _retry_actions(retry_job)]


def deleted_message(user: str) -> Message:
    text = f":wastebasket: Image deleted by <@{user}>."
    return text, [_context(text)]


def error_text(user_message: str) -> str:
    """A short error for a thread reply or an ephemeral message. Escaped: a sentence can
    quote what a user typed (`--ar <!here>`) or what the model said, and Slack would turn
    `<!here>` in `text` into a real ping."""
    return trim(f":warning: {escape(user_message)}", TEXT_LIMIT)


def edit_modal(target: EditTarget, prompt: str) -> dict[str, Any]:
    """The Edit button's modal; `private_metadata` says which turn and which thread."""
    return _instruction_modal(
        EDIT_MODAL,
        target.dump(),
        submit="Edit",
        label="What should change?",
        placeholder="make the cup blue --ar 16:9",
        context=f"Editing: {trim(escape(prompt), 500)}",
    )


def image_modal(source: ImageSource) -> dict[str, Any]:
    """The "Edit image" shortcut's modal: what to make of the message's picture(s)."""
    count = len(source.files)
    what = "this image" if count == 1 else f"these {count} images"
    return _instruction_modal(
        IMAGE_MODAL,
        source.dump(),
        submit="Create",
        label=f"What should I make of {what}?",
        placeholder="turn it into a watercolor postcard --ar 3:2",
    )


def _instruction_modal(
    callback_id: str,
    metadata: str,
    *,
    submit: str,
    label: str,
    placeholder: str,
    context: str | None = None,
) -> dict[str, Any]:
    """A modal titled "Edit image" asking for one instruction (read by `modal_instruction`)."""
    field = {
        "type": "input",
        "block_id": EDIT_BLOCK,
        "label": {"type": "plain_text", "text": label},
        "element": {
            "type": "plain_text_input",
            "action_id": EDIT_INPUT,
            "multiline": True,
            "max_length": MAX_PROMPT_CHARS,
            "placeholder": {"type": "plain_text", "text": placeholder},
        },
    }
    return {
        "type": "modal",
        "callback_id": callback_id,
        "private_metadata": metadata,
        "title": {"type": "plain_text", "text": "Edit image"},
        "submit": {"type": "plain_text", "text": submit},
        "close": {"type": "plain_text", "text": "Cancel"},
        "blocks": [*([_context(context)] if context else []), field],
    }
