"""Small helpers the provider tests share."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import TypeVar

from bot.models import HistoryTurn, Image, ImageResult
from bot.providers.http import RetryPolicy

T = TypeVar("T")

FAST = RetryPolicy(attempts=3, base_delay=0.01, max_delay=0.02)
"""Retries that cost milliseconds, so a 500 × N test stays instant."""


async def within(awaitable: Awaitable[T], seconds: float = 10.0) -> T:
    return await asyncio.wait_for(awaitable, seconds)


class Sleeps:
    """An injected clock: records each wait instead of spending it."""

    def __init__(self) -> None:
        self.waits: list[float] = []

    async def __call__(self, seconds: float) -> None:
        self.waits.append(seconds)


def image(data: bytes) -> Image:
    return Image.of(data, "image/png")


def history_turn(
    provider: str, prompt: str, result: ImageResult, refs: tuple[Image, ...] = ()
) -> HistoryTurn:
    """A finished turn as the core would hand it back to `provider` on the next request."""
    return HistoryTurn(
        prompt=prompt,
        references=refs,
        result=result.image,
        text=result.text,
        provider=provider,
        provider_state=result.provider_state,
    )


class VirtualTime:
    """A clock and a sleep that advance virtual time at once: long schedules, instant tests."""

    def __init__(self) -> None:
        self.now = 0.0
        self.sleeps: list[float] = []

    def clock(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += max(0.0, seconds)
        await asyncio.sleep(0)
