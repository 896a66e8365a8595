"""The life of one claimed job, whichever process accepted it.

A worker hands over each job it claims; the runner does what is left: generate (building
the provider request from the thread's tree of turns, within the job's deadline), store the
result in one transaction, post it, index the message; or post an image a dead process
made; or show a failure a dead process recorded. Every store write is conditional on this
worker still holding the job, so a worker that lost it stops quietly.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import replace

from bot import metrics
from bot.errors import (
    BadApiKey,
    Cancelled,
    ImageExpired,
    ImagineError,
    InternalError,
    ProviderTimeout,
    ProviderUnavailable,
    UnknownTurn,
    error_record,
    restore_error,
)
from bot.logs import job_context
from bot.models import (
    HistoryTurn,
    Image,
    ImageRequest,
    ImageResult,
    Job,
    JobStatus,
    Turn,
    TurnKind,
    new_id,
    now,
)
from bot.progress import LiveJob, ProgressBoard, safe_progress
from bot.providers.base import Provider, ProviderCall
from bot.providers.failover import split_request_id
from bot.scheduler import StopReason, Worker
from bot.sinks import Delivery, Phase, Progress, ReplySink
from bot.store import Store

log = logging.getLogger(__name__)

RESUME_BUDGET = 10.0
"""Seconds a job taken over past its deadline still gets: one look at a stored request."""


def history_note(kept: int) -> str:
    if kept == 1:
        return "This thread is long, so only its last image was sent to the model as context."
    return f"This thread is long, so only its last {kept} images were sent to the model as context."


async def safe_fail(sink: ReplySink, job: Job | None, error: ImagineError) -> None:
    """Tell the user; a sink that fails is logged, never fatal."""
    try:
        await sink.fail(job, error)
    except Exception:
        log.exception("reporting an error to the user failed")


class JobRunner:
    def __init__(
        self,
        store: Store,
        provider: Provider,
        worker: Worker,
        board: ProgressBoard,
        sink_for: Callable[[Job], Awaitable[ReplySink | None]],
        *,
        history_turns: int,
        job_timeout: float,
        retention_days: int = 0,
    ) -> None:
        self.store = store
        self.provider = provider
        self.worker = worker
        self.board = board
        self.sink_for = sink_for
        self.history_turns = history_turns
        self.job_timeout = job_timeout
        """Seconds a job may spend at the provider in all, every retry included."""
        self.retention_days = retention_days

    async def run(self, job: Job) -> None:
        """Do what is left of a claimed job's life: generate, deliver, or report."""
        sink = await self.sink_for(job)
        if sink is None:  # claims only take jobs of registered platforms or local ones
            log.error("job %s has no platform to answer on here", job.id)
            return
        live = self.board.watch(job, sink)
        fields = job_context(
            job_id=job.id, thread_id=job.thread_id, platform=job.platform, provider=job.provider
        )
        try:
            with fields:
                await self._step(live)
        finally:
            self.board.forget(job.id)

    async def _step(self, live: LiveJob) -> None:
        job = live.job
        if job.status is JobStatus.MADE:
            await self._deliver_made(live)
        elif job.status in (JobStatus.FAILED, JobStatus.CANCELLED):
            await self._report(live, restore_error(job.error))
        else:
            if job.provider_request_id is not None:
                log.info("resuming job %s: polling its stored provider request", job.id)
            await self._generate(live)

    async def _generate(self, live: LiveJob) -> None:
        job = live.job
        start = live.started = time.monotonic()
        deadline = (job.started_at or now()) + self.job_timeout
        worker = self.worker.id

        async def submitted(request_id: str) -> None:
            await self.store.set_job_provider_request(job.id, worker, request_id)

        try:
            resume_id = self._resume_id(job)
            parent_id = await self._resolve_parent(job)
            if parent_id != job.parent_turn_id and not await self.store.start_job(
                job.id, worker, parent_id
            ):
                return  # another worker holds it now
            job = live.job = replace(job, status=JobStatus.RUNNING, parent_turn_id=parent_id)
            # a job the provider already has (resumed) is polled through whatever the sink
            # says: it is being made and billed either way
            fresh = job.provider_request_id is None
            await safe_progress(live.sink, Progress(job, Phase.GENERATING), fatal=fresh)
            request, notes = await self._build_request(job)
            try:
                async with (
                    metrics.provider_call(job.provider),
                    asyncio.timeout(max(deadline - now(), RESUME_BUDGET)),
                ):
                    result = await self.provider.generate(
                        request,
                        ProviderCall(
                            resume_id=resume_id,
                            on_submitted=submitted,
                            resume_provider=job.provider,
                        ),
                    )
            except TimeoutError:
                raise ProviderTimeout(
                    detail=f"no image within IMAGINE_JOB_TIMEOUT={self.job_timeout:g}s"
                ) from None
            turn = self._new_turn(job, result, time.monotonic() - start)
            if not await self.store.make_job(job.id, worker, turn, result.images):
                return
            metrics.images_made(turn.provider, len(result.images), job.cost_usd)
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

    def _resume_id(self, job: Job) -> str | None:
        """The stored request id as this process's provider takes it, or
        `ProviderUnavailable` when the provider that holds it is not configured any more."""
        stored = job.provider_request_id
        if not stored:
            return None
        names = self.provider.name.split(",")
        owner, request_id = split_request_id(stored, job.provider, names)
        if owner not in names:
            raise ProviderUnavailable(
                detail=f"job {job.id} was submitted to {owner or job.provider}, "
                f"now {self.provider.name}"
            )
        return stored if len(names) > 1 else request_id

    async def _deliver_made(self, live: LiveJob) -> None:
        """An image made by a worker that died before posting it: post it from the store."""
        job = live.job
        turn = await self.store.get_turn(job.turn_id or "")
        if turn is None:
            await self._fail(live, JobStatus.FAILED, InternalError(detail="made turn vanished"))
            return
        log.info("delivering job %s made by another process", job.id)
        notes = await self._history_notes(job.parent_turn_id)
        await self._deliver(live, turn, await self._image(turn.result_sha), notes)

    async def _deliver(
        self, live: LiveJob, turn: Turn, image: Image, notes: tuple[str, ...]
    ) -> None:
        job = live.job
        elapsed = time.monotonic() - live.started if live.started is not None else 0.0
        await safe_progress(live.sink, Progress(job, Phase.UPLOADING, elapsed=elapsed))
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
        if await self.store.deliver_job(job.id, self.worker.id, platform, message_id):
            metrics.job_ended("done", "done", job.created_at)

    async def _fail(self, live: LiveJob, status: JobStatus, error: ImagineError) -> None:
        """Record a failure or cancellation, then show it (durable before visible)."""
        record = error_record(error)
        if not await self.store.fail_job(live.job.id, self.worker.id, status, record):
            return  # taken over: the new owner decides what the user sees
        kind = "cancelled" if status is JobStatus.CANCELLED else "failed"
        metrics.job_ended(error.code, kind, live.job.created_at)
        live.job = replace(live.job, status=status, error=record)
        await self._report(live, error)

    async def _report(self, live: LiveJob, error: ImagineError) -> None:
        await safe_fail(live.sink, live.job, error)
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
            size=job.size,
        )
        return request, notes

    async def _image(self, sha: str) -> Image:
        image = await self.store.get_image(sha)
        if image is None:  # rows are only ever emptied by retention or a delete
            raise ImageExpired(self.retention_days, detail=f"image {sha} has no bytes")
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
            provider=result.provider or job.provider,
            model=job.model,
            provider_state=result.provider_state,
            usage=result.usage,
            created_at=now(),
            duration_s=round(duration, 3),
            size=job.size,
        )
