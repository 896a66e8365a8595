"""What the core sends out: progress, the image, or the error, to a sink bound to one job's
place on its platform (like slack-bolt's `say`). Each adapter implements `ReplySink`."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from typing import Protocol

from bot.errors import ImagineError
from bot.models import Image, Job, Turn

__all__ = ["Delivery", "Phase", "Progress", "ReplySink", "SinkFactory", "Undeliverable"]


class Phase(StrEnum):
    QUEUED = "queued"
    GENERATING = "generating"
    UPLOADING = "uploading"


@dataclass(frozen=True, slots=True)
class Progress:
    job: Job
    phase: Phase
    position: int | None = None
    """1-based place in the queue while queued."""
    elapsed: float = 0.0
    """Seconds since the job started generating."""


@dataclass(frozen=True, slots=True)
class Delivery:
    job: Job
    turn: Turn
    image: Image
    notes: tuple[str, ...] = ()
    """User-facing warnings, e.g. that older turns were left out of the model's context."""


class Undeliverable(ImagineError):
    """Raised by a sink's `progress` for `Phase.GENERATING` when nothing it makes could
    reach the user any more (a Discord interaction token past its 15 minutes where the bot
    cannot post): the job fails there, before any provider call, so nobody pays for an image
    nobody can receive, and it is given back to the user's limits."""

    code = "undeliverable"


class ReplySink(Protocol):
    """Where the answers to one job go. Implemented by each adapter."""

    async def progress(self, update: Progress) -> None:
        """Show a job's phase. Failures are logged and ignored, except `Undeliverable`
        as a new job's generation starts, which ends it before the provider is called."""
        ...

    async def deliver(self, delivery: Delivery) -> str | None:
        """Show the image; return the platform id of the message showing it, to index."""
        ...

    async def fail(self, job: Job | None, error: ImagineError) -> None: ...


SinkFactory = Callable[[Job], ReplySink]
"""Rebuilds a sink from a stored job's destination, for jobs resumed after a restart."""
