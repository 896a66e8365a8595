"""A reply sink at the adapter port: collects what a user would see."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

from bot.core import Delivery, Progress
from bot.errors import ImagineError
from bot.models import Job


@dataclass
class CollectingSink:
    """The adapter port, collecting what a user would see."""

    progress_updates: list[Progress] = field(default_factory=list)
    deliveries: list[Delivery] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    done: asyncio.Event = field(default_factory=asyncio.Event)

    async def progress(self, update: Progress) -> None:
        self.progress_updates.append(update)

    async def deliver(self, delivery: Delivery) -> str | None:
        self.deliveries.append(delivery)
        self.done.set()
        return f"msg-{delivery.turn.id}"

    async def fail(self, job: Job | None, error: ImagineError) -> None:
        self.errors.append(error.user_message)
        self.done.set()
