"""Who may generate, and how much: one pure decision, and the words for its refusals.

`decide` answers "may this requester run one more job, and if not, which rule refused it,
with which numbers". It knows nothing of databases: the store counts the ledger (the jobs
table) inside the transaction that records the job and passes the counts in, so a limit
holds exactly however many processes admit at once (`Store.add_job`). The same function,
fed a read outside that transaction, lets an adapter refuse inside its acknowledgement.

The rules, in the order they are checked:

1. a blocked user is never served (`IMAGINE_BLOCKED_USERS`);
2. a channel allow-list (a thread passes with its channel), then a role allow-list (Discord)
   — `IMAGINE_ALLOWED_USERS` pass both;
3. the user's images today, then the workspace's images today;
4. the workspace's estimated spend this calendar month.

Settings come from the environment (`Policy`), overridden per workspace by what its admins
stored (`Overrides`). Days and months begin at midnight in `IMAGINE_QUOTA_TZ`.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, fields, replace
from datetime import date, datetime, time, timedelta
from enum import StrEnum
from typing import Any, Literal
from zoneinfo import ZoneInfo

from bot.catalog import model_info
from bot.errors import ImagineError, plural

__all__ = [
    "LISTS",
    "NUMBERS",
    "Admission",
    "Counts",
    "Overrides",
    "Period",
    "Policy",
    "PolicyRefused",
    "Refusal",
    "Requester",
    "Rule",
    "Scope",
    "day_of",
    "decide",
    "describe",
    "effective",
    "image_price",
    "money",
    "month_of",
    "until",
]


def image_price(
    model: str, default_model: str, price_per_image: float, size: str | None = None
) -> float:
    """Estimated US$ of one image: `IMAGINE_PRICE_PER_IMAGE` prices the default model at
    its default size (a team may pay less than list); other models and sizes their list
    price in `bot.catalog` where one is known, else `IMAGINE_PRICE_PER_IMAGE` too."""
    info = model_info(model)
    if model == default_model and (size is None or size == info.default_size):
        return price_per_image
    listed = info.price(size)
    return price_per_image if listed is None else listed


class Rule(StrEnum):
    """Which rule refused a request (also the metric label)."""

    BLOCKED_USER = "blocked_user"
    CHANNEL = "channel"
    ROLE = "role"
    USER_DAILY = "user_daily_limit"
    WORKSPACE_DAILY = "workspace_daily_limit"
    MONTHLY_BUDGET = "monthly_budget"


@dataclass(frozen=True, slots=True)
class Scope:
    """One workspace: a Discord server (or "@dm"), a Slack team, the console ("local")."""

    platform: str
    workspace: str


@dataclass(frozen=True, slots=True)
class Requester:
    """Who asks, and where. `roles` are Discord role ids; `platform_admin` is what the
    platform itself says (Discord's Manage Server, Slack's workspace admins and owners)."""

    platform: str
    workspace: str
    channel: str
    user: str
    roles: frozenset[str] = frozenset()
    platform_admin: bool = False
    parent_channel: str = ""
    """The channel a thread (or forum post) `channel` belongs to, if it is one."""

    @property
    def scope(self) -> Scope:
        return Scope(self.platform, self.workspace)


NumberSetting = Literal["user_daily_limit", "workspace_daily_limit", "monthly_budget"]
ListSetting = Literal["allowed_channels", "allowed_roles", "allowed_users", "blocked_users"]
NUMBERS: tuple[NumberSetting, ...] = ("user_daily_limit", "workspace_daily_limit", "monthly_budget")
LISTS: tuple[ListSetting, ...] = (
    "allowed_channels",
    "allowed_roles",
    "allowed_users",
    "blocked_users",
)


@dataclass(frozen=True, slots=True)
class Policy:
    """The settings in force for one workspace. 0 and empty mean "no limit" / "everyone"."""

    user_daily_limit: int = 0
    workspace_daily_limit: int = 0
    monthly_budget: float = 0.0
    allowed_channels: frozenset[str] = frozenset()
    allowed_roles: frozenset[str] = frozenset()
    allowed_users: frozenset[str] = frozenset()
    blocked_users: frozenset[str] = frozenset()


@dataclass(frozen=True, slots=True)
class Overrides:
    """What a workspace's admins stored. A field that is None follows the environment.

    `day_resets` maps a user to the moment an admin gave their day back: their daily count
    starts again from there (the workspace's counts and the budget are unchanged).
    """

    user_daily_limit: int | None = None
    workspace_daily_limit: int | None = None
    monthly_budget: float | None = None
    allowed_channels: frozenset[str] | None = None
    allowed_roles: frozenset[str] | None = None
    allowed_users: frozenset[str] | None = None
    blocked_users: frozenset[str] | None = None
    day_resets: Mapping[str, float] = field(default_factory=dict, hash=False)

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for name in NUMBERS:
            if (value := getattr(self, name)) is not None:
                out[name] = value
        for list_name in LISTS:
            if (items := getattr(self, list_name)) is not None:
                out[list_name] = sorted(items)
        if self.day_resets:
            out["day_resets"] = dict(sorted(self.day_resets.items()))
        return out

    @classmethod
    def from_json(cls, data: Mapping[str, Any] | None) -> Overrides:
        """Tolerant: a value of the wrong shape (a hand-edited row) is ignored, not fatal."""
        data = data or {}
        values: dict[str, Any] = {}
        for name in NUMBERS:
            value = data.get(name)
            if isinstance(value, int | float) and not isinstance(value, bool) and value >= 0:
                values[name] = float(value) if name == "monthly_budget" else int(value)
        for list_name in LISTS:
            items = data.get(list_name)
            if isinstance(items, list):
                values[list_name] = frozenset(str(item) for item in items)
        resets = data.get("day_resets")
        if isinstance(resets, dict):
            values["day_resets"] = {
                str(user): float(at) for user, at in resets.items() if isinstance(at, int | float)
            }
        return cls(**values)

    def with_value(self, name: str, value: Any) -> Overrides:
        return replace(self, **{name: value})


def effective(env: Policy, overrides: Overrides) -> Policy:
    """The environment, with every setting a workspace's admins stored winning over it."""
    values = {
        f.name: value for f in fields(Policy) if (value := getattr(overrides, f.name)) is not None
    }
    return replace(env, **values)


# --- periods ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Period:
    """[start, end) in epoch seconds: one day or one calendar month in the quota zone."""

    start: float
    end: float


def _midnight(day: date, tz: ZoneInfo) -> float:
    return datetime.combine(day, time(0), tzinfo=tz).timestamp()


def day_of(at: float, tz: ZoneInfo) -> Period:
    """The day (midnight to midnight in `tz`, 23 or 25 hours across a DST change) of `at`."""
    today = datetime.fromtimestamp(at, tz).date()
    return Period(_midnight(today, tz), _midnight(today + timedelta(days=1), tz))


def month_of(at: float, tz: ZoneInfo) -> Period:
    today = datetime.fromtimestamp(at, tz).date()
    first = today.replace(day=1)
    following = (first + timedelta(days=32)).replace(day=1)
    return Period(_midnight(first, tz), _midnight(following, tz))


# --- the decision ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Counts:
    """What the ledger says, counted over accepted jobs that were not failed or cancelled:
    the user's images today on the platform — in every workspace, DMs included, since an
    admin gave the day back if later —, the workspace's images today, and the workspace's
    estimated spend this month."""

    user_today: int = 0
    workspace_today: int = 0
    workspace_month_usd: float = 0.0


@dataclass(frozen=True, slots=True)
class Refusal:
    """Which rule refused, with the numbers its sentence needs (images, or US$ for the
    budget) and when the count starts again (None: it does not by itself)."""

    rule: Rule
    used: float = 0
    limit: float = 0
    resets_at: float | None = None


def access(policy: Policy, who: Requester) -> Refusal | None:
    """The rules that need no counting: blocks and allow-lists."""
    if who.user in policy.blocked_users:
        return Refusal(Rule.BLOCKED_USER)
    if who.user in policy.allowed_users:
        return None
    places = {who.channel, who.parent_channel} - {""}
    if policy.allowed_channels and not places & policy.allowed_channels:
        return Refusal(Rule.CHANNEL)
    if (
        who.platform == "discord"
        and policy.allowed_roles
        and not (who.roles & policy.allowed_roles)
    ):
        return Refusal(Rule.ROLE)
    return None


def decide(
    policy: Policy,
    who: Requester,
    counts: Counts,
    *,
    cost: float,
    day: Period,
    month: Period,
) -> Refusal | None:
    """None when one more job costing `cost` US$ may run; else the first rule it breaks."""
    refused = access(policy, who)
    if refused is not None:
        return refused
    if policy.user_daily_limit and counts.user_today >= policy.user_daily_limit:
        return Refusal(Rule.USER_DAILY, counts.user_today, policy.user_daily_limit, day.end)
    if policy.workspace_daily_limit and counts.workspace_today >= policy.workspace_daily_limit:
        return Refusal(
            Rule.WORKSPACE_DAILY, counts.workspace_today, policy.workspace_daily_limit, day.end
        )
    budget = policy.monthly_budget
    # a cent of slack so 0.039 × n summed in floating point never refuses the last image
    if budget and counts.workspace_month_usd + cost > budget + 1e-9:
        return Refusal(Rule.MONTHLY_BUDGET, counts.workspace_month_usd, budget, month.end)
    return None


@dataclass(frozen=True, slots=True)
class Admission:
    """What `Store.add_job` needs to admit a job exactly: who, the environment's policy,
    the job's estimated cost and the quota zone. `at` fixes "today" for the decision."""

    who: Requester
    env: Policy
    cost: float
    tz: ZoneInfo
    at: float

    @property
    def day(self) -> Period:
        return day_of(self.at, self.tz)

    @property
    def month(self) -> Period:
        return month_of(self.at, self.tz)

    def refused(self, refusal: Refusal) -> PolicyRefused:
        """The error telling this requester why, at this moment, in this zone."""
        who = self.who
        return PolicyRefused(
            refusal, platform=who.platform, workspace=who.workspace, at=self.at, tz=self.tz
        )

    def user_since(self, overrides: Overrides) -> float:
        """Where the user's daily count starts: midnight, or a later day-back."""
        return max(self.day.start, overrides.day_resets.get(self.who.user, 0.0))


# --- the words -------------------------------------------------------------------------------

WORKSPACE_NOUNS: Mapping[str, str] = {"discord": "server", "slack": "workspace"}


def workspace_noun(platform: str, workspace: str = "") -> str:
    if platform == "discord" and workspace == "@dm":
        return "direct-message space"
    return WORKSPACE_NOUNS.get(platform, "console")


def money(usd: float) -> str:
    """`$0.04`, `$12.50`: cents, rounded up on the used side would overstate; so plain."""
    return f"${usd:,.2f}"


def until(at: float, resets_at: float) -> str:
    """`3 h 12 min`, `45 min`, `28 days`: how long until a count starts again."""
    seconds = max(0.0, resets_at - at)
    minutes = math.ceil(seconds / 60)
    if minutes < 60:
        return f"{max(minutes, 1)} min"
    hours, minutes = divmod(minutes, 60)
    if hours < 48:
        return f"{hours} h {minutes} min" if minutes else f"{hours} h"
    return plural(round(hours / 24), "day")


def _when(at: float, resets_at: float, tz: ZoneInfo, *, month: bool) -> str:
    local = datetime.fromtimestamp(resets_at, tz)
    clock = f"{local:%H:%M} {local.tzname() or tz.key}"
    if month:
        return f"on {local.day} {local:%B} at {clock}, in {until(at, resets_at)}"
    return f"at {clock}, in {until(at, resets_at)}"


def describe(refusal: Refusal, platform: str, workspace: str, at: float, tz: ZoneInfo) -> str:
    """The sentence a refused user reads: which limit, how much is used, when it resets."""
    noun = workspace_noun(platform, workspace)
    rule = refusal.rule
    if rule is Rule.BLOCKED_USER:
        return "You can't make images with this bot. Ask an admin if you think that's a mistake."
    if rule is Rule.CHANNEL:
        return "I don't make images in this channel. Ask an admin which channels I serve."
    if rule is Rule.ROLE:
        if workspace == "@dm":
            return (
                "Making images needs a role a server allows, so I don't make them in direct "
                "messages. Use me in the server."
            )
        return "Making images here needs a role this server allows. Ask an admin for access."
    resets = refusal.resets_at or at
    if rule is Rule.USER_DAILY:
        return (
            f"You've made {int(refusal.used)} of your {plural(int(refusal.limit), 'image')} "
            f"today; more {_when(at, resets, tz, month=False)}."
        )
    if rule is Rule.WORKSPACE_DAILY:
        when = _when(at, resets, tz, month=False)
        return (
            f"This {noun} has made {int(refusal.used)} of its "
            f"{plural(int(refusal.limit), 'image')} today; more {when}."
        )
    return (
        f"This {noun} has used an estimated {money(refusal.used)} of its {money(refusal.limit)} "
        f"monthly budget; more {_when(at, resets, tz, month=True)}."
    )


class PolicyRefused(ImagineError):
    """A rule refused the request: nothing was queued and no provider was called."""

    code = "policy"

    def __init__(
        self,
        refusal: Refusal,
        *,
        platform: str,
        workspace: str,
        at: float,
        tz: ZoneInfo,
        detail: str | None = None,
    ) -> None:
        self.refusal = refusal
        super().__init__(
            describe(refusal, platform, workspace, at, tz),
            detail=detail or f"refused by {refusal.rule.value} in {platform}/{workspace}",
        )


def parse_ids(value: str | Iterable[str]) -> frozenset[str]:
    """`"1, 2 3"` → {"1", "2", "3"}: the environment's comma- (or space-) separated ids."""
    items = value.replace(",", " ").split() if isinstance(value, str) else value
    return frozenset(item.strip() for item in items if item.strip())
