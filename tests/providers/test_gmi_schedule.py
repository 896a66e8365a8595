"""GMI's adaptive polling: the schedule as a pure function in virtual time, the duration
estimator, and both through the loopback fake (tests/fakes/gmi_server.py); the model and size
a request carries."""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator
from itertools import pairwise
from typing import Any

import pytest

from bot.catalog import MODELS, model_info
from bot.errors import ProviderRejected
from bot.models import ImageRequest
from bot.providers.base import ProviderCall
from bot.providers.gmi import (
    DurationEstimator,
    Expected,
    GmiProvider,
    PollPolicy,
    expect,
    poll_schedule,
)
from bot.providers.http import RetryPolicy
from tests.fakes.gmi_server import API_KEY, FakeGmi
from tests.providers.support import VirtualTime, history_turn, within

POLICY = PollPolicy()
FLASH = "gemini-2.5-flash-image"
PRO = "gemini-3-pro-image-preview"
FIXED = [1.5, 3.975, 8.05875, 12.55875, 17.05875, 21.55875, 26.05875, 30.55875]


def spread(median: float, n: int = 20, width: float = 0.3) -> list[float]:
    """`n` durations evenly over median ± `width`."""
    return [median * (1 - width + 2 * width * i / (n - 1)) for i in range(n)]


def seen(schedule: list[float], finish: float) -> tuple[int, float]:
    """(polls, detection offset) for a job that finishes at `finish`."""
    index = next(i for i, t in enumerate(schedule) if t >= finish)
    return index + 1, schedule[index]


def grid(low: float, high: float, steps: int = 400) -> list[float]:
    return [low + (high - low) * i / steps for i in range(steps + 1)]


# --- the schedule, a pure function --------------------------------------------------------


def test_untrained_schedule_is_the_fixed_one() -> None:
    assert poll_schedule(POLICY, None, None)[:8] == pytest.approx(FIXED)
    assert poll_schedule(POLICY, None, None) == poll_schedule(POLICY)
    for seed in range(20):
        assert poll_schedule(POLICY, random.Random(seed), None) == poll_schedule(
            POLICY, random.Random(seed)
        )
    short = poll_schedule(POLICY, None, None, deadline=10.0)
    assert short == pytest.approx([1.5, 3.975, 8.05875, 10.0])


def test_trained_on_five_seconds_polls_cluster_around_five_seconds() -> None:
    expected = expect(spread(5.0))
    assert expected.median == pytest.approx(5.0)
    nominal = poll_schedule(POLICY, None, expected)
    band = [t for t in nominal if 3.3 <= t <= 7.0]
    assert len(band) == 8  # every poll of the budget is spent near the median
    assert nominal[:8] == band  # none before: ±30 % takes all eight
    assert nominal[0] > 3.0  # the fixed schedule polled at 1.5 and 3.98, then 8.06
    for before, after in pairwise(band):
        assert after / before == pytest.approx(1.1)
    for seed in range(100):
        schedule = poll_schedule(POLICY, random.Random(seed), expected)
        assert schedule == sorted(set(schedule))
        assert schedule[-1] == POLICY.deadline
        for finish in grid(3.5, 6.5):
            polls, at = seen(schedule, finish)
            assert polls <= 8
            assert at - finish < 0.1 * finish


@pytest.mark.parametrize("median", [5.0, 10.0, 15.0, 20.0, 25.0, 30.0])
def test_every_job_in_the_learned_band_is_seen_within_ten_percent_and_eight_polls(
    median: float,
) -> None:
    expected = expect(spread(median))
    assert expected.low <= 0.7 * median and expected.high >= 1.3 * median
    for seed in range(50):
        schedule = poll_schedule(POLICY, random.Random(seed), expected)
        for finish in grid(expected.low, expected.high, 200):
            polls, at = seen(schedule, finish)
            assert polls <= 8, (seed, finish)
            assert at - finish < 0.1 * finish, (seed, finish)


def test_a_narrow_band_needs_fewer_polls_and_keeps_the_early_ones() -> None:
    expected = expect(spread(10.0, width=0.05))
    schedule = poll_schedule(POLICY, None, expected)
    assert schedule[:2] == pytest.approx(FIXED[:2])  # spare polls stay where they were
    assert seen(schedule, expected.high)[0] <= 6
    for finish in grid(expected.low, expected.high):
        assert seen(schedule, finish)[1] - finish < 0.1 * finish


def test_a_band_too_wide_for_eight_polls_keeps_the_target_near_the_median() -> None:
    expected = Expected(median=20.0, low=8.0, high=32.0, samples=20)
    schedule = poll_schedule(POLICY, None, expected)
    band = schedule[:8]
    for before, after in pairwise(band):
        assert after / before == pytest.approx(1.1)
    assert band[0] < 20.0 < band[-1]
    for finish in grid(14.0, 27.0):
        polls, at = seen(schedule, finish)
        assert polls <= 8 and at - finish < 0.1 * finish
    assert seen(schedule, 8.0)[1] - 8.0 > 0.1 * 8.0  # the cut ends pay


def test_jobs_outside_the_band_are_still_seen_and_the_deadline_holds() -> None:
    expected = expect(spread(5.0))
    for seed in range(50):
        schedule = poll_schedule(POLICY, random.Random(seed), expected)
        polls, at = seen(schedule, 30.0)  # six times the median
        assert polls <= 16
        assert at - 30.0 <= POLICY.max_interval * (1 + POLICY.jitter)
        assert all(t < POLICY.deadline for t in schedule[:-1])
        assert schedule[-1] == POLICY.deadline
    policy = PollPolicy(deadline=20.0)
    late = poll_schedule(policy, random.Random(1), expect(spread(30.0)))
    assert late[-1] == 20.0 and all(t < 20.0 for t in late[:-1])


# --- the estimator ----------------------------------------------------------------------


def test_expect_leaves_out_a_job_stuck_in_the_queue() -> None:
    calm = expect(spread(10.0))
    stuck = expect([*spread(10.0)[:-1], 90.0])
    assert stuck.high == pytest.approx(calm.high, rel=0.05)
    assert stuck.samples == 19
    same = expect([6.0] * 5)  # no spread seen: at least ±10 %
    assert (same.median, same.low, same.high) == pytest.approx((6.0, 5.4, 6.6))


def test_the_estimator_learns_per_model_and_size() -> None:
    durations = DurationEstimator()
    for i in range(4):
        durations.record((FLASH, None), 4.0 + i * 0.5, 4.2 + i * 0.5, None)
    assert durations.expected((FLASH, None)) is None  # fewer than 5 jobs: the fixed schedule
    durations.record((FLASH, None), 6.0, 6.2, None)
    for i in range(5):
        durations.record((PRO, "4K"), 20.0 + i, 21.0 + i, None)
    flash = durations.expected((FLASH, None))
    pro = durations.expected((PRO, "4K"))
    assert flash is not None and pro is not None
    assert flash.median == pytest.approx(5.1)
    assert pro.median == pytest.approx(22.5)
    assert durations.expected((PRO, "1K")) is None


def test_learned_samples_replace_the_coarse_ones_and_the_window_forgets() -> None:
    durations = DurationEstimator(window=20, min_samples=5)
    key = (FLASH, None)
    for _ in range(5):  # a 5 s job through the fixed schedule: seen between 3.98 and 8.06
        durations.record(key, 3.975, 8.06, None)
    coarse = durations.expected(key)
    assert coarse is not None and coarse.median == pytest.approx(6.02, abs=0.01)
    for _ in range(5):
        durations.record(key, 4.9, 5.1, coarse)
    learned = durations.expected(key)
    assert learned is not None and learned.median == pytest.approx(5.0)
    for _ in range(20):
        durations.record(key, 9.9, 10.1, learned)
    latest = durations.expected(key)
    assert latest is not None and latest.median == pytest.approx(10.0)
    assert durations.durations(key) == [pytest.approx(10.0)] * 20


def test_a_job_seen_late_moves_the_band_towards_it() -> None:
    durations = DurationEstimator()
    key = (FLASH, None)
    expected = Expected(median=20.0, low=14.0, high=26.0, samples=20)
    durations.record(key, 1.5, 14.5, expected)  # finished before the band: seen by its 1st poll
    durations.record(key, 27.0, 35.0, expected)  # after the band: seen by the tail
    assert durations.durations(key) == [pytest.approx(14.5 / 1.1), pytest.approx(27.0 * 1.1)]
    durations.record(key, 5.0, 5.0, expected)  # not an interval: ignored
    assert len(durations.durations(key)) == 2


# --- through the fake, in virtual time ----------------------------------------------------


@pytest.fixture
def vt() -> VirtualTime:
    return VirtualTime()


@pytest.fixture
async def fake(vt: VirtualTime) -> AsyncIterator[FakeGmi]:
    server = await FakeGmi(clock=vt.clock).start()
    yield server
    await server.close()


def make_provider(fake: FakeGmi, vt: VirtualTime, **options: Any) -> GmiProvider:
    defaults: dict[str, Any] = {
        "sleep": vt.sleep,
        "clock": vt.clock,
        "rng": random.Random(11),
        "policy": RetryPolicy(attempts=3),
    }
    return GmiProvider(API_KEY, fake.base_url, **{**defaults, **options})


@pytest.fixture
async def provider(fake: FakeGmi, vt: VirtualTime) -> AsyncIterator[GmiProvider]:
    instance = make_provider(fake, vt)
    yield instance
    await instance.aclose()


def request(model: str = FLASH, size: str | None = None, **fields: Any) -> ImageRequest:
    return ImageRequest("A lighthouse at dusk", "1:1", model, size=size, **fields)


async def job(
    fake: FakeGmi, provider: GmiProvider, vt: VirtualTime, length: float, **fields: Any
) -> tuple[list[float], float]:
    """Run one job of `length` virtual seconds: (the fake's poll offsets, detection offset)."""
    start = vt.now
    fake.script(ready_at=start + length)
    result = await within(provider.generate(request(**fields)))
    polls = fake.jobs[result.provider_request_id or ""].poll_times
    return [t - start for t in polls], vt.now - start


async def test_round_trip_learns_and_the_next_job_polls_around_the_median(
    fake: FakeGmi, provider: GmiProvider, vt: VirtualTime
) -> None:
    untrained, at = await job(fake, provider, vt, 5.0)
    assert len(untrained) == 3 and at > 7.5  # 1.5, 3.98, 8.06 ± jitter: about 3 s late
    lengths = random.Random(5)
    for _ in range(20):
        await job(fake, provider, vt, lengths.uniform(3.5, 6.5))
    learned = provider.durations.expected((FLASH, None))
    assert learned is not None
    assert learned.median == pytest.approx(5.0, rel=0.1)

    polls, at = await job(fake, provider, vt, 5.0)
    assert len(polls) <= 8  # the fake's GETs for this request
    assert 5.0 <= at < 5.5  # within 10 % of the job
    assert all(3.0 <= t <= 5.5 for t in polls)  # around the median, nothing far before
    # another model has learned nothing yet: the fixed schedule
    other, at = await job(fake, provider, vt, 5.0, model=PRO)
    assert len(other) == 3 and at > 7.5


async def test_failed_and_instant_jobs_teach_nothing(
    fake: FakeGmi, provider: GmiProvider, vt: VirtualTime
) -> None:
    fake.script("processing", "failed", failure={"error": "Invalid aspect ratio"})
    with pytest.raises(ProviderRejected):
        await within(provider.generate(request()))
    fake.script(submit_status="success")
    await within(provider.generate(request()))
    assert provider.durations.durations((FLASH, None)) == []
    polls, at = await job(fake, provider, vt, 5.0)  # seen running at ~3.98 s, done at ~8.06 s
    assert len(polls) == 3
    assert provider.durations.durations((FLASH, None)) == [pytest.approx((polls[1] + at) / 2)]


async def test_a_resume_in_the_same_process_keeps_the_original_schedule(
    fake: FakeGmi, vt: VirtualTime
) -> None:
    stalled_once = asyncio.Event()

    async def sleep(seconds: float) -> None:
        if not stalled_once.is_set():  # the first wait hangs: the job is cancelled there
            stalled_once.set()
            await asyncio.Event().wait()
        await vt.sleep(seconds)

    provider = make_provider(fake, vt, sleep=sleep, poll=PollPolicy(jitter=0.0))
    ids: list[str] = []

    async def on_submitted(request_id: str) -> None:
        ids.append(request_id)

    try:
        fake.script(ready_at=7.0)
        task = asyncio.create_task(provider.generate(request(), ProviderCall(None, on_submitted)))
        await within(stalled_once.wait())
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await within(task)
        vt.now = 5.0  # the job is picked up again 5 s after it was submitted
        result = await within(provider.generate(request(), ProviderCall(resume_id=ids[0])))
    finally:
        await provider.aclose()
    assert result.provider_request_id == ids[0] and len(fake.submits) == 1
    # polled at 8.06 s after the submission, as the first schedule said, not 1.5 s after now
    assert fake.jobs[ids[0]].poll_times == pytest.approx([FIXED[2]])
    # seen running only before the resume: no interval this process saw, nothing learned
    assert provider.durations.durations((FLASH, None)) == []


async def test_a_resume_of_unknown_age_polls_from_now_and_learns_nothing(
    fake: FakeGmi, vt: VirtualTime
) -> None:
    fake.script(ready_at=1000.0)
    first = make_provider(fake, vt)
    request_id, _ = await first._submit(request(), {"prompt": "x"}, ProviderCall(), 0.0)
    await first.aclose()
    fake.jobs[request_id].script.ready_at = 104.0
    vt.now = 100.0
    second = make_provider(fake, vt, poll=PollPolicy(jitter=0.0))
    try:
        await within(second.generate(request(), ProviderCall(resume_id=request_id)))
    finally:
        await second.aclose()
    assert [t - 100.0 for t in fake.jobs[request_id].poll_times] == pytest.approx(FIXED[:3])
    assert second.durations.durations((FLASH, None)) == []


# --- model and size -------------------------------------------------------------------------


@pytest.mark.parametrize("model", sorted(MODELS))
async def test_the_request_carries_the_catalogs_gmi_id(
    fake: FakeGmi, provider: GmiProvider, model: str
) -> None:
    fake.script("success")
    await within(provider.generate(request(model=model)))
    [submit] = fake.submits
    # a model GMI does not sell is the core's to refuse; here it goes out as it is
    assert submit.json["model"] == (model_info(model).provider_id("gmi") or model)
    assert "image_size" not in submit.json["payload"]


async def test_a_chosen_size_is_sent_as_image_size(fake: FakeGmi, provider: GmiProvider) -> None:
    fake.script("success")
    fake.script("success")
    first = await within(provider.generate(request(model=PRO, size="4K")))
    assert fake.submits[0].json == {
        "model": PRO,
        "payload": {"prompt": "A lighthouse at dusk", "aspect_ratio": "1:1", "image_size": "4K"},
    }
    # an edit continuing the conversation carries it too
    history = (history_turn("gmi", "A lighthouse at dusk", first),)
    await within(provider.generate(request(model=PRO, size="2K", history=history)))
    payload = fake.submits[1].json["payload"]
    assert set(payload) == {"contents", "aspect_ratio", "image_size"}
    assert payload["image_size"] == "2K"
