"""The rules of imagine-bot, in one place.

Adapters turn platform events into the requests below and hand over a `ReplySink` bound to
where the answers go (like slack-bolt's `say`). The core validates, records the job before
anything runs (durable before visible) and puts it in the shared queue; a worker claims it
(`bot.scheduler`) and a runner does the rest (`bot.runner`), in this process or another.

- `imagine` starts a new thread;
- `edit` continues a thread from its latest turn, or from an older turn (a branch);
- `reroll` runs a turn's prompt again on the same parent; `retry` a failed job again;
- `cancel` stops a job whichever process holds it.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from dataclasses import replace

from bot import metrics
from bot.catalog import choose
from bot.errors import (
    Cancelled,
    NotAllowed,
    ShuttingDown,
    UnknownTurn,
    UserQueueFull,
)
from bot.inputs import check_reference_count, clean_prompt, parse_aspect_ratio
from bot.models import (
    DEFAULT_ASPECT_RATIO,
    JSON,
    Image,
    Job,
    JobStatus,
    Thread,
    ThreadKey,
    Turn,
    TurnKind,
    new_id,
    now,
)
from bot.policy import PolicyRefused, Requester
from bot.progress import ProgressBoard
from bot.providers.base import Provider
from bot.queue import Limits
from bot.requests import EditRequest, ImagineRequest
from bot.retention import SWEEP_INTERVAL, Retention
from bot.runner import JobRunner, history_note, safe_fail
from bot.scheduler import StopReason, Worker
from bot.sinks import Delivery, Phase, Progress, ReplySink, SinkFactory
from bot.store import PurgeResult, Store
from bot.targets import Threads
from bot.team import TeamControl, TeamSettings

__all__ = [
    "Delivery",
    "EditRequest",
    "ImagineBot",
    "ImagineRequest",
    "Phase",
    "Progress",
    "ReplySink",
    "SinkFactory",
    "history_note",
]

log = logging.getLogger(__name__)

DEFAULT_HISTORY_TURNS = 8
EVENT_MEMORY = 24 * 3600
"""Seconds a platform event id is remembered for deduplication (Slack retries within
minutes); older ones are dropped at start-up so the table does not grow forever."""


def reframe_instruction(ratio: str) -> str:
    """What the model is asked for a 📐 change of aspect ratio."""
    return f"Recompose this image at a {ratio} aspect ratio, keeping everything else the same."


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
        retention_days: int = 0,
        retention_interval: float = SWEEP_INTERVAL,
        team: TeamSettings | None = None,
        models: Sequence[str] = (),
    ) -> None:
        self.store = store
        self.team = TeamControl(store, team or TeamSettings(default_model=model))
        self.models = tuple(dict.fromkeys([model, *models]))
        """What users may choose from, the default first (`IMAGINE_MODELS`)."""
        self.provider = provider
        self.model = model
        self.limits = limits
        self.default_aspect_ratio = default_aspect_ratio
        self.worker = Worker(store, limits, self._run_claimed, lease=lease, poll=poll)
        self.board = ProgressBoard(
            store, self.worker, interval=progress_interval, rate=progress_rate
        )
        self.runner = JobRunner(
            store,
            provider,
            self.worker,
            self.board,
            self._sink_for,
            history_turns=history_turns,
            job_timeout=job_timeout,
            retention_days=retention_days,
        )
        self.history_turns = history_turns
        self.retention = Retention(store, retention_days, history_turns, retention_interval)
        self.threads = Threads(
            store,
            history_turns=history_turns,
            retention_days=lambda: self.retention.days,
            continued_model=self.continued_model,
        )
        self._sink_factories: dict[str, SinkFactory] = {}

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
        self.board.start()
        self.retention.start()

    async def resume_unfinished(self) -> int:
        """Serve the shared queue for every registered platform (call once the adapters
        are up): jobs other processes accepted, and those a dead process held once its lease
        lapses. Returns how many were taken at once."""
        return await self.worker.take_over()

    async def shutdown(self, grace: float) -> list[str]:
        """Stop taking work; running jobs get `grace` s; the rest are handed over."""
        await self.retention.stop()
        left = await self.worker.drain(grace)
        await self.board.stop()
        if left:
            log.info("left %d unfinished job(s) to other processes or the next start", len(left))
        return left

    @property
    def retention_days(self) -> int:
        """`IMAGINE_RETENTION_DAYS` (0: images are kept forever)."""
        return self.retention.days

    @retention_days.setter
    def retention_days(self, days: int) -> None:
        self.retention.days = days

    def retention_cutoff(self) -> float | None:
        return self.retention.cutoff()

    async def purge_expired(self) -> PurgeResult:
        """One retention sweep now (`IMAGINE_RETENTION_DAYS`; `bot.retention`)."""
        return await self.retention.purge_expired()

    async def idle(self) -> None:
        """Wait until this process has no job running and none of its own waiting."""
        await self.worker.join()

    # --- requests ---------------------------------------------------------------------------

    async def imagine(self, request: ImagineRequest, sink: ReplySink) -> Job:
        prompt = clean_prompt(request.prompt)
        ratio = parse_aspect_ratio(request.aspect_ratio) or self.default_aspect_ratio
        check_reference_count(len(request.references), self._max_references)
        model, size = self.choose_model(request.model, request.size)
        key = request.key
        who = Requester(
            key.platform,
            key.workspace,
            key.channel,
            request.user_id,
            request.roles,
            parent_channel=request.parent_channel,
        )
        await self.precheck(who, model, size)
        made = Thread(
            id=new_id(),
            key=request.key,
            created_by=request.user_id,
            title=prompt[:200],
            created_at=now(),
        )
        thread = await self.store.create_thread(made)  # or the one already on that key
        job = self._new_job(
            thread_id=thread.id,
            user_id=request.user_id,
            kind=TurnKind.IMAGINE,
            prompt=prompt,
            reference_shas=tuple(image.sha256 for image in request.references),
            aspect_ratio=ratio,
            parent_turn_id=None,
            follow_latest=False,
            destination=request.destination,
            model=model,
            size=size,
        )
        try:
            await self._submit(job, sink, who, request.references)
        except BaseException:
            # refused in the transaction (a race the precheck lost): leave no empty thread,
            # whose platform thread would then look like one of ours — if this request made it
            if thread.id == made.id:
                await asyncio.shield(self.store.discard_thread(thread.id))
            raise
        return job

    async def edit(self, request: EditRequest, sink: ReplySink) -> Job:
        instruction = clean_prompt(request.instruction)
        ratio = parse_aspect_ratio(request.aspect_ratio)
        check_reference_count(len(request.references), self._max_references)
        target = await self.threads.edit_target(request)
        if target.turn_id is not None:
            await self.threads.check_images(target.turn_id)
        who = await self.threads.requester(
            target.thread_id, request.user_id, request.roles, request.parent_channel
        )
        await self.precheck(who, target.model, target.size)
        job = self._new_job(
            thread_id=target.thread_id,
            user_id=request.user_id,
            kind=TurnKind.EDIT,
            prompt=instruction,
            reference_shas=tuple(image.sha256 for image in request.references),
            aspect_ratio=ratio or target.aspect_ratio,
            parent_turn_id=target.turn_id,
            follow_latest=target.follow_latest,
            destination=request.destination,
            model=target.model,
            size=target.size,
        )
        await self._submit(job, sink, who, request.references)
        return job

    async def reroll(
        self,
        turn_id: str,
        user_id: str,
        sink: ReplySink,
        destination: JSON = None,
        *,
        roles: frozenset[str] = frozenset(),
        parent_channel: str = "",
    ) -> Job:
        """Same prompt, same references, same parent: a new take on one turn."""
        turn = await self.threads.turn(turn_id)
        await self.threads.check_images(turn.parent_id, turn.reference_shas)
        model, size = self.continued_model(turn.model, turn.size)
        who = await self.threads.requester(turn.thread_id, user_id, roles, parent_channel)
        await self.precheck(who, model, size)
        job = self._new_job(
            thread_id=turn.thread_id,
            user_id=user_id,
            kind=TurnKind.REROLL,
            prompt=turn.prompt,
            reference_shas=turn.reference_shas,
            aspect_ratio=turn.aspect_ratio,
            parent_turn_id=turn.parent_id,
            follow_latest=False,
            destination=destination,
            model=model,
            size=size,
        )
        await self._submit(job, sink, who)
        return job

    async def reframe(
        self,
        turn_id: str,
        aspect_ratio: str,
        user_id: str,
        sink: ReplySink,
        destination: JSON = None,
        *,
        roles: frozenset[str] = frozenset(),
        parent_channel: str = "",
    ) -> Job:
        """📐: the same picture recomposed at another aspect ratio, as an edit of that turn
        (it counts like any edit, and branches when the turn is not the thread's latest)."""
        ratio = parse_aspect_ratio(aspect_ratio) or self.default_aspect_ratio
        request = EditRequest(
            user_id,
            reframe_instruction(ratio),
            turn_id=turn_id,
            aspect_ratio=ratio,
            destination=destination,
            roles=roles,
            parent_channel=parent_channel,
            follow=False,
        )
        return await self.edit(request, sink)

    async def retry(
        self,
        job_id: str,
        user_id: str,
        sink: ReplySink,
        destination: JSON = None,
        *,
        roles: frozenset[str] = frozenset(),
        parent_channel: str = "",
    ) -> Job:
        """Run a failed (or cancelled) request again, as a new job, for whoever asks.

        Adapters offer it where `ImagineError.retryable` says trying again can help (rate
        limits, provider outages, timeouts, unreadable answers).
        """
        failed = await self.store.get_job(job_id)
        if failed is None or failed.status not in (JobStatus.FAILED, JobStatus.CANCELLED):
            raise UnknownTurn(detail=f"job {job_id} is not a failed job")
        if failed.parent_turn_id is not None:
            await self.threads.turn(failed.parent_turn_id)  # the image it edited must still exist
        await self.threads.check_images(failed.parent_turn_id, failed.reference_shas)
        model, size = self.continued_model(failed.model, failed.size)
        who = await self.threads.requester(failed.thread_id, user_id, roles, parent_channel)
        await self.precheck(who, model, size)
        job = self._new_job(
            thread_id=failed.thread_id,
            user_id=user_id,
            kind=failed.kind,
            prompt=failed.prompt,
            reference_shas=failed.reference_shas,
            aspect_ratio=failed.aspect_ratio,
            parent_turn_id=failed.parent_turn_id,
            follow_latest=failed.follow_latest,
            destination=destination,
            model=model,
            size=size,
        )
        await self._submit(job, sink, who)
        return job

    async def delete(self, turn_id: str, user_id: str, *, moderator: bool = False) -> Turn:
        """Hide a turn (requester or moderator only); the adapter removes its messages."""
        turn = await self.threads.turn(turn_id)
        if turn.user_id != user_id and not moderator:
            raise NotAllowed()
        await self.store.mark_turn_deleted(turn.id)
        # its images go too, unless another turn or a job still needs them (shared)
        await self.store.purge_images(
            before=self.retention_cutoff(), history_turns=self.history_turns, turn_ids=[turn.id]
        )
        return turn

    async def cancel(self, job_id: str, user_id: str, *, moderator: bool = False) -> bool:
        """Cancel a waiting or running job, whichever process holds it; False when it had
        already left the provider."""
        job = await self.store.get_job(job_id)
        if job is None:
            raise UnknownTurn()
        if job.user_id != user_id and not moderator:
            raise NotAllowed()
        live = self.board.live.get(job_id)
        at_provider = live is not None and not live.job.status.finished
        if at_provider and self.worker.stop(job_id, StopReason.USER):
            return True  # its task records the cancellation and tells the user
        if await self.store.cancel_queued_job(job_id, self.worker.id, self.worker.lease):
            self.worker.forget(job_id)
            sink = await self._sink_for(job)
            self.board.forget(job_id)
            cancelled = replace(job, status=JobStatus.CANCELLED)
            if sink is not None:
                await safe_fail(sink, cancelled, Cancelled())
                await self.store.settle_job(job_id, self.worker.id)
            return True
        # at the provider in another process: its worker cancels it within a poll
        return await self.store.request_cancel(job_id)

    # --- lookups adapters need --------------------------------------------------------------

    async def precheck(
        self, who: Requester, model: str | None = None, size: str | None = None
    ) -> None:
        """Everything that would refuse `who` now — shutting down, a full queue, team
        control — so an adapter can refuse inside its acknowledgement and call no provider.
        Recording the job checks again, exactly (`Store.add_job`)."""
        self.check_admission(who.user)
        try:
            await self.team.check(who, model or self.model, size)
        except PolicyRefused as refused:
            metrics.refused(refused.refusal.rule.value)
            raise

    def choose_model(self, model: str | None, size: str | None) -> tuple[str, str | None]:
        """The model and size a new thread runs on (`bot.catalog.choose`)."""
        return choose(self.models, self.provider.name, model or self.model, size)

    def continued_model(self, model: str, size: str | None) -> tuple[str, str | None]:
        """A thread continues on its own model and size; one whose model this bot no longer
        offers continues on the default model (the conversation is provider-neutral)."""
        if model not in self.models:
            return self.choose_model(None, None)
        return self.choose_model(model, size)

    def check_admission(self, user_id: str) -> None:
        """Raise `UserQueueFull`/`ShuttingDown` now, so an adapter can refuse inside its ack.

        This process's own count, with no database round trip; recording the job checks
        again, exactly, over every process (`Store.add_job`).
        """
        if not self.worker.accepting:
            raise ShuttingDown()
        mine = self.board.count_for(user_id)
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
        reference_shas: tuple[str, ...],
        aspect_ratio: str,
        parent_turn_id: str | None,
        follow_latest: bool,
        destination: JSON,
        model: str,
        size: str | None,
    ) -> Job:
        return Job(
            id=new_id(),
            thread_id=thread_id,
            user_id=user_id,
            kind=kind,
            prompt=prompt,
            reference_shas=reference_shas,
            aspect_ratio=aspect_ratio,
            parent_turn_id=parent_turn_id,
            follow_latest=follow_latest,
            destination=destination,
            provider=self.provider.name,
            model=model,
            size=size,
            created_at=now(),
            cost_usd=self.team.price(model, size),
        )

    async def _submit(
        self, job: Job, sink: ReplySink, who: Requester, references: Sequence[Image] = ()
    ) -> None:
        """Record the job (durable before visible), admitted exactly by team control in
        the same transaction, and let the queue take it."""
        live = self.board.watch(job, sink)  # first: a worker may claim it at once
        try:
            await self.store.add_job(
                job,
                references,
                max_queued=self.limits.per_user_queued,
                admission=self.team.admission(who, job.model, job.size),
            )
        except PolicyRefused as refused:
            self.board.forget(job.id)
            metrics.refused(refused.refusal.rule.value)
            raise
        except BaseException:
            self.board.forget(job.id)
            raise
        await self.worker.start()  # idempotent: a core used without `start` still runs jobs
        if not await self.worker.submit(job.id):  # claimed at once: it shows as generating
            await self.board.show_place(live)

    async def _run_claimed(self, job: Job) -> None:
        await self.runner.run(job)

    async def _sink_for(self, job: Job) -> ReplySink | None:
        """The sink of a job accepted here, or one rebuilt from its stored destination."""
        live = self.board.live.get(job.id)
        if live is not None:
            return live.sink
        thread = await self.store.get_thread(job.thread_id)
        factory = self._sink_factories.get(thread.key.platform) if thread else None
        return factory(job) if factory is not None else None
