"""Frozen value types shared by the core, the providers, the store and the adapters.

Nothing here imports a platform library or a storage engine: these are the words the
parts of the bot use to talk to each other.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

ASPECT_RATIOS: tuple[str, ...] = (
    "1:1",
    "2:3",
    "3:2",
    "3:4",
    "4:3",
    "4:5",
    "5:4",
    "9:16",
    "16:9",
    "21:9",
)
"""The ratios Gemini 2.5 Flash Image accepts, in the order the platforms list them."""

ASPECT_SIZES: Mapping[str, tuple[int, int]] = {
    "1:1": (1024, 1024),
    "2:3": (832, 1248),
    "3:2": (1248, 832),
    "3:4": (864, 1184),
    "4:3": (1184, 864),
    "4:5": (896, 1152),
    "5:4": (1152, 896),
    "9:16": (768, 1344),
    "16:9": (1344, 768),
    "21:9": (1536, 672),
}
"""Pixel size Google documents for each ratio (1K output)."""

DEFAULT_ASPECT_RATIO = "1:1"

JSON = Any
"""A value that survives `json.dumps` (provider continuation state, adapter destinations)."""


def new_id() -> str:
    """A short random id for threads, turns and jobs (also used in button custom ids)."""
    return uuid.uuid4().hex[:16]


def now() -> float:
    return time.time()


@dataclass(frozen=True, slots=True)
class ThreadKey:
    """One conversation on one platform.

    Discord: guild (or "@dm"), channel, the id of the first image message's anchor.
    Slack: team, channel, the root message `ts`. Console: "local", "console", a local id.
    """

    platform: str
    workspace: str
    channel: str
    thread: str


@dataclass(frozen=True, slots=True)
class Image:
    """Image bytes identified by their content hash: never a platform URL, which expires."""

    data: bytes = field(repr=False)
    mime: str
    sha256: str

    @classmethod
    def of(cls, data: bytes, mime: str = "image/png") -> Image:
        """Hash on the calling thread; use `Image.from_bytes` on the event loop."""
        return cls(data=data, mime=mime, sha256=hashlib.sha256(data).hexdigest())

    @classmethod
    async def from_bytes(cls, data: bytes, mime: str = "image/png") -> Image:
        """Hash off the event loop: a 2 MB sha256 is small, but dozens at once are not."""
        if len(data) < 64 * 1024:
            return cls.of(data, mime)
        return await asyncio.to_thread(cls.of, data, mime)

    @property
    def size(self) -> int:
        return len(self.data)


@dataclass(frozen=True, slots=True)
class Usage:
    input_tokens: int = 0
    output_tokens: int = 0
    total_tokens: int = 0


@dataclass(frozen=True, slots=True)
class Thread:
    id: str
    key: ThreadKey
    created_by: str
    title: str
    created_at: float


class TurnKind(StrEnum):
    IMAGINE = "imagine"
    EDIT = "edit"
    REROLL = "reroll"


@dataclass(frozen=True, slots=True)
class Turn:
    """One finished step of a thread. Turns form a tree: replying to an older image branches."""

    id: str
    thread_id: str
    parent_id: str | None
    user_id: str
    kind: TurnKind
    prompt: str
    reference_shas: tuple[str, ...]
    result_sha: str
    text: str
    aspect_ratio: str
    provider: str
    model: str
    provider_state: JSON
    usage: Usage
    created_at: float
    duration_s: float
    deleted: bool = False
    size: str | None = None
    """Output size asked for (`2K`), for models that offer one; None: the model's only size."""


class JobStatus(StrEnum):
    """queued → running → made (image stored) → delivered (posted and indexed), or failed /
    cancelled. A job is *settled* once its user has seen the image or the error."""

    QUEUED = "queued"
    RUNNING = "running"
    MADE = "made"
    DELIVERED = "delivered"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def finished(self) -> bool:
        """Nothing more happens at the provider (what is left is telling the user)."""
        return self not in (JobStatus.QUEUED, JobStatus.RUNNING)


@dataclass(frozen=True, slots=True)
class Job:
    """A request the bot accepted: recorded before it runs, so a restart resumes it.

    `owner` is the worker holding it until `lease_until` (epoch seconds); it renews the
    lease while it works, and another worker takes the job over once the lease lapses.
    `settled` is true once the user has seen the image or the error.

    `parent_turn_id` is where the edit starts; with `follow_latest` the parent is re-read
    when the job starts, so two quick replies in a thread build on each other.
    `destination` is the adapter's own JSON saying where the answer goes.
    """

    id: str
    thread_id: str
    user_id: str
    kind: TurnKind
    prompt: str
    reference_shas: tuple[str, ...]
    aspect_ratio: str
    parent_turn_id: str | None
    follow_latest: bool
    destination: JSON
    provider: str
    model: str
    status: JobStatus = JobStatus.QUEUED
    provider_request_id: str | None = None
    turn_id: str | None = None
    error: str | None = None
    created_at: float = 0.0
    started_at: float | None = None
    finished_at: float | None = None
    owner: str | None = None
    lease_until: float | None = None
    settled: bool = False
    cancel_requested: bool = False
    cost_usd: float = 0.0
    """Estimated US$ of the image, fixed when the job is accepted (the ledger's price)."""
    size: str | None = None
    """Output size for models that offer one; an edit continues on its thread's."""
    platform: str = field(default="", compare=False)
    """Where it was asked: its thread's platform, derived by the store (not compared)."""


@dataclass(frozen=True, slots=True)
class HistoryTurn:
    """A finished turn as a provider needs it to continue the conversation."""

    prompt: str
    references: tuple[Image, ...]
    result: Image
    text: str
    provider: str
    provider_state: JSON


@dataclass(frozen=True, slots=True)
class ImageRequest:
    """What a provider receives. `history` is the path root → parent turn, capped."""

    prompt: str
    aspect_ratio: str
    model: str
    references: tuple[Image, ...] = ()
    history: tuple[HistoryTurn, ...] = ()
    size: str | None = None
    """Output size (`1K`, `2K`, `4K`) for models that offer one; None: the model's default.
    `model` is Google's id (`bot.catalog`); each provider maps it to its own."""


@dataclass(frozen=True, slots=True)
class ImageResult:
    images: tuple[Image, ...]
    text: str = ""
    usage: Usage = Usage()
    provider_state: JSON = None
    provider_request_id: str | None = None
    provider: str = ""
    """Which provider made it, when several share the work (`FailoverProvider`)."""

    @property
    def image(self) -> Image:
        return self.images[0]
