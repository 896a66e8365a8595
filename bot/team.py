"""Team control as the adapters use it: admission, `/usage`, `/imagine-admin`.

`bot.policy` decides; the store counts the ledger (the jobs table) and keeps each
workspace's stored settings. This module joins them for the core and the adapters: it builds
the `Admission` the store checks when it records a job, answers `/usage`, and shows and
changes a workspace's settings for its admins (every change is logged with who made it).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Literal
from zoneinfo import ZoneInfo

from bot.errors import ImagineError, plural
from bot.models import now
from bot.policy import (
    LISTS,
    NUMBERS,
    Admission,
    Overrides,
    Policy,
    Requester,
    day_of,
    effective,
    image_price,
    money,
    month_of,
)
from bot.store import Store
from bot.usage import Allowance, Totals, UsageReport, WorkspaceUsage, top_users

log = logging.getLogger(__name__)

Source = Literal["default", "environment", "admin"]


@dataclass(frozen=True, slots=True)
class TeamSettings:
    """The environment's side of team control (`IMAGINE_USER_DAILY_LIMIT` and the rest)."""

    env: Policy = field(default_factory=Policy)
    tz: ZoneInfo = field(default_factory=lambda: ZoneInfo("UTC"))
    price_per_image: float = 0.039
    default_model: str = "gemini-2.5-flash-image"
    admin_users: frozenset[str] = frozenset()


ADMINS_BY_PLATFORM = {
    "discord": "members with Manage Server",
    "slack": "workspace admins and owners",
}


class NotAdmin(ImagineError):
    code = "not_admin"

    def __init__(self, platform: str = "", *, detail: str | None = None) -> None:
        who = ADMINS_BY_PLATFORM.get(platform)
        also = f"{who} and the users the bot's operator named" if who else "the bot's admins"
        super().__init__(
            f"Only admins can see and change the bot's settings here: {also}.",
            detail=detail,
        )


class BadSetting(ImagineError):
    code = "bad_setting"

    def __init__(self, message: str, *, detail: str | None = None) -> None:
        super().__init__(message, detail=detail)


# --- what admins can change ------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SetNumber:
    """Set a limit (`0`: none) or, with None, follow the environment again."""

    name: str
    value: float | None


@dataclass(frozen=True, slots=True)
class SetMember:
    """Add (`present`) or remove one id in `allowed_channels`, `allowed_roles`,
    `allowed_users` or `blocked_users`. The first change copies the environment's list."""

    name: str
    item: str
    present: bool


@dataclass(frozen=True, slots=True)
class GiveDayBack:
    """The user's daily count starts again now (the workspace's counts do not)."""

    user: str


Change = SetNumber | SetMember | GiveDayBack


def apply_change(change: Change, stored: Overrides, env: Policy, at: float) -> Overrides:
    """The workspace's stored settings after `change` (pure; `BadSetting` when invalid)."""
    if isinstance(change, GiveDayBack):
        return replace(stored, day_resets={**stored.day_resets, change.user: at})
    if isinstance(change, SetNumber):
        if change.name not in NUMBERS:
            raise BadSetting(f"There is no limit called {change.name!r}.")
        value = change.value
        if value is not None and (value < 0 or value != value or value > 1e9):
            raise BadSetting("A limit must be a number from 0 (no limit) up.")
        if value is not None and change.name != "monthly_budget":
            if value != int(value):
                raise BadSetting("A daily limit is a whole number of images.")
            value = int(value)
        return stored.with_value(change.name, value)
    if change.name not in LISTS:
        raise BadSetting(f"There is no list called {change.name!r}.")
    item = change.item.strip()
    if not item:
        raise BadSetting("Name a channel, role or user.")
    current: frozenset[str] | None = getattr(stored, change.name)
    items = set(getattr(env, change.name) if current is None else current)
    if change.present:
        items.add(item)
    else:
        items.discard(item)
    return stored.with_value(change.name, frozenset(items))


LABELS = {
    "user_daily_limit": "the user daily limit",
    "workspace_daily_limit": "the workspace daily limit",
    "monthly_budget": "the monthly budget",
}

_MEMBER_WORDS = {
    # list: (format key, when added, when removed)
    "allowed_channels": ("channel", "allowed {x}", "removed {x} from the allowed channels"),
    "allowed_roles": (
        "role",
        "allowed the role {x}",
        "removed the role {x} from the allowed roles",
    ),
    "allowed_users": (
        "user",
        "let {x} use the bot in any channel",
        "removed {x} from the always-allowed users",
    ),
    "blocked_users": ("user", "blocked {x}", "unblocked {x}"),
}


def describe_change(
    change: Change, *, user: str = "{id}", channel: str = "{id}", role: str = "{id}"
) -> str:
    """What a change did, past tense, for the log and the admin's confirmation; the
    format strings turn ids into the platform's mentions."""
    if isinstance(change, GiveDayBack):
        return f"gave {user.format(id=change.user)} their day back"
    if isinstance(change, SetNumber):
        label = LABELS.get(change.name, change.name)
        if change.value is None:
            return f"made {label} follow the environment again"
        if not change.value:
            return f"removed {label}"
        if change.name == "monthly_budget":
            return f"set {label} to {money(change.value)}"
        return f"set {label} to {plural(int(change.value), 'image')}"
    key, added, removed = _MEMBER_WORDS.get(
        change.name, ("user", f"added {{x}} to {change.name}", f"removed {{x}} from {change.name}")
    )
    mention = {"user": user, "channel": channel, "role": role}[key].format(id=change.item)
    return (added if change.present else removed).format(x=mention)


@dataclass(frozen=True, slots=True)
class SettingsView:
    """The settings in force for a workspace, and where each comes from."""

    policy: Policy
    sources: Mapping[str, Source]
    tz_name: str
    price_per_image: float


def render_settings(
    view: SettingsView,
    *,
    bold: str = "**",
    channel: str = "{id}",
    role: str = "{id}",
    user: str = "{id}",
    roles: bool = True,
) -> list[str]:
    """Plain lines for chat; the format strings turn ids into the platform's mentions.
    `roles` False leaves out the role allow-list (Discord's; other platforms have none)."""
    p = view.policy

    def src(name: str) -> str:
        return {"default": "default", "environment": "from the environment", "admin": "set here"}[
            view.sources[name]
        ]

    def limit(value: float, noun: str) -> str:
        return "no limit" if not value else plural(int(value), noun)

    def ids(items: frozenset[str], fmt: str, empty: str) -> str:
        return ", ".join(fmt.format(id=item) for item in sorted(items)) or empty

    return [
        f"{bold}Settings in force{bold} (days begin at midnight {view.tz_name}; "
        f"{money(view.price_per_image)} per image):",
        f"• User daily limit: {limit(p.user_daily_limit, 'image')} ({src('user_daily_limit')})",
        f"• Workspace daily limit: {limit(p.workspace_daily_limit, 'image')} "
        f"({src('workspace_daily_limit')})",
        f"• Monthly budget: {money(p.monthly_budget) if p.monthly_budget else 'no limit'} "
        f"({src('monthly_budget')})",
        f"• Channels: {ids(p.allowed_channels, channel, 'all')} ({src('allowed_channels')})",
        *(
            [f"• Roles: {ids(p.allowed_roles, role, 'everyone')} ({src('allowed_roles')})"]
            if roles
            else []
        ),
        f"• Always allowed: {ids(p.allowed_users, user, 'nobody')} ({src('allowed_users')})",
        f"• Blocked: {ids(p.blocked_users, user, 'nobody')} ({src('blocked_users')})",
    ]


# --- the service -----------------------------------------------------------------------------


class TeamControl:
    """Admission, usage and settings for the core and the adapters."""

    def __init__(self, store: Store, settings: TeamSettings = TeamSettings()) -> None:
        self.store = store
        self.settings = settings

    def price(self, model: str, size: str | None = None) -> float:
        s = self.settings
        return image_price(model, s.default_model, s.price_per_image, size)

    def admission(self, who: Requester, model: str, size: str | None = None) -> Admission:
        price = self.price(model, size)
        return Admission(who, self.settings.env, price, self.settings.tz, now())

    async def check(self, who: Requester, model: str, size: str | None = None) -> None:
        """Raise `PolicyRefused` when the policy refuses `who` now. A read: recording the
        job decides again, exactly (`Store.add_job`)."""
        admission = self.admission(who, model, size)
        refusal = await self.store.check_admission(admission)
        if refusal is not None:
            raise admission.refused(refusal)

    def is_admin(self, who: Requester) -> bool:
        return who.platform_admin or who.user in self.settings.admin_users

    async def usage(self, who: Requester) -> UsageReport:
        """The caller's numbers; an admin's report adds the workspace's."""
        at = now()
        tz = self.settings.tz
        day, month = day_of(at, tz), month_of(at, tz)
        overrides = await self.store.get_overrides(who.scope)
        policy = effective(self.settings.env, overrides)
        scope = {"platform": who.platform, "workspace": who.workspace}
        month_lines = await self.store.usage_lines(month.start, month.end, **scope)
        today_lines = await self.store.usage_lines(day.start, day.end, **scope)
        since = max(day.start, overrides.day_resets.get(who.user, 0.0))
        # the daily limit counts a person's images in every workspace of the platform
        counted_today = await self.store.usage_lines(
            since, day.end, platform=who.platform, user=who.user
        )
        mine_month = Totals.of(line for line in month_lines if line.user == who.user)
        mine_today = Totals.of(line for line in today_lines if line.user == who.user)
        workspace_today, workspace_month = Totals.of(today_lines), Totals.of(month_lines)
        report = UsageReport(
            who=who,
            policy=policy,
            at=at,
            day=day,
            month=month,
            tz_name=tz.key,
            mine_today=mine_today,
            mine_month=mine_month,
            user_day=Allowance(Totals.of(counted_today).images, policy.user_daily_limit),
            workspace_day=Allowance(workspace_today.images, policy.workspace_daily_limit),
            budget=Allowance(workspace_month.cost_usd, policy.monthly_budget),
        )
        if not self.is_admin(who):
            return report
        days = [day_of(month.start, tz)]
        while days[-1].end < min(day.end, month.end):
            days.append(day_of(days[-1].end, tz))
        boundaries = [d.start for d in days] + [days[-1].end]
        per_day = await self.store.usage_by_period(who.scope, boundaries)
        workspace = WorkspaceUsage(
            today=workspace_today,
            month=workspace_month,
            top_users=top_users(month_lines),
            per_day=tuple(
                (datetime.fromtimestamp(d.start, tz).date(), n)
                for d, n in zip(days, per_day, strict=True)
            ),
        )
        return replace(report, workspace=workspace)

    async def view(self, who: Requester) -> SettingsView:
        """The settings in force where `who` is (admins only)."""
        self._require_admin(who)
        return self._view(await self.store.get_overrides(who.scope))

    async def change(self, who: Requester, change: Change) -> SettingsView:
        """Apply one admin change to `who`'s workspace; logged with who made it."""
        self._require_admin(who)
        env = self.settings.env
        at = now()
        stored = await self.store.update_overrides(
            who.scope, lambda current: apply_change(change, current, env, at), who.user
        )
        log.info(
            "admin %s on %s/%s %s",
            who.user,
            who.platform,
            who.workspace,
            describe_change(change),
            extra={"admin": who.user, "workspace": who.workspace, "platform": who.platform},
        )
        return self._view(stored)

    def _view(self, stored: Overrides) -> SettingsView:
        sources: dict[str, Source] = {}
        env, default = self.settings.env, Policy()
        for name in (*NUMBERS, *LISTS):
            if getattr(stored, name) is not None:
                sources[name] = "admin"
            elif getattr(env, name) != getattr(default, name):
                sources[name] = "environment"
            else:
                sources[name] = "default"
        return SettingsView(
            effective(self.settings.env, stored),
            sources,
            self.settings.tz.key,
            self.settings.price_per_image,
        )

    def _require_admin(self, who: Requester) -> None:
        if not self.is_admin(who):
            raise NotAdmin(who.platform, detail=f"{who.platform}/{who.workspace} user {who.user}")
