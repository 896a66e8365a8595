"""Retention while the bot runs: `IMAGINE_RETENTION_DAYS`, swept hourly.

The rule for what may go is `storage.retention`'s; this is only when it runs and what it
logs. `imagine-bot purge` runs the same sweep once, from cron.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from bot.models import now
from bot.store import PurgeResult, Store

log = logging.getLogger(__name__)

SWEEP_INTERVAL = 3600.0
"""Seconds between two retention sweeps."""


class Retention:
    def __init__(
        self, store: Store, days: int, history_turns: int, interval: float = SWEEP_INTERVAL
    ) -> None:
        self.store = store
        self.days = days
        self.history_turns = history_turns
        self.interval = interval
        self._task: asyncio.Task[None] | None = None

    def cutoff(self) -> float | None:
        """Turns made before this (epoch seconds) lose their images; None: kept forever."""
        return now() - self.days * 86400 if self.days > 0 else None

    async def purge_expired(self) -> PurgeResult:
        """One sweep: the bytes of images only turns older than the cutoff need are
        removed; the conversation's text stays."""
        cutoff = self.cutoff()
        if cutoff is None:
            return PurgeResult(0, 0)
        result = await self.store.purge_images(before=cutoff, history_turns=self.history_turns)
        if result.images:
            log.info(
                "retention: removed %d image(s), %d bytes, older than %d day(s)",
                result.images,
                result.bytes,
                self.days,
            )
        return result

    def start(self) -> None:
        if self.days > 0 and self._task is None:
            self._task = asyncio.create_task(self._forever(), name="retention-sweep")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def _forever(self) -> None:
        while True:
            try:
                await self.purge_expired()
            except Exception:
                log.exception("retention sweep failed; trying again next time")
            await asyncio.sleep(self.interval)
