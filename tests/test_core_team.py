"""Team control through the core: every kind of generation counts and is checked, a refusal
queues nothing and calls no provider, a failure gives its image back, and admins change the
rules at run time."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator

import pytest

from bot import metrics
from bot.core import EditRequest, ImagineBot, ImagineRequest, Phase, Progress
from bot.errors import ProviderUnavailable, UserQueueFull
from bot.models import JobStatus, ThreadKey, new_id
from bot.policy import Policy, PolicyRefused, Requester, Rule
from bot.queue import Limits
from bot.sinks import Undeliverable
from bot.store import Store
from bot.team import BadSetting, GiveDayBack, NotAdmin, SetMember, SetNumber, TeamSettings
from bot.usage import render_usage
from tests.fakes.collecting_sink import CollectingSink
from tests.fakes.recording_provider import RecordingProvider

MODEL = "gemini-2.5-flash-image"


def make_core(store: Store, provider: RecordingProvider, **policy: object) -> ImagineBot:
    team = TeamSettings(
        env=Policy(**policy),  # type: ignore[arg-type]
        price_per_image=0.05,
        default_model=MODEL,
        admin_users=frozenset({"boss"}),
    )
    return ImagineBot(store, provider, model=MODEL, team=team)


@pytest.fixture
def provider() -> RecordingProvider:
    return RecordingProvider()


@pytest.fixture
async def core(sqlite_store: Store, provider: RecordingProvider) -> AsyncIterator[ImagineBot]:
    bot = make_core(sqlite_store, provider, user_daily_limit=4)
    await bot.start()
    yield bot
    await bot.shutdown(0)


def key(channel: str = "general") -> ThreadKey:
    return ThreadKey("discord", "guild", channel, new_id())


def where(user: str, channel: str = "general") -> Requester:
    return Requester("discord", "guild", channel, user)


def refusal_count(rule: str) -> float:
    value = metrics.REGISTRY.get_sample_value("imagine_policy_refusals_total", {"rule": rule})
    return value or 0.0


async def settle(core: ImagineBot) -> None:
    await asyncio.wait_for(core.idle(), 10)


async def test_imagine_edit_reroll_and_retry_all_count_and_are_all_checked(
    core: ImagineBot, provider: RecordingProvider
) -> None:
    sink = CollectingSink()
    await core.imagine(ImagineRequest(key(), "alice", "a fox"), sink)
    await settle(core)
    first = sink.deliveries[-1].turn
    await core.edit(EditRequest("alice", "make it blue", turn_id=first.id), sink)
    await settle(core)
    await core.reroll(first.id, "alice", sink)
    await settle(core)
    provider.fail_next(ProviderUnavailable())
    failed = await core.reroll(first.id, "alice", sink)
    await settle(core)
    await core.retry(failed.id, "alice", sink)  # the failed one was given back: fourth image
    await settle(core)
    assert len(provider.requests) == 5 and len(sink.deliveries) == 4

    refusals_before = refusal_count("user_daily_limit")
    attempts = [
        core.imagine(ImagineRequest(key(), "alice", "another fox"), sink),
        core.edit(EditRequest("alice", "greener", turn_id=first.id), sink),
        core.reroll(first.id, "alice", sink),
        core.retry(failed.id, "alice", sink),
    ]
    for attempt in attempts:
        with pytest.raises(PolicyRefused) as refused:
            await attempt
        assert refused.value.refusal.rule is Rule.USER_DAILY
        assert refused.value.user_message.startswith("You've made 4 of your 4 images today")
    assert len(provider.requests) == 5  # no provider call for any refusal
    assert refusal_count("user_daily_limit") == refusals_before + 4
    # someone else's day is their own
    await core.reroll(first.id, "bob", sink)
    await settle(core)
    assert len(provider.requests) == 6


async def test_a_refused_imagine_leaves_no_thread_and_no_job(
    sqlite_store: Store, provider: RecordingProvider
) -> None:
    core = make_core(sqlite_store, provider, allowed_channels=frozenset({"art"}))
    request = ImagineRequest(key("general"), "alice", "a fox")
    with pytest.raises(PolicyRefused) as refused:
        await core.imagine(request, CollectingSink())
    assert refused.value.user_message.startswith("I don't make images in this channel.")
    assert await sqlite_store.thread_by_key(request.key) is None
    assert await sqlite_store.unsettled_jobs() == []
    await core.shutdown(0)


async def test_roles_come_with_the_request(
    sqlite_store: Store, provider: RecordingProvider
) -> None:
    core = make_core(sqlite_store, provider, allowed_roles=frozenset({"artists"}))
    sink = CollectingSink()
    with pytest.raises(PolicyRefused):
        await core.imagine(ImagineRequest(key(), "alice", "a fox"), sink)
    await core.imagine(ImagineRequest(key(), "alice", "a fox", roles=frozenset({"artists"})), sink)
    await settle(core)
    assert len(sink.deliveries) == 1
    await core.shutdown(0)


async def test_usage_for_a_member_and_for_an_admin(core: ImagineBot) -> None:
    sink = CollectingSink()
    for user in ("alice", "alice", "bob"):
        await core.imagine(ImagineRequest(key(), user, "a fox"), sink)
        await settle(core)
    mine = await core.team.usage(where("alice"))
    assert (mine.mine_today.images, mine.mine_month.images) == (2, 2)
    assert mine.mine_today.cost_usd == pytest.approx(0.10)
    assert mine.user_day.left == 2
    assert mine.workspace is None  # members see their own numbers only
    boss = await core.team.usage(where("boss"))
    assert boss.workspace is not None
    assert boss.workspace.month.images == 3
    assert [(line.user, line.images) for line in boss.workspace.top_users] == [
        ("alice", 2),
        ("bob", 1),
    ]
    assert boss.workspace.per_day[-1][1] == 3  # today's bar


async def test_admins_change_the_rules_at_run_time_and_others_cannot(
    core: ImagineBot, provider: RecordingProvider, caplog: pytest.LogCaptureFixture
) -> None:
    with pytest.raises(NotAdmin):
        await core.team.change(where("alice"), SetNumber("user_daily_limit", 100))
    with pytest.raises(NotAdmin) as refused:
        await core.team.view(where("alice"))
    assert refused.value.user_message == (
        "Only admins can see and change the bot's settings here: members with Manage Server "
        "and the users the bot's operator named."
    )
    boss = where("boss")
    with caplog.at_level(logging.INFO, logger="bot.team"):
        view = await core.team.change(boss, SetNumber("user_daily_limit", 1))
    assert "admin boss on discord/guild set the user daily limit to 1 image" in caplog.text
    assert view.policy.user_daily_limit == 1 and view.sources["user_daily_limit"] == "admin"
    sink = CollectingSink()
    await core.imagine(ImagineRequest(key(), "alice", "a fox"), sink)
    await settle(core)
    with pytest.raises(PolicyRefused):
        await core.imagine(ImagineRequest(key(), "alice", "a fox"), sink)
    await core.team.change(boss, GiveDayBack("alice"))
    await core.imagine(ImagineRequest(key(), "alice", "a fox"), sink)
    await settle(core)
    assert len(provider.requests) == 2

    await core.team.change(boss, SetMember("blocked_users", "alice", True))
    with pytest.raises(PolicyRefused) as blocked:
        await core.team.check(where("alice"), MODEL)
    assert blocked.value.refusal.rule is Rule.BLOCKED_USER
    view = await core.team.change(boss, SetNumber("user_daily_limit", None))
    assert view.policy.user_daily_limit == 4 and view.sources["user_daily_limit"] == "environment"
    with pytest.raises(BadSetting):
        await core.team.change(boss, SetNumber("user_daily_limit", 1.5))
    with pytest.raises(BadSetting):
        await core.team.change(boss, SetNumber("monthly_budget", -1))


async def test_a_refusal_in_the_transaction_leaves_no_thread(
    sqlite_store: Store, provider: RecordingProvider
) -> None:
    """Refused where only the transaction can see it — another process's waiting job fills
    the user's queue, which this process's quick count cannot know — the new thread goes."""
    gate = provider.hold()
    busy = ImagineBot(sqlite_store, provider, model=MODEL, limits=Limits(concurrency=1))
    sink = CollectingSink()
    await busy.imagine(ImagineRequest(key(), "alice", "first"), sink)
    await busy.imagine(ImagineRequest(key(), "alice", "second, waiting"), sink)
    other = ImagineBot(sqlite_store, provider, model=MODEL, limits=Limits(per_user_queued=1))
    request = ImagineRequest(key(), "alice", "third")
    with pytest.raises(UserQueueFull):
        await other.imagine(request, CollectingSink())
    assert await sqlite_store.thread_by_key(request.key) is None
    gate.set()
    await settle(busy)
    await busy.shutdown(0)
    await other.shutdown(0)


class FarAwaySink(CollectingSink):
    """An adapter whose answers can no longer arrive (a Discord token past 15 minutes)."""

    async def progress(self, update: Progress) -> None:
        await super().progress(update)
        if update.phase is Phase.GENERATING:
            raise Undeliverable("This request can no longer be answered.")


async def test_a_job_nobody_can_receive_is_not_generated_and_costs_nothing(
    core: ImagineBot, provider: RecordingProvider, sqlite_store: Store
) -> None:
    sink = FarAwaySink()
    job = await core.imagine(ImagineRequest(key(), "alice", "a fox"), sink)
    await settle(core)
    assert provider.requests == []
    stored = await sqlite_store.get_job(job.id)
    assert stored is not None and stored.status is JobStatus.FAILED
    report = await core.team.usage(where("alice"))
    assert report.user_day.used == 0  # given back


async def test_usage_says_when_images_elsewhere_count_towards_the_day(
    core: ImagineBot,
) -> None:
    sink = CollectingSink()
    here = ImagineRequest(key(), "alice", "a fox")
    dm = ImagineRequest(ThreadKey("discord", "@dm", "dm-1", new_id()), "alice", "a fox")
    for request in (here, dm):
        await core.imagine(request, sink)
        await settle(core)
    lines = render_usage(await core.team.usage(where("alice")))
    assert lines[0].startswith("**Your images**: 1 image today")
    assert lines[1].startswith("Your daily limit: 2 left of 4 images; it resets in ")
    assert lines[1].endswith("(your images in other servers and DMs count too).")
