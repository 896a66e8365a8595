"""The `ReplySink` of one Slack job: bound to a channel and thread, like bolt's `say`.

Progress edits the job's status message (`chat.update`, at most about once a second; the
core's ticker already paces itself), the image is uploaded into the thread with
`files_upload_v2`, and the status message then shows the outcome (what made it: model,
size, provider) and its buttons.
A lock keeps the updates in order, so a slow progress edit never lands after the outcome.
"""

from __future__ import annotations

import asyncio
import logging
import time

from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient

from adapters.slack import blocks
from adapters.slack.convert import FILE_LINK_PREFIX, PLATFORM, Destination
from bot.catalog import made_with
from bot.core import Delivery, ImagineBot, Phase, Progress
from bot.errors import Cancelled, ImagineError
from bot.models import Job

log = logging.getLogger(__name__)

_EXTENSIONS = {"image/png": "png", "image/jpeg": "jpg", "image/webp": "webp"}
_ORDER = {Phase.QUEUED: 0, Phase.GENERATING: 1, Phase.UPLOADING: 2}
"""Progress never goes backwards: a late "queued" update must not follow "generating".
"""


class SlackSink:
    def __init__(
        self,
        client: AsyncWebClient,
        core: ImagineBot,
        destination: Destination,
        *,
        head: str | None = None,
        min_interval: float = 1.0,
    ) -> None:
        self.client = client
        self.core = core
        self.destination = destination
        self.status_ts = destination.status_ts
        self.min_interval = min_interval
        self._head = head
        self._lock = asyncio.Lock()
        self._final = False
        self._last_line: str | None = None
        self._last_phase: Phase | None = None
        self._last_at = 0.0

    # --- ReplySink --------------------------------------------------------------------------------

    async def progress(self, update: Progress) -> None:
        if self._final:
            return
        line = blocks.progress_line(update)
        clock = time.monotonic()
        if line == self._last_line:
            return
        if self._last_phase is not None and _ORDER[update.phase] < _ORDER[self._last_phase]:
            return
        if update.phase == self._last_phase and clock - self._last_at < self.min_interval:
            return
        self._last_line, self._last_phase, self._last_at = line, update.phase, clock
        running = update.phase in (Phase.QUEUED, Phase.GENERATING)
        text, content = blocks.status_message(
            self._head_of(update.job), line, cancel_job=update.job.id if running else None
        )
        async with self._lock:
            if not self._final:
                await self._show(text, content)

    async def deliver(self, delivery: Delivery) -> str | None:
        self._final = True
        turn, image = delivery.turn, delivery.image
        async with self._lock:
            response = await self.client.files_upload_v2(
                channel=self.destination.channel,
                thread_ts=self.destination.thread_ts,
                file=image.data,
                filename=f"imagine-{turn.id}.{_EXTENSIONS.get(image.mime, 'png')}",
                title=blocks.trim(turn.prompt, 250),
                alt_txt=blocks.trim(turn.prompt, 1000),
            )
            file_id = (response.get("file") or {}).get("id")
            if file_id:
                await self.core.link_message(PLATFORM, FILE_LINK_PREFIX + str(file_id), turn.id)
            text, content = blocks.done_message(
                self._head_of(delivery.job),
                turn.id,
                duration=turn.duration_s,
                ratio=turn.aspect_ratio,
                made=made_with(turn.model, turn.size, turn.provider),
                notes=delivery.notes,
            )
            try:
                await self._show(text, content)
            except SlackApiError as exc:  # the image is in the thread: that is what counts
                log.warning("could not show the outcome of job %s: %s", delivery.job.id, exc)
        return self.status_ts

    async def fail(self, job: Job | None, error: ImagineError) -> None:
        self._final = True
        head = self._head_of(job) if job is not None else self._head
        retry = job.id if job is not None and error.retryable else None
        async with self._lock:
            shown = False
            if head is not None:
                try:
                    await self._show(
                        *blocks.failed_message(head, error.user_message, retry_job=retry)
                    )
                    shown = True
                except SlackApiError as exc:
                    log.warning("could not update the status message: %s", exc)
            in_thread = shown and not self.destination.status_is_root
            if not in_thread and not isinstance(error, Cancelled):
                # the Retry button goes on the status message, or here if that wasn't shown
                text, content = blocks.error_message(
                    error.user_message, retry_job=None if shown else retry
                )
                await self.post_in_thread(text, content)

    # --- helpers ----------------------------------------------------------------------------------

    async def post_in_thread(
        self, text: str, content: list[blocks.Block] | None = None
    ) -> str | None:
        response = await self.client.chat_postMessage(
            channel=self.destination.channel,
            thread_ts=self.destination.thread_ts,
            text=text,
            blocks=content or None,
        )
        return str(response.get("ts") or "") or None

    def _head_of(self, job: Job) -> str:
        self._head = blocks.header(job.user_id, job.kind.value, job.prompt)
        return self._head

    async def _show(self, text: str, content: list[blocks.Block]) -> None:
        """Edit the status message, or post one in the thread if there is none yet."""
        if self.status_ts:
            await self.client.chat_update(
                channel=self.destination.channel, ts=self.status_ts, text=text, blocks=content
            )
            return
        response = await self.client.chat_postMessage(
            channel=self.destination.channel,
            thread_ts=self.destination.thread_ts,
            text=text,
            blocks=content,
        )
        self.status_ts = str(response.get("ts") or "") or None


class NowhereSink:
    """For a resumed job whose destination can't be read: the outcome goes to the log only."""

    async def progress(self, update: Progress) -> None:
        return None

    async def deliver(self, delivery: Delivery) -> str | None:
        log.warning("job %s finished but has no Slack destination", delivery.job.id)
        return None

    async def fail(self, job: Job | None, error: ImagineError) -> None:
        log.warning("job %s failed with no Slack destination: %s", job.id if job else "?", error)
