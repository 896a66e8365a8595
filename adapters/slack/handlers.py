"""Bolt listeners: acknowledge first, then turn Slack requests into core calls.

- `/imagine`: input errors are answered in the ack itself (ephemeral, instant); otherwise
  the root message is posted *before* `core.imagine`, because its `ts` names the thread.
- `message` / `app_mention`: a message in a thread the bot owns edits its latest image; a
  mention elsewhere (or a top-level DM) starts a thread. Each message acts once: Slack's
  retries share an `event_id`, a mention's `app_mention` + `message` twins share channel+ts,
  and both are claimed in the store, so this holds across restarts and replicas.
- `/imagine` and a mention that starts a thread take `--ar`, `--model` and `--size`; the
  model and size are checked (`core.choose_model`) before anything is posted. A thread keeps
  them: an edit that asks for another model is refused with a sentence saying so.
- Buttons carry the action and a turn (or job) id; everything else comes from the store.
  📐 is a `static_select` whose option values are `<turn id>|<ratio>` (`core.reframe`).
- The "Edit image" message shortcut opens a modal on any message with a picture; its
  submission starts a new image thread (a root message in that channel, like `/imagine`)
  with the picture(s) as references, downloaded with the same checks as an attached file.
- Team control: every way of asking for an image is prechecked (`core.precheck`) before
  anything is posted, and a refusal is private: inside the ack for `/imagine`, an ephemeral
  message for mentions, thread messages, buttons and the Edit modal. If the exact check
  inside the core's transaction still refuses (a race), the status message is withdrawn
  and the sentence is told privately too. `/imagine-usage` and `/imagine-admin` live in
  `adapters.slack.team`.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Awaitable, Callable
from dataclasses import replace
from typing import Any

from slack_bolt.async_app import AsyncAck, AsyncApp, AsyncBoltContext, AsyncRespond
from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient
from slack_sdk.webhook.async_client import AsyncWebhookClient

from adapters.slack import blocks
from adapters.slack.convert import (
    ACTION_CANCEL,
    ACTION_DELETE,
    ACTION_EDIT,
    ACTION_PREFIX,
    ACTION_REFRAME,
    ACTION_REROLL,
    ACTION_RETRY,
    EDIT_BLOCK,
    EDIT_MODAL,
    FILE_LINK_PREFIX,
    IMAGE_MODAL,
    PLATFORM,
    SHORTCUT_EDIT_IMAGE,
    Asked,
    Destination,
    EditTarget,
    ImageSource,
    Inbound,
    Intent,
    ModelFixedInThread,
    image_files,
    mention_intent,
    message_intent,
    modal_instruction,
    parse_plain_request,
    parse_reframe_value,
    parse_request,
    resolve_model,
    team_of,
)
from adapters.slack.files import SlackFiles
from adapters.slack.sink import NowhereSink, SlackSink
from bot import metrics
from bot.core import EditRequest, ImagineBot, ImagineRequest, ReplySink, reframe_instruction
from bot.errors import ImagineError, InternalError, UnknownTurn
from bot.inputs import check_attachments
from bot.models import JSON, Job, JobStatus, Thread, ThreadKey, Turn
from bot.policy import PolicyRefused, Requester

log = logging.getLogger(__name__)

NO_IMAGE = "That message has no image to edit."
NOT_IN_CHANNEL = (
    "I can't post in this conversation. Invite me first (`/invite @imagine-bot`), "
    "or use `/imagine` in a channel I'm in."
)
STARTING = ":hourglass_flowing_sand: Starting…"

Tell = Callable[[str], Awaitable[None]]
"""Says one line privately to whoever asked (an ephemeral message or response)."""


def workspace(context: AsyncBoltContext, body: dict[str, Any]) -> str:
    """The installation's workspace (from auth.test), the same for every request, so a thread
    started by a guest from another org in a shared channel is still found by its key."""
    result = context.authorize_result
    return (result.team_id if result is not None else None) or team_of(body, context.team_id)


def requester(key: ThreadKey, user: str) -> Requester:
    """Who asks for an image, and where (the thread's workspace and channel, as the core
    counts it). Slack has no roles; whether the user is a Slack admin does not matter for
    admission, so generating never waits on `users.info`."""
    return Requester(PLATFORM, key.workspace, key.channel, user)


class SlackHandlers:
    def __init__(
        self,
        core: ImagineBot,
        client: AsyncWebClient,
        files: SlackFiles,
        *,
        command: str = "/imagine",
        progress_interval: float = 1.0,
    ) -> None:
        self.core = core
        self.client = client
        self.files = files
        self.command = command
        self.progress_interval = progress_interval

    def register(self, app: AsyncApp) -> None:
        app.command(self.command)(self.on_imagine)
        app.event("app_mention")(self.on_mention)
        app.event("message")(self.on_message)
        app.action(re.compile("^" + re.escape(ACTION_PREFIX)))(self.on_action)
        app.view(EDIT_MODAL)(self.on_edit_submit)
        app.shortcut(SHORTCUT_EDIT_IMAGE)(self.on_edit_image)
        app.view(IMAGE_MODAL)(self.on_image_submit)

    def sink_for_job(self, job: Job) -> ReplySink:
        """`core.register_platform` factory: a resumed job answers where it was asked."""
        destination = Destination.from_json(job.destination)
        if destination is None:
            return NowhereSink()
        head = blocks.header(job.user_id, job.kind.value, job.prompt)
        return self._sink(destination, head)

    # --- /imagine ---------------------------------------------------------------------------------

    async def on_imagine(
        self,
        ack: AsyncAck,
        command: dict[str, Any],
        respond: AsyncRespond,
        context: AsyncBoltContext,
    ) -> None:
        received = time.monotonic()
        user = str(command.get("user_id") or "")
        channel = str(command.get("channel_id") or "")
        team = workspace(context, command)
        try:
            asked = parse_request(command.get("text"))
            model, size = self._choose(asked)
        except ImagineError as error:
            text = f"{blocks.error_text(error.user_message)}\n{blocks.usage(self.core.models)}"
            await ack(text=text, response_type="ephemeral")
            metrics.acked(PLATFORM, time.monotonic() - received)
            return
        prompt = asked.prompt
        refusal = await self._precheck(Requester(PLATFORM, team, channel, user), model, size)
        if refusal is not None:  # say so inside the ack, call nobody
            await ack(text=blocks.error_text(refusal.user_message), response_type="ephemeral")
            metrics.acked(PLATFORM, time.monotonic() - received)
            return
        await ack()
        metrics.acked(PLATFORM, time.monotonic() - received)
        head = blocks.header(user, "imagine", prompt)
        try:
            text, content = blocks.status_message(head, STARTING)
            posted = await self.client.chat_postMessage(channel=channel, text=text, blocks=content)
        except SlackApiError as exc:
            code = str(exc.response.get("error") or "")
            log.warning("posting the /imagine root in %s failed: %s", channel, code)
            missing = code in ("not_in_channel", "channel_not_found", "is_archived")
            message = NOT_IN_CHANNEL if missing else InternalError().user_message
            await self._respond(respond, blocks.error_text(message))
            return
        root = str(posted["ts"])
        destination = Destination(channel, root, root, root, user, team)
        sink = self._sink(destination, head)
        request = ImagineRequest(
            key=ThreadKey(PLATFORM, team, channel, root),
            user_id=user,
            prompt=prompt,
            aspect_ratio=asked.ratio,
            destination=destination.to_json(),
            model=model,
            size=size,
        )
        await self._submit(
            sink,
            lambda: self.core.imagine(request, sink),
            tell=lambda text: self._respond(respond, text),
        )

    # --- messages and mentions --------------------------------------------------------------------

    async def on_message(
        self, event: dict[str, Any], body: dict[str, Any], context: AsyncBoltContext
    ) -> None:
        inbound = message_intent(event, workspace(context, body), context.bot_user_id)
        if inbound is not None:
            await self._inbound(inbound, body, context.bot_user_id)

    async def on_mention(
        self, event: dict[str, Any], body: dict[str, Any], context: AsyncBoltContext
    ) -> None:
        inbound = mention_intent(event, workspace(context, body), context.bot_user_id)
        if inbound is not None:
            await self._inbound(inbound, body, context.bot_user_id)

    async def _inbound(self, inbound: Inbound, body: dict[str, Any], bot: str | None) -> None:
        try:
            await self._act(inbound, body, bot)
        except SlackApiError as exc:
            log.warning("answering %s failed: %s", inbound.dedupe_id, exc.response.get("error"))
        except Exception:
            log.exception("handling %s failed", inbound.dedupe_id)
            await self._reply(inbound.channel, inbound.thread_ts, InternalError())

    async def _act(self, inbound: Inbound, body: dict[str, Any], bot: str | None) -> None:
        thread: Thread | None = None
        if inbound.intent is not Intent.NEW:
            thread = await self.core.thread_by_key(inbound.key)
            if thread is None and inbound.intent is Intent.REPLY:
                return  # somebody else's thread: not ours to answer
        if not await self._claim(body.get("event_id"), inbound.dedupe_id):
            log.info("ignoring a duplicate delivery of %s", inbound.dedupe_id)
            return
        kind = "edit" if thread is not None else "imagine"
        # a refusal goes to the asker alone: in the thread, or where a top-level mention was
        private_ts = None if inbound.intent is Intent.NEW else inbound.thread_ts

        async def tell(text: str) -> None:
            await self._whisper(inbound.channel, inbound.user, text, private_ts)

        try:
            await self.core.precheck(requester(thread.key if thread else inbound.key, inbound.user))
        except ImagineError as error:
            log.info("refused a Slack message by %s: %s", inbound.user, error)
            await tell(blocks.error_text(error.user_message))
            return
        try:
            asked = parse_request(inbound.text, bot)
            model: str | None = None
            size: str | None = None
            if thread is None:
                model, size = self._choose(asked)
            elif asked.chose_model:  # an edit continues on its thread's model and size
                raise ModelFixedInThread()
            references = await self.files.images(inbound.files)
        except ImagineError as error:
            log.info("refused a Slack message: %s", error)
            await self._reply(inbound.channel, inbound.thread_ts, error)
            return
        prompt, ratio = asked.prompt, asked.ratio
        head = blocks.header(inbound.user, kind, prompt)
        base = Destination(
            inbound.channel, inbound.thread_ts, inbound.thread_ts, None, inbound.user, inbound.team
        )
        sink = await self._status_sink(base, head)
        destination = sink.destination.to_json()
        if thread is not None:
            edit = EditRequest(
                user_id=inbound.user,
                instruction=prompt,
                thread_key=inbound.key,
                references=references,
                aspect_ratio=ratio,
                destination=destination,
            )
            await self._submit(sink, lambda: self.core.edit(edit, sink), tell=tell)
        else:
            new = ImagineRequest(
                key=inbound.key,
                user_id=inbound.user,
                prompt=prompt,
                aspect_ratio=ratio,
                references=references,
                destination=destination,
                model=model,
                size=size,
            )
            await self._submit(sink, lambda: self.core.imagine(new, sink), tell=tell)

    async def _claim(self, event_id: str | None, message_id: str) -> bool:
        if event_id and not await self.core.claim_event(PLATFORM, str(event_id)):
            return False
        return await self.core.claim_event(PLATFORM, message_id)

    # --- buttons ----------------------------------------------------------------------------------

    async def on_action(self, ack: AsyncAck, body: dict[str, Any], action: dict[str, Any]) -> None:
        received = time.monotonic()
        await ack()
        metrics.acked(PLATFORM, time.monotonic() - received)
        user = str((body.get("user") or {}).get("id") or "")
        container = body.get("container") or {}
        channel = str((body.get("channel") or {}).get("id") or container.get("channel_id") or "")
        action_id = str(action.get("action_id") or "")
        value = str(action.get("value") or "")
        try:
            if action_id == ACTION_CANCEL:
                await self.core.cancel(value, user)
            elif action_id == ACTION_REROLL:
                await self._reroll(value, user)
            elif action_id == ACTION_EDIT:
                await self._open_edit(value, user, str(body.get("trigger_id") or ""))
            elif action_id == ACTION_DELETE:
                await self._delete(value, user)
            elif action_id == ACTION_RETRY:
                await self._retry(value, user)
            elif action_id == ACTION_REFRAME:
                chosen = parse_reframe_value((action.get("selected_option") or {}).get("value"))
                if chosen is None:
                    raise UnknownTurn(detail=f"unreadable 📐 option in {action!r}")
                await self._reframe(*chosen, user)
        except ImagineError as error:
            log.info("refused %s by %s: %s", action_id, user, error)
            await self._ephemeral(channel, user, error, container.get("thread_ts"))
        except SlackApiError as exc:
            log.warning("%s failed: %s", action_id, exc.response.get("error"))

    async def _reroll(self, turn_id: str, user: str) -> None:
        turn, thread = await self._turn_and_thread(turn_id)
        await self.core.precheck(requester(thread.key, user))
        await self._start_in_thread(
            thread,
            user,
            blocks.header(user, "reroll", turn.prompt),
            lambda sink, destination: self.core.reroll(turn_id, user, sink, destination),
        )

    async def _reframe(self, turn_id: str, ratio: str, user: str) -> None:
        """📐: the turn's picture recomposed at `ratio`, an edit of it in its thread."""
        _, thread = await self._turn_and_thread(turn_id)
        await self.core.precheck(requester(thread.key, user))
        await self._start_in_thread(
            thread,
            user,
            blocks.header(user, "edit", reframe_instruction(ratio)),
            lambda sink, destination: self.core.reframe(turn_id, ratio, user, sink, destination),
        )

    async def _retry(self, job_id: str, user: str) -> None:
        """The failed job again, for whoever clicks, in its thread like a Reroll. What the
        core would refuse (unknown job, image deleted since, full queue) is refused here,
        privately, before anything is posted."""
        failed = await self.core.get_job(job_id)
        if failed is None or failed.status not in (JobStatus.FAILED, JobStatus.CANCELLED):
            raise UnknownTurn(detail=f"retry of job {job_id}")
        if failed.parent_turn_id is not None and (
            await self.core.get_turn(failed.parent_turn_id) is None
        ):
            raise UnknownTurn(detail=f"retry of job {job_id}: its image was deleted")
        thread = await self.core.get_thread(failed.thread_id)
        if thread is None or thread.key.platform != PLATFORM:
            raise UnknownTurn(detail=f"thread of job {job_id}")
        await self.core.precheck(requester(thread.key, user))
        await self._start_in_thread(
            thread,
            user,
            blocks.header(user, failed.kind.value, failed.prompt),
            lambda sink, destination: self.core.retry(job_id, user, sink, destination),
        )

    async def _start_in_thread(
        self,
        thread: Thread,
        user: str,
        head: str,
        start: Callable[[SlackSink, JSON], Awaitable[Job]],
    ) -> None:
        """A button's new job: its status message in the image's thread, then the core."""
        key = thread.key
        base = Destination(key.channel, key.thread, key.thread, None, user, key.workspace)
        sink = await self._status_sink(base, head)
        destination = sink.destination.to_json()

        async def tell(text: str) -> None:
            await self._whisper(key.channel, user, text, key.thread)

        await self._submit(sink, lambda: start(sink, destination), tell=tell)

    async def _open_edit(self, turn_id: str, user: str, trigger_id: str) -> None:
        """The Edit modal, unless the user would be refused anyway (then say so at once)."""
        turn, thread = await self._turn_and_thread(turn_id)
        await self.core.precheck(requester(thread.key, user))
        target = EditTarget(turn_id, thread.key.channel, thread.key.thread)
        await self.client.views_open(
            trigger_id=trigger_id, view=blocks.edit_modal(target, turn.prompt)
        )

    async def _delete(self, turn_id: str, user: str) -> None:
        turn = await self.core.delete(turn_id, user)
        thread = await self.core.get_thread(turn.thread_id)
        if thread is None:
            return
        text, content = blocks.deleted_message(user)
        for message_id in await self.core.messages_for_turn(PLATFORM, turn_id):
            try:
                if message_id.startswith(FILE_LINK_PREFIX):
                    await self.client.files_delete(file=message_id.removeprefix(FILE_LINK_PREFIX))
                else:
                    await self.client.chat_update(
                        channel=thread.key.channel, ts=message_id, text=text, blocks=content
                    )
            except SlackApiError as exc:
                log.warning("removing %s of turn %s failed: %s", message_id, turn_id, exc)

    async def on_edit_submit(
        self,
        ack: AsyncAck,
        body: dict[str, Any],
        view: dict[str, Any],
        context: AsyncBoltContext,
    ) -> None:
        user = str((body.get("user") or {}).get("id") or "")
        target = EditTarget.load(view.get("private_metadata"))
        try:
            if target is None:
                raise UnknownTurn(detail="edit modal without readable private_metadata")
            asked = parse_plain_request(modal_instruction(view))
            if asked.chose_model:
                raise ModelFixedInThread()
            instruction, ratio = asked.prompt, asked.ratio
        except ImagineError as error:
            await ack(
                response_action="errors",
                errors={EDIT_BLOCK: blocks.trim(error.user_message, 150)},
            )
            return
        team = workspace(context, body)
        key = ThreadKey(PLATFORM, team, target.channel, target.thread_ts)

        async def tell(text: str) -> None:
            await self._whisper(target.channel, user, text, target.thread_ts)

        refusal = await self._precheck(requester(key, user))
        if refusal is not None:  # not the text's fault: close the form, say why privately
            await ack()
            await tell(blocks.error_text(refusal.user_message))
            return
        await ack()
        base = Destination(target.channel, target.thread_ts, target.thread_ts, None, user, team)
        try:
            sink = await self._status_sink(base, blocks.header(user, "edit", instruction))
        except SlackApiError as exc:
            log.warning(
                "could not start an edit in %s: %s", base.channel, exc.response.get("error")
            )
            return
        request = EditRequest(
            user_id=user,
            instruction=instruction,
            turn_id=target.turn_id,
            aspect_ratio=ratio,
            destination=sink.destination.to_json(),
        )
        await self._submit(sink, lambda: self.core.edit(request, sink), tell=tell)

    # --- the "Edit image" message shortcut -------------------------------------------------------

    async def on_edit_image(
        self, ack: AsyncAck, shortcut: dict[str, Any], context: AsyncBoltContext
    ) -> None:
        """On anyone's message with a picture: ask what to make of it (a modal), unless the
        message has none or the user would be refused anyway (then say so privately)."""
        received = time.monotonic()
        await ack()
        metrics.acked(PLATFORM, time.monotonic() - received)
        user = str((shortcut.get("user") or {}).get("id") or "")
        channel = str((shortcut.get("channel") or {}).get("id") or "")
        message = shortcut.get("message") or {}
        response_url = str(shortcut.get("response_url") or "") or None
        thread_ts = str(message.get("thread_ts") or "") or None

        async def tell(text: str) -> None:
            await self._tell(response_url, channel, user, text, thread_ts)

        refs = image_files(message)
        if not refs:
            await tell(blocks.error_text(NO_IMAGE))
            return
        try:
            check_attachments([(f.name, f.mimetype, f.size) for f in refs])
        except ImagineError as error:
            await tell(blocks.error_text(error.user_message))
            return
        refusal = await self._precheck(
            Requester(PLATFORM, workspace(context, shortcut), channel, user)
        )
        if refusal is not None:  # before the user types a prompt that could not run
            await tell(blocks.error_text(refusal.user_message))
            return
        source = ImageSource(channel, str(message.get("ts") or ""), refs, response_url)
        try:
            await self.client.views_open(
                trigger_id=str(shortcut.get("trigger_id") or ""), view=blocks.image_modal(source)
            )
        except SlackApiError as exc:
            log.warning("opening the Edit image modal failed: %s", exc.response.get("error"))

    async def on_image_submit(
        self,
        ack: AsyncAck,
        body: dict[str, Any],
        view: dict[str, Any],
        context: AsyncBoltContext,
    ) -> None:
        """A new image thread, like `/imagine`, with the message's picture(s) as references:
        a root message in the message's channel, the image in its thread."""
        user = str((body.get("user") or {}).get("id") or "")
        source = ImageSource.load(view.get("private_metadata"))
        try:
            if source is None:
                raise InternalError(detail="image modal without readable private_metadata")
            asked = parse_plain_request(modal_instruction(view))
            model, size = self._choose(asked)
        except ImagineError as error:
            await ack(
                response_action="errors",
                errors={EDIT_BLOCK: blocks.trim(error.user_message, 150)},
            )
            return
        team = workspace(context, body)
        channel = source.channel

        async def tell(text: str) -> None:
            await self._tell(source.response_url, channel, user, text, None)

        refusal = await self._precheck(Requester(PLATFORM, team, channel, user), model, size)
        await ack()
        if refusal is not None:  # not the text's fault: the form closes, the reason is private
            await tell(blocks.error_text(refusal.user_message))
            return
        try:  # the same checked download as an attached file: not an image, too large…
            references = await self.files.images(source.files)
        except ImagineError as error:
            log.info("refused the pictures of %s: %s", source.message_ts, error)
            await tell(blocks.error_text(error.user_message))
            return
        head = blocks.header(user, "imagine", asked.prompt)
        try:
            text, content = blocks.status_message(head, STARTING)
            posted = await self.client.chat_postMessage(channel=channel, text=text, blocks=content)
        except SlackApiError as exc:
            code = str(exc.response.get("error") or "")
            log.warning("posting the Edit image root in %s failed: %s", channel, code)
            missing = code in ("not_in_channel", "channel_not_found", "is_archived")
            await tell(
                blocks.error_text(NOT_IN_CHANNEL if missing else InternalError().user_message)
            )
            return
        root = str(posted["ts"])
        destination = Destination(channel, root, root, root, user, team)
        sink = self._sink(destination, head)
        request = ImagineRequest(
            key=ThreadKey(PLATFORM, team, channel, root),
            user_id=user,
            prompt=asked.prompt,
            aspect_ratio=asked.ratio,
            references=references,
            destination=destination.to_json(),
            model=model,
            size=size,
        )
        await self._submit(sink, lambda: self.core.imagine(request, sink), tell=tell)

    # --- helpers ----------------------------------------------------------------------------------

    def _choose(self, asked: Asked) -> tuple[str, str | None]:
        """The model and size a new thread runs on, or the sentence refusing them."""
        return self.core.choose_model(resolve_model(asked.model, self.core.models), asked.size)

    async def _precheck(
        self, who: Requester, model: str | None = None, size: str | None = None
    ) -> ImagineError | None:
        """Why `who` would be refused now, if they would: before an ack, which must come
        whatever happens (a broken database is an apology, not a silent timeout)."""
        try:
            await self.core.precheck(who, model, size)
        except ImagineError as error:
            log.info("refused %s in %s: %s", who.user, who.channel, error)
            return error
        except Exception:
            log.exception("checking %s in %s failed", who.user, who.channel)
            return InternalError()
        return None

    def _sink(self, destination: Destination, head: str) -> SlackSink:
        return SlackSink(
            self.client, self.core, destination, head=head, min_interval=self.progress_interval
        )

    async def _status_sink(self, base: Destination, head: str) -> SlackSink:
        """Post the job's status message in the thread; the sink edits it from then on."""
        text, content = blocks.status_message(head, STARTING)
        posted = await self.client.chat_postMessage(
            channel=base.channel, thread_ts=base.thread_ts, text=text, blocks=content
        )
        return self._sink(replace(base, status_ts=str(posted["ts"])), head)

    async def _submit(
        self, sink: SlackSink, start: Callable[[], Awaitable[Job]], *, tell: Tell | None = None
    ) -> None:
        """Hand the job to the core; a refusal (queue full, unknown turn…) shows in its place.

        Team control's exact check can still refuse here (another request took the last
        image since the precheck): then the status message goes away and only the asker
        reads why, through `tell`."""
        try:
            await start()
        except PolicyRefused as refused:
            log.info("the core refused a Slack request: %s", refused)
            if tell is not None and await self._withdraw(sink):
                await tell(blocks.error_text(refused.user_message))
            else:
                await sink.fail(None, refused)
        except ImagineError as error:
            log.info("the core refused a Slack request: %s", error)
            await sink.fail(None, error)
        except Exception:
            log.exception("submitting a Slack request failed")
            await sink.fail(None, InternalError())

    async def _turn_and_thread(self, turn_id: str) -> tuple[Turn, Thread]:
        turn = await self.core.get_turn(turn_id)
        if turn is None:
            raise UnknownTurn(detail=f"turn {turn_id}")
        thread = await self.core.get_thread(turn.thread_id)
        if thread is None or thread.key.platform != PLATFORM:
            raise UnknownTurn(detail=f"thread of turn {turn_id}")
        return turn, thread

    async def _reply(self, channel: str, thread_ts: str, error: ImagineError) -> None:
        try:
            await self.client.chat_postMessage(
                channel=channel, thread_ts=thread_ts, text=blocks.error_text(error.user_message)
            )
        except SlackApiError as exc:
            log.warning("could not report an error in %s: %s", channel, exc.response.get("error"))

    async def _withdraw(self, sink: SlackSink) -> bool:
        """Delete a job's status message that will show nothing; False if it stays."""
        if sink.status_ts is None:
            return False
        try:
            await self.client.chat_delete(channel=sink.destination.channel, ts=sink.status_ts)
        except SlackApiError as exc:
            log.warning("could not withdraw %s: %s", sink.status_ts, exc.response.get("error"))
            return False
        return True

    async def _ephemeral(
        self, channel: str, user: str, error: ImagineError, thread_ts: str | None
    ) -> None:
        await self._whisper(channel, user, blocks.error_text(error.user_message), thread_ts)

    async def _whisper(self, channel: str, user: str, text: str, thread_ts: str | None) -> None:
        """An ephemeral message: only `user` sees it, in `channel` (and that thread)."""
        try:
            await self.client.chat_postEphemeral(
                channel=channel, user=user, text=text, thread_ts=thread_ts
            )
        except SlackApiError as exc:
            log.warning("could not tell %s: %s", user, exc.response.get("error"))

    async def _tell(
        self, response_url: str | None, channel: str, user: str, text: str, thread_ts: str | None
    ) -> None:
        """Privately, through a shortcut's `response_url` (it works where the bot is not a
        member), else as an ephemeral message."""
        if response_url:
            try:
                answer = await AsyncWebhookClient(response_url).send(
                    text=text, response_type="ephemeral"
                )
                if answer.status_code == 200:
                    return
                log.warning("a response_url answered %s", answer.status_code)
            except Exception as exc:
                log.warning("could not answer through a response_url: %r", exc)
        await self._whisper(channel, user, text, thread_ts)

    async def _respond(self, respond: AsyncRespond, text: str) -> None:
        try:
            await respond(text=text, response_type="ephemeral")
        except Exception as exc:
            log.warning("could not answer a command through its response_url: %r", exc)
