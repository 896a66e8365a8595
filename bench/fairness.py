"""Fairness: a second user's single job while another user has 50 queued.

Core in-process, cap `C = 4`; user A may run all C slots (`per_user_running = C`) and queue
50 more. A submits C + 50 jobs, so all slots are busy and 50 wait; 0.3 × provider latency
later user B submits one job. B should wait only for the first slot to free up — at most one
provider call (one slot's wait), not behind A's 50. Measured: B's start delay, the actual
wait for that first slot (first A job finishing after B arrived), and how many of A's jobs
started before B's.
"""

from __future__ import annotations

import asyncio
import time

from bench.common import Options, Row, verdict
from bench.fake_provider import ProviderProcess
from bench.harness import Times, TimingSink, core, key
from bot.core import ImagineRequest
from bot.scheduler import Limits

CAP = 4
QUEUED = 50


async def run(options: Options) -> list[Row]:
    latency = options.latency
    limits = Limits(concurrency=CAP, per_user_running=CAP, per_user_queued=QUEUED)
    times = Times()
    sink = TimingSink(times)
    async with ProviderProcess(latency, options.image_bytes) as url, core(url, limits) as bot:
        a_jobs = [
            await bot.imagine(ImagineRequest(key(f"a{i}"), "user-a", f"cat {i}"), sink)
            for i in range(CAP + QUEUED)
        ]
        async with asyncio.timeout(30):
            while len(times.started) < CAP:
                await asyncio.sleep(0.005)
        await asyncio.sleep(0.3 * latency)
        submitted = time.monotonic()
        b_job = await bot.imagine(ImagineRequest(key("b"), "user-b", "a dog"), sink)
        async with asyncio.timeout(latency * 3 + 30):
            while b_job.id not in times.started:
                await asyncio.sleep(0.005)
    delay = times.started[b_job.id] - submitted
    a_ids = {job.id for job in a_jobs}
    freed = min(t for job_id, t in times.delivered.items() if job_id in a_ids and t > submitted)
    slot_wait = freed - submitted
    jumped = sum(
        1
        for job_id, t in times.started.items()
        if job_id in a_ids and submitted < t < times.started[b_job.id]
    )
    ok = delay <= latency and jumped == 0
    return [
        Row(
            "fairness: start delay of user B's 1 job while user A has 50 queued",
            "≤ one slot's wait",
            f"{delay:.3f} s; first slot freed after {slot_wait:.3f} s "
            f"(+{(delay - slot_wait) * 1000:.0f} ms); one slot = {latency:g} s; "
            f"A's jobs started before B: {jumped}",
            verdict(ok),
            f"core in-process, cap {CAP}, A runs {CAP} and queues {QUEUED}; "
            "B submitted 0.3 × latency after A's first jobs started",
        )
    ]
