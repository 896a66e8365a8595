"""Load through the core alone, in-process: makespan, event-loop lag and memory.

The core as `bot.cli` composes it (SQLite store, Nexconn provider, `IMAGINE_CONCURRENCY` =
cap) runs in this process with a 10 ms ticker; the provider fake runs in a child process so
its work is not counted here. After one warm-up job, `jobs` `/imagine` requests from as many
distinct users arrive evenly within 1 s; a sink records start and delivery times. No chat
platform is involved: this is what the core itself costs (`bench/platforms.py` runs the real
bot process).
"""

from __future__ import annotations

import asyncio
import gc
import math
import time

from bench.common import (
    LoopLag,
    Options,
    Row,
    Verdict,
    ms,
    proc_status,
    reset_peak_rss,
    verdict,
)
from bench.fake_provider import ProviderProcess, stats
from bench.harness import Times, TimingSink, core, key
from bot.core import ImagineRequest
from bot.scheduler import Limits

ARRIVAL_WINDOW = 1.0


async def run(options: Options) -> list[Row]:
    times = Times()
    sink = TimingSink(times)
    lag = LoopLag()
    limits = Limits(concurrency=options.cap)
    provider = ProviderProcess(options.latency, options.image_bytes)
    async with provider as url, core(url, limits) as bot:
        # one job first, as the real-process run does: a bot that has served an image
        warm = ImagineRequest(key("warm"), "warm", "a warm-up")
        await bot.imagine(warm, TimingSink(Times()))
        await asyncio.wait_for(bot.idle(), options.latency + 60)
        await asyncio.sleep(0.5)  # let garbage settle: the idle baseline
        gc.collect()  # as `imagine-bot run` does once started (bot/cli.py)
        gc.freeze()
        reset_peak_rss("self")
        idle_kib = proc_status("self", "VmRSS")
        lag.start()
        first = time.monotonic()
        for n in range(options.jobs):
            due = first + n * ARRIVAL_WINDOW / options.jobs
            await asyncio.sleep(max(0.0, due - time.monotonic()))
            request = ImagineRequest(key(n), f"user{n}", f"a lighthouse at dusk #{n}")
            await bot.imagine(request, sink)
        await asyncio.wait_for(bot.idle(), options.jobs * options.latency + 120)
        end = max(times.delivered.values(), default=time.monotonic())
        await lag.stop()
        peak_kib = proc_status("self", "VmHWM")
        served = await stats(url)
    failures = f"; failed: {times.failed}" if times.failed else ""
    delivered = len(times.delivered)
    peak_in_flight = served["peak"]
    return rows(
        options,
        delivered,
        first,
        end,
        lag,
        idle_kib,
        peak_kib,
        peak_in_flight,
        "core only",
        failures,
    )


def rows(
    options: Options,
    delivered: int,
    first: float,
    end: float,
    lag: LoopLag,
    idle_kib: int,
    peak_kib: int,
    peak_in_flight: int,
    label: str,
    failures: str = "",
) -> list[Row]:
    """The makespan, loop-lag and memory rows, shared with the real-process run."""
    makespan = end - first
    ideal = math.ceil(options.jobs / options.cap) * options.latency
    ratio = makespan / ideal
    max_lag = lag.max_between(first, end)
    image = options.image_bytes
    rss_ratio = (peak_kib - idle_kib) * 1024 / (options.cap * image)
    complete = delivered == options.jobs
    incomplete = "" if complete else f"; only {delivered}/{options.jobs} delivered{failures}"
    return [
        Row(
            f"makespan of {options.jobs} jobs ÷ ideal ({label})",
            "≤ 1.10",
            f"{makespan:.1f} s ÷ {ideal:.0f} s = {ratio:.3f}",
            verdict(ratio <= 1.10 and complete),
            f"ideal = ceil({options.jobs}/{options.cap}) × {options.latency:g} s{incomplete}",
        ),
        Row(
            f"event-loop lag, max delay of a 10 ms ticker ({label})",
            "< 50 ms",
            f"max {ms(max_lag)}, {sum(1 for x in lag.lags_between(first, end) if x > 0.05)} "
            f"ticks late by > 50 ms",
            verdict(max_lag < 0.05),
            f"{len(lag.lags_between(first, end))} ticks during the run",
        ),
        Row(
            f"peak RSS above idle ÷ (jobs in flight × image size) ({label})",
            "≤ 3",
            f"({peak_kib / 1024:.0f} − {idle_kib / 1024:.0f} MiB) ÷ ({options.cap} × "
            f"{image / 1e6:g} MB) = {rss_ratio:.2f}",
            verdict(rss_ratio <= 3) if peak_kib else Verdict.PENDING,
            f"VmHWM after resetting it at idle; provider saw ≤ {peak_in_flight} calls at once",
        ),
    ]
