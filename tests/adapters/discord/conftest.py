"""The whole Discord adapter, as in production, against loopback fakes.

The real discord.py client logs in to `FakeDiscord` (REST + gateway + CDN), the real core
runs on a real SQLite store, and images come from the real Nexconn provider talking to the
Nexconn fake (or the demo provider where only slowness matters).
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import pytest
from aiohttp import web

from adapters.discord import DiscordAdapter
from bot.config import Settings
from bot.core import ImagineBot
from bot.models import Turn
from bot.providers.base import Provider
from bot.providers.http import RetryPolicy
from bot.providers.nexconn import NexconnProvider
from bot.scheduler import Limits
from bot.store import Store
from storage import open_store
from tests.fakes.discord_server import Call, FakeDiscord, User
from tests.fakes.nexconn_server import FakeNexconn

MODEL = "gemini-2.5-flash-image"
NEXCONN_KEY = "nx-test-key"
CDN_HOST = "127.0.0.1"


class TimedNexconn(FakeNexconn):
    """The Nexconn fake, noting when each request arrived (to order it against Discord's)."""

    def __init__(self) -> None:
        super().__init__(NEXCONN_KEY)
        self.arrivals: list[float] = []

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        self.arrivals.append(time.monotonic())
        return await super()._handle(request)


@dataclass
class RunningBot:
    fake: FakeDiscord
    store: Store
    core: ImagineBot
    adapter: DiscordAdapter

    async def stop(self) -> None:
        await self.core.shutdown(0)
        await self.adapter.close()
        await self.store.close()


def settings_for(fake: FakeDiscord, **extra: Any) -> Settings:
    values: dict[str, Any] = {
        "DISCORD_TOKEN": fake.token,
        "DISCORD_API_BASE": fake.api_base,
        "DISCORD_GATEWAY_URL": fake.gateway_url,
        "DISCORD_GUILD_IDS": str(fake.guild_id),
        "DISCORD_CDN_HOSTS": CDN_HOST,  # the fake serves attachments on loopback
        **extra,
    }
    return Settings(_env_file=None, **values)  # type: ignore[call-arg]


async def run_bot(
    fake: FakeDiscord,
    db_url: str,
    provider: Provider,
    *,
    limits: Limits = Limits(),
    **settings: Any,
) -> RunningBot:
    """`settings` are environment variables (`IMAGINE_USER_DAILY_LIMIT="1"`, …): team
    control comes from them as in `imagine-bot run`."""
    config = settings_for(fake, **settings)
    store = await open_store(db_url)
    core = ImagineBot(
        store,
        provider,
        model=config.model,  # IMAGINE_MODEL (MODEL unless a test sets it)
        limits=limits,
        team=config.team_settings(),
        models=config.offered_models,  # IMAGINE_MODELS, as `imagine-bot run` passes it
    )
    await core.start()
    adapter = DiscordAdapter(core, config, guild_ready_timeout=0.05)
    try:
        await adapter.start()
    except BaseException:
        await core.shutdown(0)
        await store.close()
        raise
    return RunningBot(fake, store, core, adapter)


@pytest.fixture
async def fake() -> AsyncIterator[FakeDiscord]:
    server = await FakeDiscord().start()
    yield server
    await server.close()


@pytest.fixture
async def nexconn() -> AsyncIterator[TimedNexconn]:
    server = TimedNexconn()
    await server.start()
    yield server
    await server.close()


@pytest.fixture
async def provider(nexconn: TimedNexconn) -> AsyncIterator[NexconnProvider]:
    client = NexconnProvider(NEXCONN_KEY, nexconn.base_url, policy=RetryPolicy(attempts=1))
    yield client
    await client.aclose()


@pytest.fixture
async def bot(
    fake: FakeDiscord, db_url: str, provider: NexconnProvider
) -> AsyncIterator[RunningBot]:
    running = await run_bot(fake, db_url, provider)
    yield running
    await running.stop()
    assert_nothing_leaked(fake)


def assert_nothing_leaked(fake: FakeDiscord) -> None:
    """No message the bot sent carries a secret or a traceback, or breaks Discord's limits."""
    for call in fake.calls:
        body = json.dumps(call.json)
        for secret in (NEXCONN_KEY, fake.token):
            assert secret not in body, call
        assert "Traceback" not in body, call
        data = call.json.get("data") if isinstance(call.json, dict) else None
        for source in (call.json, data):
            if isinstance(source, dict) and isinstance(source.get("content"), str):
                assert len(source["content"]) <= 2000, call


@pytest.fixture
def alice(fake: FakeDiscord) -> User:
    return fake.user("alice")


# --- helpers the tests share ----------------------------------------------------------------


def is_callback(token: str) -> Any:
    return lambda c: c.method == "POST" and c.path.endswith(f"/{token}/callback")


def is_original_edit(token: str, *, with_file: bool = False) -> Any:
    def match(call: Call) -> bool:
        return (
            call.method == "PATCH"
            and call.path.endswith(f"/{token}/messages/@original")
            and (bool(call.files) or not with_file)
        )

    return match


def is_channel_post(channel_id: int) -> Any:
    return lambda c: c.method == "POST" and c.path == f"/channels/{channel_id}/messages"


def custom_ids(message: dict[str, Any]) -> list[str]:
    """The buttons' custom ids, in order (the 📐 select is `select_of`)."""
    return [
        button["custom_id"]
        for row in message.get("components") or []
        for button in row.get("components") or []
        if "custom_id" in button and button.get("type") == 2
    ]


def select_of(message: dict[str, Any]) -> dict[str, Any]:
    """The one string select (📐) under a message."""
    [select] = [
        component
        for row in message.get("components") or []
        for component in row.get("components") or []
        if component.get("type") == 3
    ]
    return select


async def imagine(
    fake: FakeDiscord, user: User, prompt: str, **options: Any
) -> tuple[dict[str, Any], Call]:
    """Run `/imagine` and wait for the image: the payload sent and the delivering edit."""
    payload = fake.slash(user, prompt, **options)
    start = len(fake.calls)
    await fake.dispatch("INTERACTION_CREATE", payload)
    call = await fake.wait_for(is_original_edit(payload["token"], with_file=True), start=start)
    return payload, call


async def turn_of(bot: RunningBot, message: dict[str, Any]) -> Turn:
    """The turn a posted message shows (waits for the core to index it)."""
    async with asyncio.timeout(10):
        await bot.core.idle()
        while True:
            turn = await bot.core.turn_for_message("discord", message["id"])
            if turn is not None:
                return turn
            await asyncio.sleep(0.01)
