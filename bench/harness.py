"""The core as the composition root builds it (SQLite store, Nexconn provider, limits),
driven in-process with a sink that only records times: no chat platform involved."""

from __future__ import annotations

import contextlib
import tempfile
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

from bench.fake_provider import API_KEY
from bot.core import Delivery, ImagineBot, Phase, Progress
from bot.errors import ImagineError
from bot.models import Job, ThreadKey
from bot.providers.nexconn import NexconnProvider
from bot.scheduler import Limits
from storage import open_store

MODEL = "gemini-2.5-flash-image"


@dataclass
class Times:
    started: dict[str, float] = field(default_factory=dict)
    """job id → monotonic time the job began generating."""
    delivered: dict[str, float] = field(default_factory=dict)
    failed: dict[str, str] = field(default_factory=dict)
    progress_updates: int = 0


class TimingSink:
    """A `ReplySink` that records when each job started and when its image was delivered."""

    def __init__(self, times: Times) -> None:
        self.times = times

    async def progress(self, update: Progress) -> None:
        self.times.progress_updates += 1
        if update.phase == Phase.GENERATING and update.job.id not in self.times.started:
            self.times.started[update.job.id] = time.monotonic()

    async def deliver(self, delivery: Delivery) -> str | None:
        self.times.delivered[delivery.job.id] = time.monotonic()
        return f"m-{delivery.job.id}"

    async def fail(self, job: Job | None, error: ImagineError) -> None:
        self.times.failed[job.id if job else "?"] = f"{error.code}: {error}"


def key(n: int | str) -> ThreadKey:
    return ThreadKey("bench", "w", "c", str(n))


@contextlib.asynccontextmanager
async def core(provider_url: str, limits: Limits) -> AsyncIterator[ImagineBot]:
    """A started core on a fresh SQLite file; shut down (grace 0) and closed afterwards."""
    with tempfile.TemporaryDirectory(prefix="imagine-bench-") as folder:
        store = await open_store(f"sqlite:///{folder}/bench.db")
        provider = NexconnProvider(API_KEY, provider_url)
        bot = ImagineBot(store, provider, model=MODEL, limits=limits)
        await bot.start()
        try:
            yield bot
        finally:
            await bot.shutdown(0)
            await provider.aclose()
            await store.close()
