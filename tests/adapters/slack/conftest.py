"""A running Slack bot against the fake Slack: real Bolt, real store, real provider.

`launch(...)` starts one "process" (store on a SQLite file, core, `SlackAdapter`) in HTTP
mode or Socket Mode; launching twice on the same file is a restart. Payload builders make
what Slack sends, and `Bot.post_*` sign and POST them to `/slack/events` like Slack does.
"""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import aiohttp
import pytest
from slack_sdk.signature import SignatureVerifier

from adapters.slack import SlackAdapter
from bot.config import Settings
from bot.core import ImagineBot
from bot.models import Image, ThreadKey, Turn
from bot.providers.base import Provider
from bot.providers.demo import DemoProvider
from bot.providers.http import RetryPolicy
from bot.providers.nexconn import NexconnProvider
from bot.team import TeamSettings
from storage import open_store
from tests.fakes.nexconn_server import FakeNexconn
from tests.fakes.slack_server import FakeSlack, Message

SECRET = "test-signing-secret"
TEAM = FakeSlack.team_id
BOT = FakeSlack.bot_user_id
MODEL = "gemini-2.5-flash-image"
NEXCONN_KEY = "nx-test-key"


# --- payloads, as Slack sends them ----------------------------------------------------------------


def command_form(
    text: str,
    *,
    user: str = "U1",
    channel: str = "C1",
    rid: str = "r1",
    command: str = "/imagine",
) -> dict:
    return {
        "token": "legacy",
        "team_id": TEAM,
        "team_domain": "test",
        "channel_id": channel,
        "channel_name": "general",
        "user_id": user,
        "user_name": user.lower(),
        "command": command,
        "text": text,
        "api_app_id": "A1",
        "response_url": f"{{base}}/response/{rid}",
        "trigger_id": "t.123",
    }


def message_event(
    text: str,
    *,
    ts: str,
    thread_ts: str | None = None,
    user: str = "U1",
    channel: str = "C1",
    files: list[dict[str, Any]] | None = None,
    kind: str = "message",
    channel_type: str = "channel",
    **extra: Any,
) -> dict[str, Any]:
    event: dict[str, Any] = {
        "type": kind,
        "user": user,
        "text": text,
        "ts": ts,
        "channel": channel,
        "team": TEAM,
        "event_ts": ts,
        **extra,
    }
    if kind == "message":
        event["channel_type"] = channel_type
    if thread_ts:
        event["thread_ts"] = thread_ts
    if files:
        event["files"] = files
        event["subtype"] = "file_share"
    return event


def event_body(event: dict[str, Any], event_id: str) -> dict[str, Any]:
    return {
        "token": "legacy",
        "team_id": TEAM,
        "api_app_id": "A1",
        "event": event,
        "type": "event_callback",
        "event_id": event_id,
        "event_time": int(time.time()),
        "authorizations": [{"team_id": TEAM, "user_id": BOT, "is_bot": True}],
    }


def block_action(
    action_id: str, value: str, *, user: str, channel: str = "C1", message_ts: str = ""
) -> dict[str, Any]:
    return {
        "type": "block_actions",
        "team": {"id": TEAM, "domain": "test"},
        "user": {"id": user, "team_id": TEAM},
        "api_app_id": "A1",
        "trigger_id": "trig.1",
        "container": {"type": "message", "message_ts": message_ts, "channel_id": channel},
        "channel": {"id": channel, "name": "general"},
        "message": {"ts": message_ts, "text": "x"},
        "response_url": "{base}/response/act",
        "actions": [
            {
                "type": "button",
                "action_id": action_id,
                "block_id": "b",
                "value": value,
                "action_ts": "1.2",
            }
        ],
    }


def select_action(
    action_id: str, value: str, *, user: str, channel: str = "C1", message_ts: str = ""
) -> dict[str, Any]:
    """A `static_select` choice in a message, as Slack sends it."""
    payload = block_action(action_id, "", user=user, channel=channel, message_ts=message_ts)
    payload["actions"] = [
        {
            "type": "static_select",
            "action_id": action_id,
            "block_id": "b",
            "selected_option": {"text": {"type": "plain_text", "text": "x"}, "value": value},
            "action_ts": "1.3",
        }
    ]
    return payload


def message_shortcut(
    message: dict[str, Any],
    *,
    user: str = "U1",
    channel: str = "C1",
    callback_id: str = "imagine_edit_image",
) -> dict[str, Any]:
    """A message shortcut ("⋮ → Edit image" on `message`), as Slack sends it."""
    return {
        "type": "message_action",
        "callback_id": callback_id,
        "trigger_id": "trig.shortcut",
        "team": {"id": TEAM, "domain": "test"},
        "user": {"id": user, "team_id": TEAM, "name": user.lower()},
        "channel": {"id": channel, "name": "general"},
        "message_ts": message["ts"],
        "message": message,
        "response_url": "{base}/response/shortcut",
        "action_ts": "1.4",
    }


def view_submission(
    private_metadata: str, text: str, *, user: str, callback_id: str = "imagine:edit_modal"
) -> dict[str, Any]:
    return {
        "type": "view_submission",
        "team": {"id": TEAM, "domain": "test"},
        "user": {"id": user, "team_id": TEAM},
        "api_app_id": "A1",
        "trigger_id": "trig.2",
        "view": {
            "id": "V1",
            "type": "modal",
            "callback_id": callback_id,
            "private_metadata": private_metadata,
            "state": {
                "values": {"instruction": {"value": {"type": "plain_text_input", "value": text}}}
            },
        },
    }


def signed(body: str, *, secret: str = SECRET, timestamp: int | None = None) -> dict[str, str]:
    stamp = str(int(time.time()) if timestamp is None else timestamp)
    signature = SignatureVerifier(secret).generate_signature(timestamp=stamp, body=body)
    return {"X-Slack-Request-Timestamp": stamp, "X-Slack-Signature": signature or ""}


# --- one bot process ------------------------------------------------------------------------------


@dataclass
class Bot:
    slack: FakeSlack
    core: ImagineBot
    adapter: SlackAdapter
    provider: Provider
    store: Any
    http: aiohttp.ClientSession
    closed: bool = field(default=False)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.adapter.port}/slack/events"

    async def post(
        self,
        body: str,
        content_type: str,
        *,
        headers: dict[str, str] | None = None,
        secret: str = SECRET,
        timestamp: int | None = None,
    ) -> tuple[int, str]:
        all_headers = {
            "Content-Type": content_type,
            **signed(body, secret=secret, timestamp=timestamp),
        }
        all_headers.update(headers or {})
        async with self.http.post(self.url, data=body.encode(), headers=all_headers) as response:
            return response.status, await response.text()

    async def command(self, text: str, **kwargs: Any) -> tuple[int, str]:
        sign = {k: kwargs.pop(k) for k in ("secret", "timestamp") if k in kwargs}
        form = {
            k: v.replace("{base}", self.slack.base_url)
            for k, v in command_form(text, **kwargs).items()
        }
        return await self.post(urlencode(form), "application/x-www-form-urlencoded", **sign)

    async def event(
        self, event: dict[str, Any], event_id: str, *, retry: int | None = None
    ) -> tuple[int, str]:
        headers = {}
        if retry:
            headers = {"X-Slack-Retry-Num": str(retry), "X-Slack-Retry-Reason": "http_timeout"}
        body = json.dumps(event_body(event, event_id))
        return await self.post(body, "application/json", headers=headers)

    async def interactive(self, payload: dict[str, Any]) -> tuple[int, str]:
        text = json.dumps(payload).replace("{base}", self.slack.base_url)
        return await self.post(urlencode({"payload": text}), "application/x-www-form-urlencoded")

    # --- what the store says ----------------------------------------------------------------------

    async def turns(self, root_ts: str, channel: str = "C1") -> list[Turn]:
        """The thread's turns, oldest first (following the latest-turn chain)."""
        thread = await self.store.thread_by_key(ThreadKey("slack", TEAM, channel, root_ts))
        assert thread is not None, f"no thread for {root_ts}"
        latest = await self.store.latest_turn(thread.id)
        assert latest is not None
        return list(await self.store.turn_path(latest.id, 100))

    async def image(self, turn: Turn) -> Image:
        image = await self.store.get_image(turn.result_sha)
        assert image is not None
        return image

    async def close(self, grace: float = 2.0) -> None:
        """Stop like SIGTERM does: no new requests, running jobs get `grace` seconds."""
        if self.closed:
            return
        self.closed = True
        await self.adapter.close()
        await self.core.shutdown(grace)
        await self.store.close()
        await self.provider.aclose()
        await self.http.close()


Launch = Callable[..., Awaitable[Bot]]


# --- waiting on what the fake Slack saw -----------------------------------------------------------


async def root_of(slack: FakeSlack, prompt: str, channel: str = "C1") -> Message:
    """The root message the bot posted for `prompt`."""
    return await slack.wait_for(
        lambda: next((m for m in slack.roots(channel) if prompt in m.text), None)
    )


async def images_in(slack: FakeSlack, thread_ts: str, count: int) -> list[bytes]:
    return await slack.wait_for(
        lambda: (found := slack.uploads_in(thread_ts)) and len(found) >= count and found
    )


def action_ids(message: Message) -> list[str]:
    return [
        element["action_id"]
        for block in message.blocks
        if block["type"] == "actions"
        for element in block["elements"]
    ]


async def imagine(bot: Bot, prompt: str) -> tuple[Message, bytes]:
    status, _ = await bot.command(prompt)
    assert status == 200
    root = await root_of(bot.slack, prompt)
    (image,) = await images_in(bot.slack, root.ts, 1)
    await bot.core.idle()
    return root, image


def nexconn_provider(fake: FakeNexconn) -> NexconnProvider:
    """The real Nexconn client on the fake, trying once (a 5xx fails the job at once)."""
    return NexconnProvider(NEXCONN_KEY, fake.base_url, policy=RetryPolicy(attempts=1), timeout=5.0)


@pytest.fixture
async def nexconn() -> AsyncIterator[FakeNexconn]:
    fake = FakeNexconn(NEXCONN_KEY)
    await fake.start()
    yield fake
    await fake.close()


@pytest.fixture
async def launch(slack: FakeSlack, tmp_path: Path) -> AsyncIterator[Launch]:
    bots: list[Bot] = []

    async def start(
        provider: Provider | None = None,
        *,
        socket_mode: bool = False,
        db: str = "bot.db",
        team: TeamSettings | None = None,
        models: Sequence[str] = (),
    ) -> Bot:
        settings = Settings(
            _env_file=None,  # type: ignore[call-arg]
            SLACK_BOT_TOKEN=slack.bot_token,
            SLACK_APP_TOKEN=slack.app_token if socket_mode else None,
            SLACK_SIGNING_SECRET=None if socket_mode else SECRET,
            SLACK_API_BASE=slack.api_base,
            SLACK_HTTP_HOST="127.0.0.1",
            SLACK_HTTP_PORT=0,
        )
        store = await open_store(f"sqlite:///{tmp_path / db}")
        provider = provider or DemoProvider()
        core = ImagineBot(store, provider, model=MODEL, team=team, models=models)
        adapter = SlackAdapter(core, settings)
        await core.start()
        await core.resume_unfinished()
        await adapter.start()
        bot = Bot(slack, core, adapter, provider, store, aiohttp.ClientSession())
        bots.append(bot)
        return bot

    yield start
    for bot in reversed(bots):
        await bot.close()
