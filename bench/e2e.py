"""End-to-end latency of one job through the core ÷ the raw provider call alone.

Raw: one `NexconnProvider.generate` (fresh client) against the fake. End to end: one
`ImagineBot.imagine` on a fresh core (SQLite store, same fake) until the sink gets the image:
admission, two store writes, the scheduler, the same provider call, decoding, the turn
committed with its image, delivery. Both are measured once after one warm-up of each
against a fake without latency (first imports, thread pool). Goal: e2e ≤ 1.05 × raw + 100 ms.
"""

from __future__ import annotations

import asyncio
import time

from bench.common import Options, Row, verdict
from bench.fake_provider import API_KEY, ProviderProcess
from bench.harness import MODEL, Times, TimingSink, core, key
from bot.core import ImagineRequest
from bot.models import ImageRequest
from bot.providers.nexconn import NexconnProvider
from bot.scheduler import Limits


async def raw_call(url: str) -> float:
    provider = NexconnProvider(API_KEY, url)
    try:
        start = time.perf_counter()
        await provider.generate(ImageRequest("a red fox", "1:1", MODEL))
        return time.perf_counter() - start
    finally:
        await provider.aclose()


async def one_job(url: str) -> float:
    times = Times()
    async with core(url, Limits(concurrency=4)) as bot:
        start = time.monotonic()
        job = await bot.imagine(ImagineRequest(key(1), "u1", "a red fox"), TimingSink(times))
        await asyncio.wait_for(bot.idle(), 60)
        if job.id not in times.delivered:
            raise RuntimeError(f"job not delivered: {times.failed}")
        return times.delivered[job.id] - start


async def run(options: Options) -> list[Row]:
    async with (
        ProviderProcess(0.0, options.image_bytes) as instant,
        ProviderProcess(options.latency, options.image_bytes) as url,
    ):
        # warm-up against an instant fake: imports, thread pool, first migrations
        await raw_call(instant)
        await one_job(instant)
        raw = await raw_call(url)
        e2e = await one_job(url)
    limit = 1.05 * raw + 0.1
    return [
        Row(
            "end-to-end of one job ÷ raw provider call",
            "≤ 1.05 + 100 ms",
            f"{e2e:.3f} s ÷ {raw:.3f} s = {e2e / raw:.3f} (overhead {(e2e - raw) * 1000:.0f} ms;"
            f" limit {limit:.3f} s)",
            verdict(e2e <= limit),
            "core in-process (store, scheduler, provider, sink); no chat platform",
        )
    ]
