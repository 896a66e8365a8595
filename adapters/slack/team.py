"""Team control on Slack: `/imagine-usage`, `/imagine-admin` and its modal, and who is an admin.

Slack says who runs a workspace: `users.info` → `is_admin`, `is_owner`, `is_primary_owner`
(the `users:read` scope). `IMAGINE_ADMIN_USERS` adds more (`TeamControl.is_admin`). Without
that scope nobody is a Slack admin, which the log says once.

`/imagine-usage` answers privately (the command's `response_url`); an admin also gets the
chart of images per day in a direct message, since an ephemeral message cannot carry a file.

`/imagine-admin` opens a modal: the settings in force, and a form. On submit, what the form
holds is compared with what it showed when it opened (each element's `initial_*`, which
Slack sends back inside the submitted view), and only those differences become `bot.team`
changes, so a change another admin made meanwhile is not undone. The number fields:

- prefilled with the value an admin set in this workspace; empty while the environment's
  value (or the default, no limit) applies;
- leave a field as it is to keep it, type a number to set it (`0`: no limit), empty it to
  follow the environment again.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import re
import time
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any

import aiohttp
from slack_bolt.async_app import AsyncAck, AsyncApp, AsyncBoltContext, AsyncRespond
from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient

from adapters.slack import blocks
from adapters.slack.convert import PLATFORM
from adapters.slack.handlers import workspace
from bot.chart import usage_chart
from bot.core import ImagineBot
from bot.errors import ImagineError, InternalError, plural
from bot.policy import NUMBERS, Overrides, Policy, Requester, money
from bot.team import (
    BadSetting,
    Change,
    GiveDayBack,
    NotAdmin,
    SetMember,
    SetNumber,
    SettingsView,
    TeamSettings,
    apply_change,
    describe_change,
    render_settings,
)
from bot.usage import WorkspaceUsage, render_usage

log = logging.getLogger(__name__)

USAGE_COMMAND = "/imagine-usage"
ADMIN_COMMAND = "/imagine-admin"
ADMIN_MODAL = "imagine:admin_modal"
INPUT = "value"
"""The `action_id` of every element in the admin modal (its block says which setting)."""
DAY_BACK = "day_back"
CHANNEL = "<#{id}>"
USER = "<@{id}>"
CHART_SENT = "I sent you the chart of images per day in a DM."
CHART_NOT_SENT = "I couldn't send you the chart in a DM."

_SLACK_CHANNEL = re.compile(r"^[CGD][A-Z0-9]+$")
_SLACK_USER = re.compile(r"^[UW][A-Z0-9]+$")
_USER_LISTS = ("allowed_users", "blocked_users")
_LABELS = {
    "user_daily_limit": "Images per user per day",
    "workspace_daily_limit": "Images per day for the whole workspace",
    "monthly_budget": "Monthly budget in US$ (estimated spend)",
    "allowed_channels": "Channels where I make images (none: all)",
    "allowed_users": "Always allowed (pass the channel list, not the limits)",
    "blocked_users": "Blocked users",
    DAY_BACK: "Give a day back to",
}


# --- who is an admin ---------------------------------------------------------------------------


class SlackAdmins:
    """Whether Slack calls a user a workspace admin or owner, asked at most once per `ttl`
    seconds per user (a modal's open and submit, a usage check, all within a few minutes)."""

    def __init__(self, client: AsyncWebClient, *, ttl: float = 60.0, timeout: float = 2.0):
        self.client = client
        self.ttl = ttl
        self.timeout = timeout
        self._known: dict[str, tuple[float, bool]] = {}
        self._warned = False

    async def __call__(self, user: str, team: str = "") -> bool:
        """Whether `user` is an admin or owner of `team` (the workspace asking): a Slack
        Connect guest who administers their own organisation is not one of ours."""
        clock = time.monotonic()
        key = f"{team}:{user}"
        known = self._known.get(key)
        if known is not None and known[0] > clock:
            return known[1]
        answer = await self._ask(user, team)
        if answer is not None:
            self._known[key] = (clock + self.ttl, answer)
        return bool(answer)

    async def _ask(self, user: str, team: str = "") -> bool | None:
        """Slack's answer; False when Slack refuses (no `users:read`), None when unreachable."""
        try:
            async with asyncio.timeout(self.timeout):
                response = await self.client.users_info(user=user)
        except SlackApiError as exc:
            self._warn(_error(exc))
            return False
        except (aiohttp.ClientError, TimeoutError) as exc:
            log.warning("users.info for %s failed (%s): not treated as admin", user, exc)
            return None
        info = response.get("user") or {}
        teams = {info.get("team_id"), *((info.get("enterprise_user") or {}).get("teams") or ())}
        if team and info.get("team_id") is not None and team not in teams:
            return False  # an admin of another organisation, here through Slack Connect
        return any(bool(info.get(k)) for k in ("is_admin", "is_owner", "is_primary_owner"))

    def _warn(self, error: str) -> None:
        if self._warned:
            log.debug("users.info refused: %s", error)
            return
        self._warned = True
        log.warning(
            "Slack refused users.info (%s): workspace admins and owners are not recognised as "
            "imagine-bot admins. Add the users:read scope (adapters/slack/manifest.yml) and "
            "reinstall the app, or list admins in IMAGINE_ADMIN_USERS.",
            error,
        )


# --- the admin modal ---------------------------------------------------------------------------


def slack_settings(view: SettingsView) -> list[str]:
    """The settings in force with Slack mentions. Roles are Discord's: not shown here."""
    return render_settings(view, bold="*", channel=CHANNEL, user=USER, roles=False)


def _number_text(name: str, value: float) -> str:
    return f"{value:.2f}" if name == "monthly_budget" else str(int(value))


def _limit_text(name: str, value: float) -> str:
    if not value:
        return "no limit"
    return money(value) if name == "monthly_budget" else plural(int(value), "image")


def _text(text: str) -> dict[str, Any]:
    return {"type": "plain_text", "text": text}


def _input(block_id: str, element: dict[str, Any], hint: str | None = None) -> dict[str, Any]:
    block: dict[str, Any] = {
        "type": "input",
        "block_id": block_id,
        "optional": True,
        "label": _text(_LABELS[block_id]),
        "element": {"action_id": INPUT, **element},
    }
    if hint:
        block["hint"] = _text(hint)
    return block


def _number_input(name: str, view: SettingsView, env: TeamSettings) -> dict[str, Any]:
    """Prefilled only with what an admin set here; the hint says what empty means."""
    element: dict[str, Any] = {
        "type": "plain_text_input",
        "placeholder": _text(_limit_text(name, getattr(view.policy, name))),
    }
    if view.sources[name] == "admin":
        element["initial_value"] = _number_text(name, getattr(view.policy, name))
    value = getattr(env.env, name)
    follow = "the environment" if value != getattr(Policy(), name) else "the default"
    hint = f"Empty: follow {follow} ({_limit_text(name, value)}). 0: no limit."
    if name == "monthly_budget":
        hint += f" Each image counts {money(view.price_per_image)}."
    return _input(name, element, hint)


def _ids(items: frozenset[str], pattern: re.Pattern[str]) -> list[str]:
    """Slack ids only: the environment's lists may hold other platforms' ids too."""
    return sorted(item for item in items if pattern.match(item))


def admin_modal(view: SettingsView, env: TeamSettings, channel: str) -> dict[str, Any]:
    """The `/imagine-admin` modal: the settings in force, then the form that changes them.
    `private_metadata` keeps the channel the command came from, for the confirmation."""
    channels: dict[str, Any] = {
        "type": "multi_conversations_select",
        "filter": {"include": ["public", "private"], "exclude_bot_users": True},
    }
    if initial := _ids(view.policy.allowed_channels, _SLACK_CHANNEL):
        channels["initial_conversations"] = initial
    form = [
        *(_number_input(name, view, env) for name in NUMBERS),
        _input("allowed_channels", channels),
    ]
    for name in _USER_LISTS:
        users: dict[str, Any] = {"type": "multi_users_select"}
        if initial := _ids(getattr(view.policy, name), _SLACK_USER):
            users["initial_users"] = initial
        form.append(_input(name, users))
    form.append(
        _input(
            DAY_BACK,
            {"type": "users_select"},
            "Their count for today starts again now (the workspace's does not).",
        )
    )
    summary = blocks.trim("\n".join(slack_settings(view)), blocks.SECTION_LIMIT)
    return {
        "type": "modal",
        "callback_id": ADMIN_MODAL,
        "private_metadata": json.dumps({"channel": channel}),
        "title": _text("imagine-bot settings"),
        "submit": _text("Save"),
        "close": _text("Close"),
        "blocks": [
            {"type": "section", "text": {"type": "mrkdwn", "text": summary}},
            {"type": "divider"},
            *form,
        ],
    }


class FieldErrors(Exception):
    """Numbers that are not valid settings: block id → the sentence shown under the field."""

    def __init__(self, errors: Mapping[str, str]) -> None:
        super().__init__(", ".join(errors))
        self.errors = dict(errors)


def parse_number(name: str, raw: str) -> float:
    """A number typed into the form, checked by the core's own rules (`BadSetting`)."""
    text = raw.strip().replace(",", "")
    if name == "monthly_budget":
        text = text.removeprefix("$").strip()
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not math.isfinite(value):
        example = "25 or 12.50" if name == "monthly_budget" else "20"
        raise BadSetting(f"Type a number, like {example} (0: no limit), or leave it empty.")
    apply_change(SetNumber(name, value), Overrides(), Policy(), 0.0)
    return value


def _initial(view: Mapping[str, Any]) -> dict[str, Any]:
    """What each field showed when the modal opened (Slack returns the view's blocks)."""
    shown: dict[str, Any] = {}
    for block in view.get("blocks") or ():
        element = block.get("element") or {}
        for key in ("initial_value", "initial_conversations", "initial_users"):
            if key in element:
                shown[str(block.get("block_id"))] = element[key]
    return shown


def _state(view: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    values = (view.get("state") or {}).get("values") or {}
    return {block: fields.get(INPUT) or {} for block, fields in values.items()}


def changes_from(view: Mapping[str, Any]) -> list[Change]:
    """The submitted form → the changes it asks for; `FieldErrors` for bad numbers."""
    shown, state = _initial(view), _state(view)
    changes: list[Change] = []
    errors: dict[str, str] = {}
    for name in NUMBERS:
        raw = str(state.get(name, {}).get("value") or "").strip()
        if raw == str(shown.get(name) or "").strip():
            continue
        if not raw:
            changes.append(SetNumber(name, None))
            continue
        try:
            changes.append(SetNumber(name, parse_number(name, raw)))
        except BadSetting as error:
            errors[name] = blocks.trim(error.user_message, 150)
    if errors:
        raise FieldErrors(errors)
    selected = {
        "allowed_channels": state.get("allowed_channels", {}).get("selected_conversations"),
        **{name: state.get(name, {}).get("selected_users") for name in _USER_LISTS},
    }
    for listed, now in selected.items():
        before, after = set(shown.get(listed) or ()), set(now or ())
        changes += [SetMember(listed, item, True) for item in sorted(after - before)]
        changes += [SetMember(listed, item, False) for item in sorted(before - after)]
    if day_back := state.get(DAY_BACK, {}).get("selected_user"):
        changes.append(GiveDayBack(str(day_back)))
    return changes


def confirmation(done: list[Change], view: SettingsView | None, error: Exception | None) -> str:
    """What the admin reads after Save: what changed, and the settings now in force."""
    if done:
        said = [describe_change(change, user=USER, channel=CHANNEL) for change in done]
        lines = [":white_check_mark: *Saved.* You " + "; ".join(said) + "."]
    else:
        lines = ["Nothing changed."]
    if error is not None:
        message = error.user_message if isinstance(error, ImagineError) else str(error)
        lines.append(blocks.error_text(message))
    if view is not None:
        lines += ["", *slack_settings(view)]
    return "\n".join(lines)


@dataclass(frozen=True, slots=True)
class _Meta:
    channel: str

    @classmethod
    def load(cls, raw: str | None) -> _Meta:
        try:
            return cls(str(json.loads(raw or "")["channel"]))
        except (ValueError, KeyError, TypeError):
            return cls("")


# --- the listeners -----------------------------------------------------------------------------


class SlackTeam:
    """`/imagine-usage`, `/imagine-admin` and the admin modal's submission."""

    def __init__(self, core: ImagineBot, client: AsyncWebClient, admins: SlackAdmins) -> None:
        self.core = core
        self.client = client
        self.admins = admins

    def register(self, app: AsyncApp) -> None:
        app.command(USAGE_COMMAND)(self.on_usage)
        app.command(ADMIN_COMMAND)(self.on_admin)
        app.view(ADMIN_MODAL)(self.on_admin_submit)

    async def requester(self, team: str, channel: str, user: str) -> Requester:
        """`platform_admin` from Slack, asked only when `IMAGINE_ADMIN_USERS` doesn't say."""
        who = Requester(PLATFORM, team, channel, user)
        if self.core.team.is_admin(who):
            return who
        return replace(who, platform_admin=await self.admins(user, team))

    # --- /imagine-usage ---------------------------------------------------------------------------

    async def on_usage(
        self,
        ack: AsyncAck,
        command: dict[str, Any],
        respond: AsyncRespond,
        context: AsyncBoltContext,
    ) -> None:
        await ack()
        user = str(command.get("user_id") or "")
        channel = str(command.get("channel_id") or "")
        try:
            who = await self.requester(workspace(context, command), channel, user)
            report = await self.core.team.usage(who)
            lines = render_usage(report, bold="*", mention="<@{user}>")
            if report.workspace is not None:
                sent = await self._send_chart(user, report.workspace)
                lines += ["", CHART_SENT if sent else CHART_NOT_SENT]
            text = "\n".join(lines)
        except Exception:
            log.exception("%s for %s failed", USAGE_COMMAND, user)
            text = blocks.error_text(InternalError().user_message)
        await _respond(respond, text)

    async def _send_chart(self, user: str, usage: WorkspaceUsage) -> bool:
        """The chart of images per day, into a DM with the admin."""
        month, title = usage.first_day, usage.chart_title
        try:
            image = await usage_chart(usage.per_day, title)
            channel = await self._dm(user)
            await self.client.files_upload_v2(
                channel=channel,
                file=image.data,
                filename=f"imagine-usage-{month:%Y-%m}.png",
                title=title,
                alt_txt=title,
            )
        except SlackApiError as exc:
            log.warning("could not send %s the usage chart: %s", user, _error(exc))
            return False
        return True

    # --- /imagine-admin ---------------------------------------------------------------------------

    async def on_admin(
        self,
        ack: AsyncAck,
        command: dict[str, Any],
        respond: AsyncRespond,
        context: AsyncBoltContext,
    ) -> None:
        await ack()
        user = str(command.get("user_id") or "")
        channel = str(command.get("channel_id") or "")
        try:
            who = await self.requester(workspace(context, command), channel, user)
            view = await self.core.team.view(who)
        except NotAdmin as refused:
            log.info("%s refused for %s: not an admin", ADMIN_COMMAND, user)
            await _respond(respond, blocks.error_text(refused.user_message))
            return
        except Exception:
            log.exception("%s for %s failed", ADMIN_COMMAND, user)
            await _respond(respond, blocks.error_text(InternalError().user_message))
            return
        modal = admin_modal(view, self.core.team.settings, channel)
        try:
            trigger = str(command.get("trigger_id") or "")
            await self.client.views_open(trigger_id=trigger, view=modal)
        except SlackApiError as exc:  # e.g. the trigger expired: the settings, as text
            log.warning("could not open the admin modal: %s", _error(exc))
            retry = f"The form didn't open; try {ADMIN_COMMAND} again."
            lines = [*slack_settings(view), "", retry]
            await _respond(respond, "\n".join(lines))

    async def on_admin_submit(
        self,
        ack: AsyncAck,
        body: dict[str, Any],
        view: dict[str, Any],
        context: AsyncBoltContext,
    ) -> None:
        user = str((body.get("user") or {}).get("id") or "")
        try:
            changes = changes_from(view)
        except FieldErrors as bad:
            await ack(response_action="errors", errors=bad.errors)
            return
        await ack()
        channel = _Meta.load(view.get("private_metadata")).channel
        done: list[Change] = []
        settings: SettingsView | None = None
        error: Exception | None = None
        try:
            who = await self.requester(workspace(context, body), channel, user)
            settings = await self.core.team.view(who)
            for change in changes:
                settings = await self.core.team.change(who, change)
                done.append(change)
        except ImagineError as refused:  # no longer an admin, or a setting the core refused
            log.info("admin changes by %s refused: %s", user, refused)
            error = refused
        except Exception as exc:
            log.exception("applying admin changes by %s failed", user)
            error = InternalError(detail=repr(exc))
        await self._tell(channel, user, confirmation(done, settings, error))

    # --- saying things privately ------------------------------------------------------------------

    async def _dm(self, user: str) -> str:
        opened = await self.client.conversations_open(users=user)
        return str((opened.get("channel") or {}).get("id") or "")

    async def _tell(self, channel: str, user: str, text: str) -> None:
        """Ephemeral where the command was; a DM if the bot can't post there."""
        try:
            if channel:
                await self.client.chat_postEphemeral(channel=channel, user=user, text=text)
                return
        except SlackApiError as exc:
            log.info("ephemeral to %s in %s failed: %s", user, channel, _error(exc))
        try:
            await self.client.chat_postMessage(channel=await self._dm(user), text=text)
        except SlackApiError as exc:
            log.warning("could not tell %s: %s", user, _error(exc))


def _error(exc: SlackApiError) -> str:
    """Slack's error code, also when the answer wasn't JSON (a proxy's error page)."""
    data = exc.response.data
    return (
        str(data.get("error") or "error")
        if isinstance(data, dict)
        else f"HTTP {exc.response.status_code}"
    )


async def _respond(respond: AsyncRespond, text: str) -> None:
    try:
        await respond(text=text, response_type="ephemeral")
    except Exception as exc:
        log.warning("could not answer a command through its response_url: %r", exc)
