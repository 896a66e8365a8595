"""GMI's request queue: polls per job and how late a finished job is noticed.

`GmiProvider` against the loopback GMI fake (tests/fakes/gmi_server.py), in virtual time:
the provider's injectable `sleep`/`clock` advance a virtual clock at once and the fake's
request turns `success` when that clock reaches the job length, so 30 s jobs take
milliseconds while every poll is a real HTTP request. For each job length: the nominal
schedule (no jitter) and `SEEDS` runs with the default ±10 % jitter.
Goals: ≤ 8 polls, detection delay ≤ 10 % of the job time.
"""

from __future__ import annotations

import asyncio
import random

from bench.common import Options, Row, verdict
from bot.models import ImageRequest
from bot.providers.gmi import GmiProvider, PollPolicy
from tests.fakes.gmi_server import API_KEY, FakeGmi

JOB_LENGTHS = (5.0, 10.0, 15.0, 20.0, 25.0, 30.0)
SEEDS = 20


class VirtualTime:
    def __init__(self) -> None:
        self.now = 0.0

    def clock(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.now += max(0.0, seconds)
        await asyncio.sleep(0)


class Runner:
    """One provider on one virtual clock; each job restarts the clock at 0."""

    def __init__(self, fake: FakeGmi, policy: PollPolicy, seed: int) -> None:
        self.fake = fake
        self.vt = VirtualTime()
        self.provider = GmiProvider(
            API_KEY,
            fake.base_url,
            sleep=self.vt.sleep,
            clock=self.vt.clock,
            rng=random.Random(seed),
            poll=policy,
        )

    async def job(self, length: float) -> tuple[int, float]:
        """(polls, detection delay in s) for one job of `length` virtual seconds."""
        self.vt.now = 0.0
        self.fake.clock = self.vt.clock
        self.fake.script(ready_at=length)
        result = await self.provider.generate(ImageRequest("a lighthouse", "1:1", "m"))
        job = self.fake.jobs[result.provider_request_id or ""]
        return job.polls, self.vt.now - length


async def run(options: Options) -> list[Row]:
    fake = await FakeGmi().start()
    rows: list[Row] = []
    try:
        for length in JOB_LENGTHS:
            nominal = Runner(fake, PollPolicy(jitter=0), 0)
            jitter = Runner(fake, PollPolicy(), int(length))
            try:
                nominal_polls, nominal_delay = await nominal.job(length)
                jittered = [await jitter.job(length) for _ in range(SEEDS)]
            finally:
                await nominal.provider.aclose()
                await jitter.provider.aclose()
            max_polls = max(nominal_polls, *(p for p, _ in jittered))
            delays = [d for _, d in jittered]
            worst = max(nominal_delay, *delays)
            mean = sum(delays) / len(delays)
            rows.append(
                Row(
                    f"GMI {length:g} s job: polls, detection delay",
                    "≤ 8 polls, delay ≤ 10 %",
                    f"{nominal_polls} polls, {nominal_delay:.2f} s "
                    f"({nominal_delay / length:.1%}) nominal; with jitter ≤ {max_polls} polls, "
                    f"delay mean {mean:.2f} s, max {worst:.2f} s ({worst / length:.1%})",
                    verdict(max_polls <= 8 and worst <= 0.10 * length),
                    f"virtual time, {SEEDS} jittered runs",
                )
            )
    finally:
        await fake.close()
    return rows
