"""The core's `ReplySink` for Discord: where one job's progress, image or error goes.

A sink is rebuilt from the job's stored `Destination` alone (no live `Interaction`), so a
job resumed after a restart delivers the same way as a fresh one:

- while the interaction token lives (15 min), progress and result edit the interaction's
  response (`@original`) through the interaction webhook;
- after that — or when Discord refuses the token — the result is a channel message that
  mentions the requester;
- a reply job shows progress in a reply to the user's message and answers with a new
  reply carrying the image (the progress message is then removed);
- where the bot user cannot post (`Destination.bot_absent`: a user-installed command in a
  server without the bot, a group DM), the interaction webhook is the only way: a followup
  message when `@original` can't be edited, and nothing once the token is gone. Such a job
  that starts after that (it waited in the queue) makes an image no one can receive: the
  sink says so in the log when it starts generating, and `deliver` raises `AnswerExpired`
  naming the job and why (the core has no hook yet through which an adapter could stop
  the provider call before it is paid for).
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import logging
import time
from collections.abc import Callable
from typing import Any, Final, cast

import discord

from bot.core import Delivery, Phase, Progress, SinkFactory
from bot.errors import ImagineError
from bot.fit import fit_for_upload
from bot.models import Job
from bot.sinks import Undeliverable

from .buttons import cancel_view, retry_view, turn_view
from .convert import (
    DEFAULT_UPLOAD_LIMIT,
    TOKEN_LIFETIME,
    TOKEN_MARGIN,
    Destination,
    caption_embed,
    failure_text,
    image_filename,
    progress_text,
    ready_text,
)
from .runtime import Runtime

log = logging.getLogger(__name__)

ORIGINAL: Final = cast(int, "@original")
"""discord.py formats a webhook message id into the route; Discord's name for an
interaction's own response is `@original`."""

_TOKEN_GONE = frozenset({401, 403, 404})


class AnswerExpired(Undeliverable):
    """Nothing can reach the requester any more: the bot user cannot post in the channel
    and Discord no longer accepts the interaction's token (15 minutes, or refused)."""

    code = "answer_expired"

    def __init__(self, *, detail: str | None = None) -> None:
        super().__init__(
            "This request waited longer than Discord lets the bot answer it (15 minutes). "
            "Please run the command again.",
            detail=detail,
        )


def _given(**values: Any) -> dict[str, Any]:
    """The keyword arguments that have a value: `send` types them as not optional."""
    return {key: value for key, value in values.items() if value is not None}


def _no_pings() -> discord.AllowedMentions:
    return discord.AllowedMentions.none()


class DiscordSink:
    def __init__(
        self, runtime: Runtime, destination: Destination, *, clock: Callable[[], float] = time.time
    ) -> None:
        self.runtime = runtime
        self.destination = destination
        self._clock = clock
        self._lock = asyncio.Lock()
        self._done = False
        self._token_dead = False
        self._progress_message: int | None = None
        self._last_text: str | None = None
        self._warned = False

    # --- ReplySink --------------------------------------------------------------------------

    async def progress(self, update: Progress) -> None:
        await self.runtime.wait_ready()
        async with self._lock:
            if self._done:
                return
            text = progress_text(update)
            if text == self._last_text:
                return
            self._last_text = text
            if update.phase is Phase.GENERATING and not self._warned:
                reason = self._unreachable()
                if reason is not None:
                    self._warned = True
                    log.warning(
                        "job %s not generated: its image could not be delivered: %s",
                        update.job.id,
                        reason,
                    )
                    raise AnswerExpired(detail=reason)  # before the provider: nothing paid
            view = cancel_view(update.job.id) if update.phase is not Phase.UPLOADING else None
            if self._use_token():
                await self._edit_original(content=text, view=view)
            elif self.destination.token is None:
                await self._show_progress_reply(text, view)
            # an expired interaction cannot be edited; the result will mention the user

    async def deliver(self, delivery: Delivery) -> str | None:
        await self.runtime.wait_ready()
        limit = self.destination.upload_limit or DEFAULT_UPLOAD_LIMIT
        fitted = await fit_for_upload(delivery.image, limit, "Discord")
        notes = (*delivery.notes, fitted.note) if fitted.note else delivery.notes
        async with self._lock:
            self._done = True
            filename = image_filename(delivery.turn.id, fitted.image.mime)

            def file() -> discord.File:
                return discord.File(io.BytesIO(fitted.image.data), filename=filename)

            embed = caption_embed(delivery.turn, filename, notes)
            view = turn_view(delivery.turn.id, delivery.turn.aspect_ratio)
            if self._use_token():
                message = await self._edit_original(
                    content=None, embed=embed, attachments=[file()], view=view
                )
                if message is not None:
                    return str(message.id)
            if self.destination.bot_absent:
                what = f"job {delivery.job.id}'s image (turn {delivery.turn.id})"
                return str(
                    await self._followup(
                        what, embed=embed, file=file(), view=view, level=logging.ERROR
                    )
                )
            return str(await self._post_result(file(), embed, view))

    async def fail(self, job: Job | None, error: ImagineError) -> None:
        await self.runtime.wait_ready()
        async with self._lock:
            self._done = True
            # a Retry button where trying again can help; a fresh view for each message
            retry = job.id if job is not None and error.retryable else None

            def view() -> discord.ui.View | None:
                return retry_view(retry) if retry is not None else None

            if self._use_token():
                text = failure_text(error, job)
                if await self._edit_original(content=text, embed=None, view=view()) is not None:
                    return
            if self.destination.bot_absent:
                what = f"job {job.id if job else '?'}'s failure ({error.code})"
                text = failure_text(error, job, mention=self.destination.user_id)
                with contextlib.suppress(AnswerExpired):  # logged: no one is left to tell
                    await self._followup(what, content=text, **_given(view=view()))
                return
            if self.destination.token is not None:  # expired: a fresh message names the user
                text = failure_text(error, job, mention=self.destination.user_id)
                await self._send(text, view=view())
                return
            text = failure_text(error, job)
            if self._progress_message is not None:
                try:
                    await (
                        self._channel()
                        .get_partial_message(self._progress_message)
                        .edit(content=text, view=view())
                    )
                    return
                except discord.HTTPException:
                    log.warning("could not edit the progress message", exc_info=True)
            await self._send(text, reply=True, view=view())

    # --- internals --------------------------------------------------------------------------

    def _use_token(self) -> bool:
        return not self._token_dead and self.destination.token_usable(self._clock())

    def _channel(self) -> discord.PartialMessageable:
        return self.runtime.client.get_partial_messageable(self.destination.channel_id)

    def _reference(self) -> discord.MessageReference | None:
        if self.destination.reply_to is None:
            return None
        return discord.MessageReference(
            message_id=self.destination.reply_to,
            channel_id=self.destination.channel_id,
            fail_if_not_exists=False,
        )

    async def _edit_original(self, **fields: Any) -> discord.WebhookMessage | None:
        """Edit the interaction's response; None (and the token marked dead) if refused."""
        dest = self.destination
        assert dest.application_id is not None and dest.token is not None
        webhook = discord.Webhook.partial(
            dest.application_id, dest.token, client=self.runtime.client
        )
        try:
            return await webhook.edit_message(ORIGINAL, allowed_mentions=_no_pings(), **fields)
        except discord.HTTPException as exc:
            if exc.status in _TOKEN_GONE:
                log.info("interaction token refused (HTTP %s); using channel messages", exc.status)
                self._token_dead = True
            else:  # Discord had a bad moment: the caller falls back to a channel message
                log.warning("editing the interaction response failed (HTTP %s)", exc.status)
            return None

    def _unreachable(self) -> str | None:
        """Why no answer can reach the requester, or None while one can."""
        dest = self.destination
        if not dest.bot_absent or self._use_token():
            return None
        where = f"the bot user cannot post in channel {dest.channel_id}"
        if self._token_dead:
            return f"{where} and Discord refused the interaction token"
        if not dest.token or dest.application_id is None or dest.token_created_at is None:
            return f"{where} and there is no interaction token to answer through"
        age = self._clock() - dest.token_created_at
        return (
            f"{where} and its interaction token is {age / 60:.1f} min old (Discord accepts "
            f"one for {TOKEN_LIFETIME / 60:.0f} min, the bot uses it for "
            f"{(TOKEN_LIFETIME - TOKEN_MARGIN) / 60:.0f})"
        )

    async def _followup(self, what: str, *, level: int = logging.WARNING, **fields: Any) -> int:
        """A new message through the interaction webhook: where the bot user can't post,
        the only way left while the token lives (Discord refuses it after 15 minutes).
        When it cannot be sent, `AnswerExpired`, logged at `level` naming `what` and why."""
        dest = self.destination
        if self._token_dead or not dest.token_usable(self._clock()):
            raise self._lost(what, level)
        assert dest.application_id is not None and dest.token is not None
        webhook = discord.Webhook.partial(
            dest.application_id, dest.token, client=self.runtime.client
        )
        try:
            message = await webhook.send(
                wait=True,
                allowed_mentions=discord.AllowedMentions(
                    everyone=False, roles=False, users=[discord.Object(dest.user_id)]
                ),
                **fields,
            )
        except discord.HTTPException as exc:
            if exc.status not in _TOKEN_GONE:
                raise
            log.info("interaction token refused (HTTP %s) for a followup", exc.status)
            self._token_dead = True
            raise self._lost(what, level) from exc
        return message.id

    def _lost(self, what: str, level: int) -> AnswerExpired:
        """The error for an answer that cannot be sent, logged with who lost what and why."""
        reason = self._unreachable() or "the interaction token is gone"
        log.log(
            level,
            "%s could not be delivered to user %s: %s",
            what,
            self.destination.user_id,
            reason,
        )
        return AnswerExpired(detail=f"{what} could not be delivered: {reason}")

    async def _show_progress_reply(self, text: str, view: discord.ui.View | None) -> None:
        channel = self._channel()
        if self._progress_message is None:
            message = await channel.send(
                text,
                **_given(view=view, reference=self._reference()),
                allowed_mentions=_no_pings(),
                silent=True,
            )
            self._progress_message = message.id
        else:
            await channel.get_partial_message(self._progress_message).edit(content=text, view=view)

    async def _post_result(
        self, file: discord.File, embed: discord.Embed, view: discord.ui.View
    ) -> int:
        """The image as a channel message: a reply to the user's message, or a mention."""
        dest = self.destination
        reply = dest.token is None
        content = None if reply else ready_text(dest.user_id)
        message = await self._channel().send(
            content,
            embed=embed,
            file=file,
            view=view,
            **_given(reference=self._reference() if reply else None),
            allowed_mentions=discord.AllowedMentions(
                everyone=False, roles=False, users=[discord.Object(dest.user_id)], replied_user=True
            ),
        )
        if self._progress_message is not None:
            try:
                await self._channel().get_partial_message(self._progress_message).delete()
            except discord.HTTPException:
                log.info("could not remove the progress message", exc_info=True)
            self._progress_message = None
        return message.id

    async def _send(
        self, text: str, *, reply: bool = False, view: discord.ui.View | None = None
    ) -> None:
        await self._channel().send(
            text,
            **_given(reference=self._reference() if reply else None, view=view),
            allowed_mentions=discord.AllowedMentions(
                everyone=False,
                roles=False,
                users=[discord.Object(self.destination.user_id)],
                replied_user=reply,
            ),
        )


class _LostSink:
    """A job whose destination can't be read: log, since no one can be told."""

    def __init__(self, reason: str) -> None:
        self.reason = reason

    async def progress(self, update: Progress) -> None:
        return None

    async def deliver(self, delivery: Delivery) -> str | None:
        log.warning("job %s finished but has no destination: %s", delivery.job.id, self.reason)
        return None

    async def fail(self, job: Job | None, error: ImagineError) -> None:
        log.warning("job %s failed (%s), no destination: %s", job and job.id, error, self.reason)


def sink_factory(runtime: Runtime) -> SinkFactory:
    """For `core.register_platform`: jobs resumed after a restart deliver from their record."""

    def build(job: Job) -> DiscordSink | _LostSink:
        try:
            return DiscordSink(runtime, Destination.from_json(job.destination))
        except ValueError as exc:
            return _LostSink(str(exc))

    return build
