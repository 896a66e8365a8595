"""The rules of imagine-bot, in one place.

Adapters turn platform events into the requests below and hand over a `ReplySink` bound to
where the answers go (like slack-bolt's `say`). The core validates, records the job before
anything runs (durable before visible), lets the scheduler run it, builds the provider
request from the thread's tree of turns, stores the result in one transaction and only
then asks the sink to show it.

- `imagine` starts a new thread;
- `edit` continues a thread from its latest turn, or from an older turn (a branch);
- `reroll` runs a turn's prompt again on the same parent;
- the provider gets the path root → parent, capped, with a note to the user when cut.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from enum import StrEnum
from typing import Protocol

from bot.errors import (
    BadApiKey,
    Cancelled,
    ImagineError,
    InternalError,
    NotAllowed,
    ProviderTimeout,
    ProviderUnavailable,
    ShuttingDown,
    UnknownTurn,
    UserQueueFull,
    error_record,
    restore_error,
)
from bot.inputs import check_reference_count, clean_prompt, parse_aspect_ratio
from bot.models import (
    DEFAULT_ASPECT_RATIO,
    JSON,
    HistoryTurn,
    Image,
    ImageRequest,
    ImageResult,
    Job,
    JobStatus,
    Thread,
    ThreadKey,
    Turn,
    TurnKind,
    new_id,
    now,
)
from bot.providers.base import Provider, ProviderCall
from bot.queue import Limits, positions
from bot.scheduler import StopReason, Worker
from bot.store import Store

log = logging.getLogger(__name__)

DEFAULT_HISTORY_TURNS = 8
EVENT_MEMORY = 24 * 3600
"""Seconds a platform event id is remembered for deduplication (Slack retries within
minutes); older ones are dropped at start-up so the table does not grow forever."""
PROGRESS_SLICES = 10
"""The progress ticker wakes this many times per interval, each time sending a share."""
RESUME_BUDGET = 10.0
"""Seconds a job taken over past its deadline still gets: one look at a stored request."""


# --- what adapters send in -----------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ImagineRequest:
    """Start a new thread. `key` names it on the platform; `destination` is adapter JSON."""

    key: ThreadKey
    user_id: str
    prompt: str
    aspect_ratio: str | None = None
    references: tuple[Image, ...] = ()
    destination: JSON = None


@dataclass(frozen=True, slots=True)
class EditRequest:
    """Continue a thread: from `turn_id` (a reply to that image) or the latest of `thread_key`."""

    user_id: str
    instruction: str
    turn_id: str | None = None
    thread_key: ThreadKey | None = None
    references: tuple[Image, ...] = ()
    aspect_ratio: str | None = None
    destination: JSON = None


# --- what the core sends out ---------------------------------------------------------------


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


class ReplySink(Protocol):
    """Where the answers to one job go. Implemented by each adapter."""

    async def progress(self, update: Progress) -> None: ...

    async def deliver(self, delivery: Delivery) -> str | None:
        """Show the image; return the platform id of the message showing it, to index."""
        ...

    async def fail(self, job: Job | None, error: ImagineError) -> None: ...


SinkFactory = Callable[[Job], ReplySink]
"""Rebuilds a sink from a stored job's destination, for jobs resumed after a restart."""


def history_note(kept: int) -> str:
    return f"This thread is long, so only its last {kept} images were sent to the model as context."


@dataclass(frozen=True, slots=True)
class _Target:
    """Where an edit starts: a finished turn, or (turn_id None) a thread's pending image."""

    thread_id: str
    turn_id: str | None
    aspect_ratio: str


@dataclass
class _Live:
    """A job the core is watching: its sink and what the user was last shown."""

    job: Job
    sink: ReplySink
    started: float | None = None
    shown_position: int | None = None
    sending: bool = False
    last_sent: float = float("-inf")
    """When the last background update went out (monotonic): at most one per interval."""
    """A progress update is in flight: skip ticks rather than pile up slow edits."""


class ImagineBot:
    def __init__(
        self,
        store: Store,
        provider: Provider,
        *,
        model: str,
        limits: Limits = Limits(),
        history_turns: int = DEFAULT_HISTORY_TURNS,
        default_aspect_ratio: str = DEFAULT_ASPECT_RATIO,
        progress_interval: float = 1.0,
        progress_rate: float = 25.0,
        job_timeout: float = 180.0,
        lease: float = 30.0,
        poll: float = 1.0,
    ) -> None:
        self.store = store
        self.provider = provider
        self.model = model
        self.limits = limits
        self.job_timeout = job_timeout
        """Seconds a job may spend at the provider in all, every retry included."""
        self.worker = Worker(store, limits, self._work, lease=lease, poll=poll)
        self.history_turns = history_turns
        self.default_aspect_ratio = default_aspect_ratio
        self.progress_interval = progress_interval
        self.progress_rate = progress_rate
        """Progress updates per second across all jobs (Discord allows a bot 50 requests/s)."""
        self._live: dict[str, _Live] = {}
        self._sink_factories: dict[str, SinkFactory] = {}
        self._ticker: asyncio.Task[None] | None = None
        self._background: set[asyncio.Task[None]] = set()

    # --- lifecycle --------------------------------------------------------------------------

    def register_platform(self, platform: str, sink_factory: SinkFactory) -> None:
        """Let jobs of `platform` accepted by other (or earlier) processes be run and
        delivered here, through sinks rebuilt from their stored destination."""
        self._sink_factories[platform] = sink_factory
        self.worker.serve(platform)

    async def start(self) -> None:
        forgotten = await self.store.forget_events(now() - EVENT_MEMORY)
        if forgotten:
            log.info("forgot %d platform event id(s) older than a day", forgotten)
        await self.worker.start()
        if self._ticker is None:
            self._ticker = asyncio.get_running_loop().create_task(self._tick(), name="progress")

    async def resume_unfinished(self) -> int:
        """Serve the shared queue for every registered platform (call once the adapters
        are up): jobs other processes accepted, and those a dead process held once its lease
        lapses. Returns how many were taken at once."""
        return await self.worker.take_over()

    async def shutdown(self, grace: float) -> list[str]:
        """Stop taking work; running jobs get `grace` s; the rest are handed over."""
        left = await self.worker.drain(grace)
        if self._ticker is not None:
            self._ticker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._ticker
            self._ticker = None
        if left:
            log.info("left %d unfinished job(s) to other processes or the next start", len(left))
        return left

    async def idle(self) -> None:
        """Wait until this process has no job running and none of its own waiting."""
        await self.worker.join()

    # --- requests ---------------------------------------------------------------------------

    async def imagine(self, request: ImagineRequest, sink: ReplySink) -> Job:
        prompt = clean_prompt(request.prompt)
        ratio = parse_aspect_ratio(request.aspect_ratio) or self.default_aspect_ratio
        check_reference_count(len(request.references), self._max_references)
        self.check_admission(request.user_id)
        thread = await self.store.create_thread(
            Thread(
                id=new_id(),
                key=request.key,
                created_by=request.user_id,
                title=prompt[:200],
                created_at=now(),
            )
        )
        job = self._new_job(
            thread_id=thread.id,
            user_id=request.user_id,
            kind=TurnKind.IMAGINE,
            prompt=prompt,
            references=request.references,
            aspect_ratio=ratio,
            parent_turn_id=None,
            follow_latest=False,
            destination=request.destination,
        )
        await self._submit(job, sink, request.references)
        return job

    async def edit(self, request: EditRequest, sink: ReplySink) -> Job:
        instruction = clean_prompt(request.instruction)
        ratio = parse_aspect_ratio(request.aspect_ratio)
        check_reference_count(len(request.references), self._max_references)
        target, follow_latest = await self._edit_target(request)
        self.check_admission(request.user_id)
        job = self._new_job(
            thread_id=target.thread_id,
            user_id=request.user_id,
            kind=TurnKind.EDIT,
            prompt=instruction,
            references=request.references,
            aspect_ratio=ratio or target.aspect_ratio,
            parent_turn_id=target.turn_id,
            follow_latest=follow_latest,
            destination=request.destination,
        )
        await self._submit(job, sink, request.references)
        return job

    async def reroll(
        self, turn_id: str, user_id: str, sink: ReplySink, destination: JSON = None
    ) -> Job:
        """Same prompt, same references, same parent: a new take on one turn."""
        turn = await self._turn(turn_id)
        self.check_admission(user_id)
        job = Job(
            id=new_id(),
            thread_id=turn.thread_id,
            user_id=user_id,
            kind=TurnKind.REROLL,
            prompt=turn.prompt,
            reference_shas=turn.reference_shas,
            aspect_ratio=turn.aspect_ratio,
            parent_turn_id=turn.parent_id,
            follow_latest=False,
            destination=destination,
            provider=self.provider.name,
            model=self.model,
            created_at=now(),
        )
        await self._submit(job, sink)
        return job

    async def retry(
        self, job_id: str, user_id: str, sink: ReplySink, destination: JSON = None
    ) -> Job:
        """Run a failed (or cancelled) request again, as a new job, for whoever asks.

        Adapters offer it where `ImagineError.retryable` says trying again can help (rate
        limits, provider outages, timeouts, unreadable answers).
        """
        failed = await self.store.get_job(job_id)
        if failed is None or failed.status not in (JobStatus.FAILED, JobStatus.CANCELLED):
            raise UnknownTurn(detail=f"job {job_id} is not a failed job")
        if failed.parent_turn_id is not None:
            await self._turn(failed.parent_turn_id)  # the image it edited must still exist
        self.check_admission(user_id)
        job = replace(
            failed,
            id=new_id(),
            user_id=user_id,
            destination=destination,
            provider=self.provider.name,
            model=self.model,
            status=JobStatus.QUEUED,
            provider_request_id=None,
            turn_id=None,
            error=None,
            created_at=now(),
            started_at=None,
            finished_at=None,
            owner=None,
            lease_until=None,
            settled=False,
            cancel_requested=False,
        )
        await self._submit(job, sink)
        return job

    async def delete(self, turn_id: str, user_id: str, *, moderator: bool = False) -> Turn:
        """Hide a turn (requester or moderator only); the adapter removes its messages."""
        turn = await self._turn(turn_id)
        if turn.user_id != user_id and not moderator:
            raise NotAllowed()
        await self.store.mark_turn_deleted(turn.id)
        return turn

    async def cancel(self, job_id: str, user_id: str, *, moderator: bool = False) -> bool:
        """Cancel a waiting or running job, whichever process holds it; False when it had
        already left the provider."""
        job = await self.store.get_job(job_id)
        if job is None:
            raise UnknownTurn()
        if job.user_id != user_id and not moderator:
            raise NotAllowed()
        live = self._live.get(job_id)
        at_provider = live is not None and not live.job.status.finished
        if at_provider and self.worker.stop(job_id, StopReason.USER):
            return True  # its task records the cancellation and tells the user
        if await self.store.cancel_queued_job(job_id, self.worker.id, self.worker.lease):
            self.worker.forget(job_id)
            sink = await self._sink_for(job)
            self._live.pop(job_id, None)
            cancelled = replace(job, status=JobStatus.CANCELLED)
            if sink is not None:
                await self._safe_fail(sink, cancelled, Cancelled())
                await self.store.settle_job(job_id, self.worker.id)
            return True
        # at the provider in another process: its worker cancels it within a poll
        return await self.store.request_cancel(job_id)

    # --- lookups adapters need --------------------------------------------------------------

    def check_admission(self, user_id: str) -> None:
        """Raise `UserQueueFull`/`ShuttingDown` now, so an adapter can refuse inside its ack.

        This process's own count, with no database round trip; recording the job checks
        again, exactly, over every process (`Store.add_job`).
        """
        if not self.worker.accepting:
            raise ShuttingDown()
        mine = sum(1 for live in self._live.values() if live.job.user_id == user_id)
        if mine >= self.limits.per_user_running + self.limits.per_user_queued:
            raise UserQueueFull(mine)

    async def get_turn(self, turn_id: str) -> Turn | None:
        """A turn that still exists (deleted turns are None)."""
        turn = await self.store.get_turn(turn_id)
        return None if turn is None or turn.deleted else turn

    async def get_job(self, job_id: str) -> Job | None:
        return await self.store.get_job(job_id)

    async def get_thread(self, thread_id: str) -> Thread | None:
        return await self.store.get_thread(thread_id)

    async def messages_for_turn(self, platform: str, turn_id: str) -> list[str]:
        """Platform messages showing a turn (to remove them when it is deleted)."""
        return await self.store.messages_for_turn(platform, turn_id)

    async def turn_for_message(self, platform: str, message_id: str) -> Turn | None:
        turn = await self.store.turn_for_message(platform, message_id)
        return None if turn is None or turn.deleted else turn

    async def thread_by_key(self, key: ThreadKey) -> Thread | None:
        return await self.store.thread_by_key(key)

    async def link_message(self, platform: str, message_id: str, turn_id: str) -> None:
        await self.store.link_message(platform, message_id, turn_id)

    async def claim_event(self, platform: str, event_id: str) -> bool:
        return await self.store.claim_event(platform, event_id)

    # --- internals --------------------------------------------------------------------------

    @property
    def _max_references(self) -> int:
        return self.provider.capabilities.max_reference_images

    def _new_job(
        self,
        *,
        thread_id: str,
        user_id: str,
        kind: TurnKind,
        prompt: str,
        references: Sequence[Image],
        aspect_ratio: str,
        parent_turn_id: str | None,
        follow_latest: bool,
        destination: JSON,
    ) -> Job:
        return Job(
            id=new_id(),
            thread_id=thread_id,
            user_id=user_id,
            kind=kind,
            prompt=prompt,
            reference_shas=tuple(image.sha256 for image in references),
            aspect_ratio=aspect_ratio,
            parent_turn_id=parent_turn_id,
            follow_latest=follow_latest,
            destination=destination,
            provider=self.provider.name,
            model=self.model,
            created_at=now(),
        )

    async def _turn(self, turn_id: str) -> Turn:
        turn = await self.store.get_turn(turn_id)
        if turn is None or turn.deleted:
            raise UnknownTurn(detail=f"turn {turn_id}")
        return turn

    async def _edit_target(self, request: EditRequest) -> tuple[_Target, bool]:
        """What to edit, and whether to follow the thread's latest turn when the job starts.

        A reply to the latest image follows the thread, so quick replies build on each
        other; a reply to an older image is a branch from it. A reply to a thread whose
        first image is still being made waits for it (the thread runs one job at a time).
        """
        if request.turn_id is not None:
            turn = await self._turn(request.turn_id)
            latest = await self.store.latest_turn(turn.thread_id)
            target = _Target(turn.thread_id, turn.id, turn.aspect_ratio)
            return target, latest is not None and latest.id == turn.id
        if request.thread_key is not None:
            thread = await self.store.thread_by_key(request.thread_key)
            if thread is not None:
                latest = await self.store.latest_turn(thread.id)
                if latest is not None:
                    return _Target(thread.id, latest.id, latest.aspect_ratio), True
                pending = await self.store.active_job_for_thread(thread.id)
                if pending is not None:
                    return _Target(thread.id, None, pending.aspect_ratio), True
        raise UnknownTurn(detail=f"no turn for {request}")

    async def _submit(self, job: Job, sink: ReplySink, references: Sequence[Image] = ()) -> None:
        """Record the job (durable before visible) and let the queue take it."""
        await self.store.add_job(job, references, max_queued=self.limits.per_user_queued)
        await self.worker.start()  # idempotent: a core used without `start` still runs jobs
        live = self._live[job.id] = _Live(job=job, sink=sink)
        if await self.worker.submit(job.id):
            return  # claimed at once: the user sees it generating, not queued
        position = positions(await self.store.queue_view()).get(job.id)
        if position is not None and self.worker.is_local(job.id):
            live.shown_position = position  # its first place is shown at once; moves come
            self._post(live, Progress(job, Phase.QUEUED, position=position))  # with ticks

    async def _sink_for(self, job: Job) -> ReplySink | None:
        """The sink of a job accepted here, or one rebuilt from its stored destination."""
        live = self._live.get(job.id)
        if live is not None:
            return live.sink
        thread = await self.store.get_thread(job.thread_id)
        factory = self._sink_factories.get(thread.key.platform) if thread else None
        return factory(job) if factory is not None else None

    async def _work(self, job: Job) -> None:
        """Do what is left of a claimed job's life: generate, deliver, or report."""
        sink = await self._sink_for(job)
        if sink is None:  # claims only take jobs of registered platforms or local ones
            log.error("job %s has no platform to answer on here", job.id)
            return
        live = self._live[job.id] = _Live(job=job, sink=sink)
        try:
            if job.status is JobStatus.MADE:
                await self._deliver_made(live)
            elif job.status in (JobStatus.FAILED, JobStatus.CANCELLED):
                await self._report(live, restore_error(job.error))
            else:
                if job.started_at is not None and job.provider_request_id is not None:
                    log.info("taking over job %s at the provider", job.id)
                await self._generate(live)
        finally:
            self._live.pop(job.id, None)

    async def _generate(self, live: _Live) -> None:
        job = live.job
        start = live.started = time.monotonic()
        deadline = (job.started_at or now()) + self.job_timeout
        worker = self.worker.id

        async def submitted(request_id: str) -> None:
            await self.store.set_job_provider_request(job.id, worker, request_id)

        try:
            if job.provider_request_id and job.provider != self.provider.name:
                raise ProviderUnavailable(
                    detail=f"job {job.id} was submitted to {job.provider}, now {self.provider.name}"
                )
            parent_id = await self._resolve_parent(job)
            if not await self.store.start_job(job.id, worker, parent_id):
                return  # another worker holds it now
            job = live.job = replace(job, status=JobStatus.RUNNING, parent_turn_id=parent_id)
            await self._safe_progress(live.sink, Progress(job, Phase.GENERATING))
            request, notes = await self._build_request(job)
            try:
                async with asyncio.timeout(max(deadline - now(), RESUME_BUDGET)):
                    result = await self.provider.generate(
                        request,
                        ProviderCall(resume_id=job.provider_request_id, on_submitted=submitted),
                    )
            except TimeoutError:
                raise ProviderTimeout(
                    detail=f"no image within IMAGINE_JOB_TIMEOUT={self.job_timeout:g}s"
                ) from None
            turn = self._new_turn(job, result, time.monotonic() - start)
            if not await self.store.make_job(job.id, worker, turn, result.images):
                return
        except asyncio.CancelledError:
            if self.worker.stop_reason(job.id) is StopReason.USER:
                await asyncio.shield(self._fail(live, JobStatus.CANCELLED, Cancelled()))
            raise
        except ImagineError as error:
            if isinstance(error, BadApiKey):  # users were told an admin must act: tell them
                log.error(
                    "the %s provider refused the API key; check its *_API_KEY setting (%s)",
                    job.provider,
                    error.detail,
                )
            else:
                log.warning("job %s failed: %s", job.id, error)
            await self._fail(live, JobStatus.FAILED, error)
            return
        except Exception as exc:
            log.exception("job %s failed unexpectedly", job.id)
            await self._fail(live, JobStatus.FAILED, InternalError(detail=repr(exc)))
            return
        live.job = replace(job, status=JobStatus.MADE, turn_id=turn.id)
        await self._deliver(live, turn, result.image, notes)

    async def _deliver_made(self, live: _Live) -> None:
        """An image made by a worker that died before posting it: post it from the store."""
        job = live.job
        turn = await self.store.get_turn(job.turn_id or "")
        if turn is None:
            await self._fail(live, JobStatus.FAILED, InternalError(detail="made turn vanished"))
            return
        log.info("delivering job %s made by another process", job.id)
        notes = await self._history_notes(job.parent_turn_id)
        await self._deliver(live, turn, await self._image(turn.result_sha), notes)

    async def _deliver(self, live: _Live, turn: Turn, image: Image, notes: tuple[str, ...]) -> None:
        job = live.job
        elapsed = time.monotonic() - live.started if live.started is not None else 0.0
        await self._safe_progress(live.sink, Progress(job, Phase.UPLOADING, elapsed=elapsed))
        try:
            message_id = await live.sink.deliver(Delivery(job, turn, image, notes))
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("delivering job %s failed", job.id)
            await self._fail(live, JobStatus.FAILED, InternalError(detail="delivery failed"))
            return
        thread = await self.store.get_thread(job.thread_id)
        platform = thread.key.platform if thread is not None else ""
        await self.store.deliver_job(job.id, self.worker.id, platform, message_id)

    async def _fail(self, live: _Live, status: JobStatus, error: ImagineError) -> None:
        """Record a failure or cancellation, then show it (durable before visible)."""
        record = error_record(error)
        if not await self.store.fail_job(live.job.id, self.worker.id, status, record):
            return  # taken over: the new owner decides what the user sees
        live.job = replace(live.job, status=status, error=record)
        await self._report(live, error)

    async def _report(self, live: _Live, error: ImagineError) -> None:
        await self._safe_fail(live.sink, live.job, error)
        await self.store.settle_job(live.job.id, self.worker.id)

    async def _resolve_parent(self, job: Job) -> str | None:
        parent = job.parent_turn_id
        if job.follow_latest:
            latest = await self.store.latest_turn(job.thread_id)
            parent = latest.id if latest is not None else parent
        if parent is None and job.kind is TurnKind.EDIT:
            raise UnknownTurn(detail="the image this edit waited for was never made")
        return parent

    async def _build_request(self, job: Job) -> tuple[ImageRequest, tuple[str, ...]]:
        references = tuple([await self._image(sha) for sha in job.reference_shas])
        history: list[HistoryTurn] = []
        notes: tuple[str, ...] = ()
        if job.parent_turn_id is not None:
            path = await self.store.turn_path(job.parent_turn_id, self.history_turns)
            if not path:
                raise UnknownTurn(detail=f"parent {job.parent_turn_id} vanished")
            for turn in path:
                history.append(
                    HistoryTurn(
                        prompt=turn.prompt,
                        references=tuple([await self._image(s) for s in turn.reference_shas]),
                        result=await self._image(turn.result_sha),
                        text=turn.text,
                        provider=turn.provider,
                        provider_state=turn.provider_state,
                    )
                )
            notes = await self._history_notes(job.parent_turn_id)
        request = ImageRequest(
            prompt=job.prompt,
            aspect_ratio=job.aspect_ratio,
            model=job.model,
            references=references,
            history=tuple(history),
        )
        return request, notes

    async def _image(self, sha: str) -> Image:
        image = await self.store.get_image(sha)
        if image is None:
            raise UnknownTurn(detail=f"image {sha} missing from the store")
        return image

    async def _history_notes(self, parent_turn_id: str | None) -> tuple[str, ...]:
        """The note that older turns were left out of the model's context, if they were."""
        if parent_turn_id is None:
            return ()
        if await self.store.count_path(parent_turn_id) > self.history_turns:
            return (history_note(self.history_turns),)
        return ()

    def _new_turn(self, job: Job, result: ImageResult, duration: float) -> Turn:
        if not result.images:
            raise InternalError(detail="provider returned a result without images")
        return Turn(
            id=new_id(),
            thread_id=job.thread_id,
            parent_id=job.parent_turn_id,
            user_id=job.user_id,
            kind=job.kind,
            prompt=job.prompt,
            reference_shas=job.reference_shas,
            result_sha=result.image.sha256,
            text=result.text,
            aspect_ratio=job.aspect_ratio,
            provider=job.provider,
            model=job.model,
            provider_state=result.provider_state,
            usage=result.usage,
            created_at=now(),
            duration_s=round(duration, 3),
        )

    async def _safe_progress(self, sink: ReplySink, update: Progress) -> None:
        try:
            await sink.progress(update)
        except Exception:
            log.warning("progress update for job %s failed", update.job.id, exc_info=True)

    async def _safe_fail(self, sink: ReplySink, job: Job | None, error: ImagineError) -> None:
        try:
            await sink.fail(job, error)
        except Exception:
            log.exception("reporting an error to the user failed")

    def _may_post(self, live: _Live) -> bool:
        """Not while an update is in flight, and not more than once per interval: a queue of
        a hundred moves every time a job starts, and platforms rate-limit message edits.
        Skipped positions are caught up by the next tick."""
        return (
            not live.sending and time.monotonic() - live.last_sent >= self.progress_interval * 0.95
        )

    def _post(self, live: _Live, update: Progress) -> None:
        """Send a progress update in the background, one at a time per job."""
        if live.sending:
            return
        live.sending = True
        live.last_sent = time.monotonic()

        async def send() -> None:
            try:
                await self._safe_progress(live.sink, update)
            finally:
                live.sending = False

        task = asyncio.get_running_loop().create_task(send())
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def _tick(self) -> None:
        """Progress, spread over each interval in slices and capped by `progress_rate`.

        Firing every job's update at the same instant made one loop iteration run for
        hundreds of milliseconds with 200 jobs live (BENCHMARKS.md), and Discord allows a
        bot 50 requests a second in all. Running jobs go first, then the front of the queue.
        Queue positions come from the shared queue, read at most once per interval.
        """
        pause = self.progress_interval / PROGRESS_SLICES
        budget = max(1, round(self.progress_rate * pause))
        places: dict[str, int] = {}
        read_at = float("-inf")
        while True:
            await asyncio.sleep(pause)
            try:
                if time.monotonic() - read_at >= self.progress_interval:
                    read_at = time.monotonic()
                    places = await self._queue_places()
                self._send_due_progress(budget, places)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.warning("progress pass failed", exc_info=True)

    async def _queue_places(self) -> dict[str, int]:
        """Places in the shared queue of the jobs accepted here; a job that left the queue
        without this process (another one took it, or it was cancelled) is let go here."""
        waiting = [job_id for job_id in self._live if self.worker.is_local(job_id)]
        if not waiting:
            return {}
        places = positions(await self.store.queue_view())
        for job_id in waiting:
            if job_id in places or not self.worker.is_local(job_id):
                continue
            job = await self.store.get_job(job_id)
            if job is None or job.owner != self.worker.id:
                self.worker.forget(job_id)
                if not self.worker.holds(job_id):
                    self._live.pop(job_id, None)
        return places

    def _send_due_progress(self, budget: int, places: dict[str, int]) -> None:
        clock = time.monotonic()
        due: list[tuple[tuple[int, float], _Live, Progress]] = []
        for live in self._live.values():
            if not self._may_post(live):
                continue
            if live.job.status is JobStatus.RUNNING and live.started is not None:
                update = Progress(live.job, Phase.GENERATING, elapsed=clock - live.started)
                due.append(((0, live.last_sent), live, update))
                continue
            position = places.get(live.job.id) if self.worker.is_local(live.job.id) else None
            if position is not None and position != live.shown_position:
                update = Progress(live.job, Phase.QUEUED, position=position)
                due.append(((position, live.last_sent), live, update))
        due.sort(key=lambda entry: entry[0])
        for _, live, update in due[:budget]:
            if update.phase is Phase.QUEUED:
                live.shown_position = update.position
            self._post(live, update)
