"""What the ledger says: images and estimated spend, per user and per workspace.

The ledger is the jobs table (every accepted job that did not fail and was not cancelled);
`Store.usage_lines` groups it, and this module turns those lines into what `/usage` shows.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import date

from bot.errors import plural
from bot.policy import Period, Policy, Requester, money, until, workspace_noun


@dataclass(frozen=True, slots=True)
class UsageLine:
    """One user's images and estimated US$ in one workspace over a period."""

    platform: str
    workspace: str
    user: str
    images: int
    cost_usd: float


@dataclass(frozen=True, slots=True)
class Totals:
    images: int = 0
    cost_usd: float = 0.0

    @classmethod
    def of(cls, lines: Iterable[UsageLine]) -> Totals:
        lines = list(lines)
        return cls(sum(line.images for line in lines), sum(line.cost_usd for line in lines))


@dataclass(frozen=True, slots=True)
class Allowance:
    """A limit and how much of it is used; `limit` 0 means none."""

    used: float
    limit: float

    @property
    def left(self) -> float | None:
        return None if not self.limit else max(0.0, self.limit - self.used)


@dataclass(frozen=True, slots=True)
class WorkspaceUsage:
    """What an admin sees besides their own numbers."""

    today: Totals
    month: Totals
    top_users: tuple[UsageLine, ...]
    per_day: tuple[tuple[date, int], ...]
    """Images per day of this month so far (for the chart)."""

    @property
    def first_day(self) -> date:
        """The month's first day in the quota's zone (the report always starts there)."""
        return self.per_day[0][0]

    @property
    def chart_title(self) -> str:
        return f"Images per day, {self.first_day:%B %Y}"


@dataclass(frozen=True, slots=True)
class UsageReport:
    """`/usage`: the caller's images today and this month, what is left under each limit,
    and for admins the workspace."""

    who: Requester
    policy: Policy
    at: float
    day: Period
    month: Period
    tz_name: str
    mine_today: Totals
    mine_month: Totals
    user_day: Allowance
    workspace_day: Allowance
    budget: Allowance
    workspace: WorkspaceUsage | None = None


def top_users(lines: Sequence[UsageLine], count: int = 5) -> tuple[UsageLine, ...]:
    return tuple(sorted(lines, key=lambda line: (-line.images, -line.cost_usd, line.user))[:count])


def _left(allowance: Allowance, noun: str, *, usd: bool = False) -> str:
    if allowance.left is None:
        return "no limit"
    if usd:
        return f"{money(allowance.left)} left of {money(allowance.limit)}"
    return f"{int(allowance.left)} left of {plural(int(allowance.limit), noun)}"


ELSEWHERE = {
    "discord": "your images in other servers and DMs count too",
    "slack": "your images in other workspaces count too",
}


def _elsewhere(report: UsageReport) -> str:
    """A person's day counts every workspace of the platform: say so when that is why the
    limit's count is not this workspace's."""
    others = report.user_day.used != report.mine_today.images
    if not (report.user_day.limit and others):
        return ""
    return f" ({ELSEWHERE.get(report.who.platform, 'images elsewhere count too')})"


def render_usage(
    report: UsageReport,
    *,
    bold: str = "**",
    mention: str = "{user}",
) -> list[str]:
    """Plain lines for chat. `bold` is the platform's bold marker (`**` Discord, `*`
    Slack); `mention` formats a user id (`<@{user}>` on both)."""
    noun = workspace_noun(report.who.platform, report.who.workspace)
    day_reset = until(report.at, report.day.end)
    lines = [
        f"{bold}Your images{bold}: {plural(report.mine_today.images, 'image')} today "
        f"({money(report.mine_today.cost_usd)}), {report.mine_month.images} this month "
        f"({money(report.mine_month.cost_usd)}).",
        f"Your daily limit: {_left(report.user_day, 'image')}"
        + (f"; it resets in {day_reset}" if report.user_day.limit else "")
        + _elsewhere(report)
        + ".",
        f"This {noun} today: {_left(report.workspace_day, 'image')}"
        + (f"; it resets in {day_reset}." if report.workspace_day.limit else "."),
        f"Monthly budget: {_left(report.budget, '', usd=True)}"
        + (f"; it resets in {until(report.at, report.month.end)}." if report.budget.limit else "."),
    ]
    workspace = report.workspace
    if workspace is not None:
        lines += [
            "",
            f"{bold}This {noun}{bold}: {plural(workspace.today.images, 'image')} today "
            f"({money(workspace.today.cost_usd)}), {plural(workspace.month.images, 'image')} "
            f"this month ({money(workspace.month.cost_usd)} estimated).",
        ]
        if workspace.top_users:
            lines.append("Top users this month:")
            lines += [
                f"{rank}. {mention.format(user=line.user, id=line.user)} — "
                f"{plural(line.images, 'image')}, {money(line.cost_usd)}"
                for rank, line in enumerate(workspace.top_users, 1)
            ]
    lines.append(f"Days begin at midnight {report.tz_name}.")
    return lines
