"""A provider at the port seam: records every request, draws with the real demo renderer.

Tests script it: `fail_next` raises a given user-facing error once, `gate` holds every
call until the test opens it (deterministic queues and cancellation, no sleeps).
"""

from __future__ import annotations

import asyncio

from bot.errors import ImagineError
from bot.models import ImageRequest, ImageResult
from bot.providers.base import Capabilities, ProviderCall
from bot.providers.demo import DemoProvider


class RecordingProvider:
    name = "demo"
    capabilities = Capabilities()

    def __init__(self) -> None:
        self.requests: list[ImageRequest] = []
        self.calls: list[ProviderCall] = []
        self.results: list[ImageResult] = []
        self.failures: list[ImagineError] = []
        self.gate: asyncio.Event | None = None
        self.entered = asyncio.Event()
        self._demo = DemoProvider()

    def fail_next(self, error: ImagineError) -> None:
        self.failures.append(error)

    def hold(self) -> asyncio.Event:
        self.gate = asyncio.Event()
        return self.gate

    async def generate(
        self, request: ImageRequest, call: ProviderCall = ProviderCall()
    ) -> ImageResult:
        self.requests.append(request)
        self.calls.append(call)
        self.entered.set()
        if self.gate is not None:
            await self.gate.wait()
        if self.failures:
            raise self.failures.pop(0)
        result = await self._demo.generate(request, call)
        self.results.append(result)
        return result

    async def aclose(self) -> None:
        return None
