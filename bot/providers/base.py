"""The port every image provider implements, and what a provider may ask of the job."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from bot.models import ImageRequest, ImageResult


async def _ignore(_: str) -> None:
    return None


@dataclass(frozen=True, slots=True)
class ProviderCall:
    """Per-call hooks a provider can use.

    `on_submitted` durably records a provider-side request id *before* the first poll, so an
    asynchronous provider (GMI) can be resumed after a restart. `resume_id` is that id when
    the job is being resumed: the provider polls it instead of submitting again.
    """

    resume_id: str | None = None
    on_submitted: Callable[[str], Awaitable[None]] = _ignore
    resume_provider: str | None = None
    """The provider the job was recorded with (a failover list picks the one that holds a
    request id stored before the list existed)."""


@dataclass(frozen=True, slots=True)
class Capabilities:
    """What the core must respect for this provider."""

    max_reference_images: int = 3
    """More reference images than this are refused before anything is recorded."""


@runtime_checkable
class Provider(Protocol):
    name: str
    capabilities: Capabilities

    async def generate(self, request: ImageRequest, call: ProviderCall = ...) -> ImageResult:
        """Return at least one image or raise a `bot.errors.ImagineError`."""
        ...

    async def aclose(self) -> None: ...
