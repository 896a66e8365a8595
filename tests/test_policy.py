"""`bot.policy.decide`, table-driven: every rule, their order, stored settings over the
environment, days and months in a time zone, and the sentences a refused user reads."""

from __future__ import annotations

from datetime import datetime
from zoneinfo import ZoneInfo

import pytest

from bot.policy import (
    Counts,
    Overrides,
    Period,
    Policy,
    Refusal,
    Requester,
    Rule,
    day_of,
    decide,
    describe,
    effective,
    image_price,
    month_of,
    until,
)

UTC = ZoneInfo("UTC")
LA = ZoneInfo("America/Los_Angeles")


def at(text: str, tz: ZoneInfo = UTC) -> float:
    return datetime.fromisoformat(text).replace(tzinfo=tz).timestamp()


NOW = at("2026-12-03 20:48")
DAY = day_of(NOW, UTC)
MONTH = month_of(NOW, UTC)
ALICE = Requester("discord", "guild", "general", "alice", frozenset({"artists"}))

CASES = [
    # (name, policy, who, counts, cost, expected rule or None)
    ("no limits", Policy(), ALICE, Counts(999, 999, 999.0), 0.039, None),
    (
        "blocked",
        Policy(blocked_users=frozenset({"alice"})),
        ALICE,
        Counts(),
        0.039,
        Rule.BLOCKED_USER,
    ),
    (
        "blocked beats allowed",
        Policy(blocked_users=frozenset({"alice"}), allowed_users=frozenset({"alice"})),
        ALICE,
        Counts(),
        0.039,
        Rule.BLOCKED_USER,
    ),
    ("channel", Policy(allowed_channels=frozenset({"art"})), ALICE, Counts(), 0.039, Rule.CHANNEL),
    (
        "channel allowed",
        Policy(allowed_channels=frozenset({"general"})),
        ALICE,
        Counts(),
        0.0,
        None,
    ),
    (
        "allowed user passes the channel list",
        Policy(allowed_channels=frozenset({"art"}), allowed_users=frozenset({"alice"})),
        ALICE,
        Counts(),
        0.039,
        None,
    ),
    (
        "a thread of an allowed channel",
        Policy(allowed_channels=frozenset({"art"})),
        Requester("discord", "guild", "thread-1", "alice", parent_channel="art"),
        Counts(),
        0.039,
        None,
    ),
    ("role", Policy(allowed_roles=frozenset({"mods"})), ALICE, Counts(), 0.039, Rule.ROLE),
    ("role held", Policy(allowed_roles=frozenset({"artists"})), ALICE, Counts(), 0.039, None),
    (
        "roles are Discord's: a Slack user is not refused by them",
        Policy(allowed_roles=frozenset({"mods"})),
        Requester("slack", "T1", "C1", "alice"),
        Counts(),
        0.039,
        None,
    ),
    (
        "allowed user passes the role list, not the limits",
        Policy(
            allowed_roles=frozenset({"mods"}),
            allowed_users=frozenset({"alice"}),
            user_daily_limit=2,
        ),
        ALICE,
        Counts(user_today=2),
        0.039,
        Rule.USER_DAILY,
    ),
    (
        "channel is checked before role",
        Policy(allowed_channels=frozenset({"art"}), allowed_roles=frozenset({"mods"})),
        ALICE,
        Counts(),
        0.039,
        Rule.CHANNEL,
    ),
    ("under the user limit", Policy(user_daily_limit=3), ALICE, Counts(user_today=2), 0.039, None),
    (
        "at the user limit",
        Policy(user_daily_limit=3),
        ALICE,
        Counts(user_today=3),
        0.039,
        Rule.USER_DAILY,
    ),
    (
        "user before workspace",
        Policy(user_daily_limit=3, workspace_daily_limit=3),
        ALICE,
        Counts(user_today=3, workspace_today=3),
        0.039,
        Rule.USER_DAILY,
    ),
    (
        "workspace limit",
        Policy(user_daily_limit=3, workspace_daily_limit=10),
        ALICE,
        Counts(user_today=1, workspace_today=10),
        0.039,
        Rule.WORKSPACE_DAILY,
    ),
    (
        "daily limits before the budget",
        Policy(workspace_daily_limit=10, monthly_budget=1.0),
        ALICE,
        Counts(workspace_today=10, workspace_month_usd=5.0),
        0.039,
        Rule.WORKSPACE_DAILY,
    ),
    (
        "the budget's last image fits exactly",
        Policy(monthly_budget=0.39),
        ALICE,
        Counts(workspace_month_usd=sum([0.039] * 9)),
        0.039,
        None,
    ),
    (
        "one more than the budget",
        Policy(monthly_budget=0.39),
        ALICE,
        Counts(workspace_month_usd=sum([0.039] * 10)),
        0.039,
        Rule.MONTHLY_BUDGET,
    ),
    (
        "a pricier model breaks the budget",
        Policy(monthly_budget=1.0),
        ALICE,
        Counts(0, 0, 0.9),
        0.134,
        Rule.MONTHLY_BUDGET,
    ),
]


@pytest.mark.parametrize(
    ("policy", "who", "counts", "cost", "expected"),
    [case[1:] for case in CASES],
    ids=[case[0] for case in CASES],
)
def test_decide(
    policy: Policy, who: Requester, counts: Counts, cost: float, expected: Rule | None
) -> None:
    refusal = decide(policy, who, counts, cost=cost, day=DAY, month=MONTH)
    assert (refusal.rule if refusal else None) == expected


def test_refusals_carry_the_numbers_and_the_reset() -> None:
    policy = Policy(user_daily_limit=20, workspace_daily_limit=50, monthly_budget=10.0)
    assert decide(policy, ALICE, Counts(20, 20, 0), cost=0.039, day=DAY, month=MONTH) == Refusal(
        Rule.USER_DAILY, 20, 20, DAY.end
    )
    assert decide(policy, ALICE, Counts(1, 50, 0), cost=0.039, day=DAY, month=MONTH) == Refusal(
        Rule.WORKSPACE_DAILY, 50, 50, DAY.end
    )
    assert decide(policy, ALICE, Counts(1, 1, 9.99), cost=0.039, day=DAY, month=MONTH) == Refusal(
        Rule.MONTHLY_BUDGET, 9.99, 10.0, MONTH.end
    )


# --- stored settings over the environment --------------------------------------------------


def test_stored_settings_win_over_the_environment_field_by_field() -> None:
    env = Policy(user_daily_limit=20, allowed_channels=frozenset({"a"}), monthly_budget=50.0)
    stored = Overrides(user_daily_limit=5, allowed_channels=frozenset())
    policy = effective(env, stored)
    assert policy.user_daily_limit == 5
    assert policy.allowed_channels == frozenset()  # an admin cleared the list: everywhere
    assert policy.monthly_budget == 50.0  # not stored: the environment's
    assert effective(env, Overrides()) == env


def test_a_stored_zero_lifts_an_environment_limit() -> None:
    env = Policy(user_daily_limit=2)
    policy = effective(env, Overrides(user_daily_limit=0))
    assert decide(policy, ALICE, Counts(user_today=100), cost=0.039, day=DAY, month=MONTH) is None


def test_overrides_survive_json_and_ignore_what_they_cannot_read() -> None:
    stored = Overrides(
        user_daily_limit=3,
        monthly_budget=12.5,
        blocked_users=frozenset({"u2", "u1"}),
        day_resets={"alice": 123.0},
    )
    assert Overrides.from_json(stored.to_json()) == stored
    assert stored.to_json()["blocked_users"] == ["u1", "u2"]
    odd = Overrides.from_json({"user_daily_limit": "lots", "monthly_budget": -4, "x": 1})
    assert odd == Overrides()


# --- days and months --------------------------------------------------------------------------


def test_a_day_in_los_angeles_begins_at_its_own_midnight() -> None:
    # 07:30 UTC on 3 December is still 2 December, 23:30, in Los Angeles
    moment = at("2026-12-03 07:30")
    day = day_of(moment, LA)
    assert day == Period(at("2026-12-02 00:00", LA), at("2026-12-03 00:00", LA))
    assert day.end - moment == 30 * 60
    assert day_of(moment, UTC).start == at("2026-12-03 00:00")


def test_days_across_daylight_saving_changes_are_23_and_25_hours() -> None:
    spring = day_of(at("2026-03-08 12:00", LA), LA)
    autumn = day_of(at("2026-11-01 12:00", LA), LA)
    assert spring.end - spring.start == 23 * 3600
    assert autumn.end - autumn.start == 25 * 3600


@pytest.mark.parametrize(
    ("moment", "start", "end"),
    [
        ("2026-12-31 23:59:59", "2026-12-01", "2027-01-01"),
        ("2027-01-01 00:00:00", "2027-01-01", "2027-02-01"),
        ("2028-02-29 12:00:00", "2028-02-01", "2028-03-01"),
    ],
)
def test_month_boundaries(moment: str, start: str, end: str) -> None:
    assert month_of(at(moment), UTC) == Period(at(start + " 00:00"), at(end + " 00:00"))


def test_a_month_in_los_angeles_ends_at_its_midnight_not_utcs() -> None:
    # 1 January 05:00 UTC is still 31 December in Los Angeles: December's budget
    month = month_of(at("2027-01-01 05:00"), LA)
    assert month == Period(at("2026-12-01 00:00", LA), at("2027-01-01 00:00", LA))


# --- the words --------------------------------------------------------------------------------


def test_the_user_daily_sentence_says_used_limit_and_when() -> None:
    moment = at("2026-12-03 20:48")
    text = describe(Refusal(Rule.USER_DAILY, 20, 20, DAY.end), "discord", "g", moment, UTC)
    assert text == "You've made 20 of your 20 images today; more at 00:00 UTC, in 3 h 12 min."


def test_the_sentence_uses_the_quota_zone() -> None:
    moment = at("2026-12-03 07:30")  # 23:30 in Los Angeles
    day = day_of(moment, LA)
    text = describe(Refusal(Rule.USER_DAILY, 1, 1, day.end), "slack", "T", moment, LA)
    assert text == "You've made 1 of your 1 image today; more at 00:00 PST, in 30 min."


def test_workspace_and_budget_sentences_name_the_workspace() -> None:
    text = describe(Refusal(Rule.WORKSPACE_DAILY, 200, 200, DAY.end), "discord", "g", NOW, UTC)
    assert (
        text
        == "This server has made 200 of its 200 images today; more at 00:00 UTC, in 3 h 12 min."
    )
    text = describe(Refusal(Rule.MONTHLY_BUDGET, 9.98, 10, MONTH.end), "slack", "T", NOW, UTC)
    assert text == (
        "This workspace has used an estimated $9.98 of its $10.00 monthly budget; "
        "more on 1 January at 00:00 UTC, in 28 days."
    )


@pytest.mark.parametrize(
    ("rule", "words"),
    [
        (Rule.BLOCKED_USER, "You can't make images with this bot."),
        (Rule.CHANNEL, "I don't make images in this channel."),
        (Rule.ROLE, "needs a role this server allows"),
    ],
)
def test_access_sentences(rule: Rule, words: str) -> None:
    assert words in describe(Refusal(rule), "discord", "g", NOW, UTC)


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (20, "1 min"),
        (60 * 45, "45 min"),
        (3600 * 3 + 60 * 12, "3 h 12 min"),
        (7200, "2 h"),
        (86400 * 28, "28 days"),
    ],
)
def test_until(seconds: float, text: str) -> None:
    assert until(1000.0, 1000.0 + seconds) == text


def test_prices() -> None:
    assert image_price("gemini-2.5-flash-image", "gemini-2.5-flash-image", 0.02) == 0.02
    assert image_price("gemini-2.5-flash-image", "other-default", 0.02) == 0.039
    assert image_price("unknown-model", "other-default", 0.02) == 0.02
    pro = "gemini-3-pro-image-preview"
    assert image_price(pro, "gemini-2.5-flash-image", 0.039, "2K") == 0.134
    assert image_price(pro, "gemini-2.5-flash-image", 0.039, "4K") == 0.24
    assert image_price(pro, pro, 0.12) == 0.12  # the team's own price for its default
    assert image_price(pro, pro, 0.12, "4K") == 0.24
