"""GMI's request queue: how late a finished job is noticed, and how many polls it costs.

`GmiProvider` against the loopback GMI fake (tests/fakes/gmi_server.py), in virtual time:
the provider's injectable `sleep`/`clock` advance a virtual clock at once and the fake's
request turns `success` when that clock reaches the job's length, so 30 s jobs take
milliseconds while every poll is a real HTTP request.

For each job length L: job durations are drawn uniformly from L ± 30 %. One provider learns
from scratch through its own polls over `WARM_UP` jobs, then `RUNS` more jobs are measured
while it keeps learning (as in production), with the default ±10 % jitter. The same
durations are also run through a provider that never learns (the fixed schedule), for
comparison. Delays are per job, as a share of that job's duration.
Goal: every measured job seen within 10 % of its duration, in ≤ 8 polls.
"""

from __future__ import annotations

import random

from bench.common import Options, Row, verdict
from bot.models import ImageRequest
from bot.providers.gmi import DurationEstimator, GmiProvider, PollPolicy
from tests.fakes.gmi_server import API_KEY, FakeGmi
from tests.providers.support import VirtualTime

JOB_LENGTHS = (5.0, 10.0, 15.0, 20.0, 25.0, 30.0)
SPREAD = 0.3
WARM_UP = 20
RUNS = 50
NEVER = 10**9
"""`min_samples` of an estimator that never trusts its samples: the fixed schedule."""


class Runner:
    """One provider on one virtual clock; each job restarts the clock at 0."""

    def __init__(self, fake: FakeGmi, seed: int, *, learns: bool) -> None:
        self.fake = fake
        self.vt = VirtualTime()
        self.provider = GmiProvider(
            API_KEY,
            fake.base_url,
            sleep=self.vt.sleep,
            clock=self.vt.clock,
            rng=random.Random(seed),
            poll=PollPolicy(),
            durations=DurationEstimator() if learns else DurationEstimator(min_samples=NEVER),
        )

    async def job(self, length: float) -> tuple[int, float]:
        """(polls, detection delay as a share of the job) for one job of `length` s."""
        self.vt.now = 0.0
        self.fake.clock = self.vt.clock
        self.fake.script(ready_at=length)
        result = await self.provider.generate(ImageRequest("a lighthouse", "1:1", "m"))
        job = self.fake.jobs[result.provider_request_id or ""]
        return job.polls, (self.vt.now - length) / length


def _summary(results: list[tuple[int, float]]) -> tuple[int, float, float, float]:
    """(max polls, mean delay, max delay, share of jobs within 10 %)."""
    delays = [d for _, d in results]
    within = sum(d <= 0.10 for d in delays) / len(delays)
    return max(p for p, _ in results), sum(delays) / len(delays), max(delays), within


async def run(options: Options) -> list[Row]:
    fake = await FakeGmi().start()
    rows: list[Row] = []
    try:
        for length in JOB_LENGTHS:
            durations = random.Random(int(length * 1000))
            draw = [
                durations.uniform((1 - SPREAD) * length, (1 + SPREAD) * length)
                for _ in range(WARM_UP + RUNS)
            ]
            learning = Runner(fake, int(length), learns=True)
            fixed = Runner(fake, int(length), learns=False)
            try:
                for duration in draw[:WARM_UP]:
                    await learning.job(duration)
                learned = [await learning.job(d) for d in draw[WARM_UP:]]
                untrained = [await fixed.job(d) for d in draw[WARM_UP:]]
            finally:
                await learning.provider.aclose()
                await fixed.provider.aclose()
            polls, mean, worst, within = _summary(learned)
            fixed_polls, fixed_mean, fixed_worst, _ = _summary(untrained)
            rows.append(
                Row(
                    f"GMI {length:g} s ± 30 % jobs: polls, detection delay (learned)",
                    "≤ 8 polls, delay ≤ 10 % of the job",
                    f"≤ {polls} polls, delay mean {mean:.1%}, max {worst:.1%}, "
                    f"{within:.0%} of jobs ≤ 10 % (fixed schedule: ≤ {fixed_polls} polls, "
                    f"mean {fixed_mean:.1%}, max {fixed_worst:.1%})",
                    verdict(polls <= 8 and worst <= 0.10),
                    f"virtual time, learned from {WARM_UP} jobs, {RUNS} jittered runs",
                )
            )
    finally:
        await fake.close()
    return rows
