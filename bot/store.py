"""The port the core needs from storage. `storage/` implements it; the core never imports it.

Every method that writes several rows does so in one transaction. Images are keyed by
sha256 and written once however often they are used.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from bot.models import JSON, Image, Job, JobStatus, Thread, ThreadKey, Turn
from bot.policy import Admission, Overrides, Refusal, Scope
from bot.queue import ClaimRequest, QueueView
from bot.usage import UsageLine


@dataclass(frozen=True, slots=True)
class PurgeResult:
    """What a purge removed: how many images lost their bytes, and how many bytes."""

    images: int
    bytes: int


@runtime_checkable
class Store(Protocol):
    async def close(self) -> None: ...

    # images ---------------------------------------------------------------------------------
    async def put_images(self, images: Sequence[Image]) -> None:
        """Insert images not stored yet (deduplicated by sha256)."""
        ...

    async def get_image(self, sha256: str) -> Image | None:
        """The image, or None when it was never stored or its bytes were purged."""
        ...

    async def missing_images(self, shas: Sequence[str]) -> set[str]:
        """Which of `shas` have no bytes: never stored, or purged by retention."""
        ...

    async def purge_images(
        self,
        *,
        before: float | None,
        history_turns: int,
        turn_ids: Sequence[str] = (),
    ) -> PurgeResult:
        """Remove the bytes of images nothing may need any more, by the rule in
        `storage.retention`: with `before` (epoch seconds), those first stored earlier;
        with `turn_ids` (just deleted), those of their reach. Turns keep their rows and text;
        their images read as missing (`get_image` is None). SQLite gives the space back."""
        ...

    # threads --------------------------------------------------------------------------------
    async def create_thread(self, thread: Thread) -> Thread:
        """Insert a thread; if its key exists already, return the stored one unchanged."""
        ...

    async def get_thread(self, thread_id: str) -> Thread | None: ...

    async def discard_thread(self, thread_id: str) -> bool:
        """Delete a thread that never got a job or a turn (its first request was refused
        after the thread was made); False, and nothing changes, when it has either."""
        ...

    async def thread_by_key(self, key: ThreadKey) -> Thread | None: ...

    async def list_threads(
        self, platform: str, workspace: str | None = None, limit: int = 20
    ) -> list[Thread]:
        """Newest first (by latest activity)."""
        ...

    # jobs: the queue shared by every process on the database --------------------------------
    async def add_job(
        self,
        job: Job,
        images: Sequence[Image] = (),
        *,
        max_queued: int | None = None,
        admission: Admission | None = None,
    ) -> None:
        """Record an accepted job and its reference images in one transaction; with
        `max_queued`, raise `UserQueueFull` when the user already has that many waiting;
        with `admission`, raise `PolicyRefused` when `bot.policy.decide` refuses it, counted
        in the same transaction (exact across processes)."""
        ...

    # team control: the ledger (the jobs table) and admins' settings ----------------------
    async def check_admission(self, admission: Admission) -> Refusal | None:
        """What `add_job` would refuse right now (a read, for acknowledgements)."""
        ...

    async def get_overrides(self, scope: Scope) -> Overrides: ...

    async def update_overrides(
        self, scope: Scope, change: Callable[[Overrides], Overrides], by: str
    ) -> Overrides:
        """Apply `change` to a workspace's stored settings in one transaction."""
        ...

    async def usage_lines(
        self,
        since: float,
        until: float,
        *,
        platform: str | None = None,
        workspace: str | None = None,
        user: str | None = None,
    ) -> list[UsageLine]:
        """Images and estimated US$ per (platform, workspace, user) in [since, until)."""
        ...

    async def usage_by_period(self, scope: Scope, boundaries: Sequence[float]) -> list[int]:
        """A workspace's images in each [boundaries[i], boundaries[i+1])."""
        ...

    async def get_job(self, job_id: str) -> Job | None: ...

    async def user_load(self, user_id: str) -> tuple[int, int]:
        """(running, queued) jobs of a user, over every process."""
        ...

    async def claim_jobs(self, worker: str, request: ClaimRequest) -> list[Job]:
        """Take what `bot.queue.plan_claims` allows, in one transaction, with a lease."""
        ...

    async def queue_view(self) -> QueueView: ...

    async def renew_leases(self, worker: str, lease: float) -> dict[str, bool]:
        """Held job ids → cancel requested; a job missing here was taken over."""
        ...

    async def cancel_requests(self, worker: str) -> list[str]: ...

    async def release_jobs(self, worker: str) -> int:
        """Hand every unsettled job of `worker` over (graceful stop)."""
        ...

    # each step below is conditional on the owner: False means the worker lost the job
    async def start_job(self, job_id: str, worker: str, parent_turn_id: str | None) -> bool: ...

    async def set_job_provider_request(self, job_id: str, worker: str, request_id: str) -> bool:
        """Store the provider's request id before the first poll (resume after restart)."""
        ...

    async def make_job(self, job_id: str, worker: str, turn: Turn, images: Sequence[Image]) -> bool:
        """One transaction: the result images, the new turn, the job marked made."""
        ...

    async def deliver_job(
        self, job_id: str, worker: str, platform: str, message_id: str | None
    ) -> bool:
        """Index the posted message and settle the job, in one transaction."""
        ...

    async def fail_job(
        self, job_id: str, worker: str, status: JobStatus, error: str | None = None
    ) -> bool:
        """Failed or cancelled, not yet shown to the user (`settle_job` after)."""
        ...

    async def cancel_queued_job(self, job_id: str, worker: str, lease: float) -> bool: ...

    async def request_cancel(self, job_id: str) -> bool:
        """Ask the worker holding a running job to cancel it."""
        ...

    async def settle_job(self, job_id: str, worker: str) -> bool: ...

    async def active_job_for_thread(self, thread_id: str) -> Job | None: ...

    async def unsettled_jobs(self) -> list[Job]: ...

    async def listen(self, wake: Callable[[], None]) -> Callable[[], Awaitable[None]] | None:
        """Call `wake` when another process changes the queue; None: poll instead."""
        ...

    # turns ----------------------------------------------------------------------------------
    async def get_turn(self, turn_id: str) -> Turn | None: ...

    async def latest_turn(self, thread_id: str) -> Turn | None:
        """The most recent turn of the thread that is not deleted."""
        ...

    async def turn_path(self, turn_id: str, limit: int) -> list[Turn]:
        """The path root → `turn_id` (inclusive), keeping only its last `limit` turns."""
        ...

    async def count_path(self, turn_id: str) -> int:
        """How many turns the full root → `turn_id` path has."""
        ...

    async def mark_turn_deleted(self, turn_id: str) -> None: ...

    # platform messages ----------------------------------------------------------------------
    async def link_message(self, platform: str, message_id: str, turn_id: str) -> None:
        """Index a platform message that shows a turn, so a reply to it finds the turn."""
        ...

    async def turn_for_message(self, platform: str, message_id: str) -> Turn | None: ...

    async def messages_for_turn(self, platform: str, turn_id: str) -> list[str]: ...

    # deduplication --------------------------------------------------------------------------
    async def claim_event(self, platform: str, event_id: str) -> bool:
        """True the first time an event id is seen (Slack retries), False afterwards."""
        ...

    async def forget_events(self, before: float) -> int:
        """Drop event ids claimed before `before` (epoch seconds); returns how many."""
        ...

    # small key/value state for adapters (e.g. last selected console thread) ---------------
    async def get_state(self, key: str) -> JSON: ...

    async def set_state(self, key: str, value: JSON) -> None: ...
