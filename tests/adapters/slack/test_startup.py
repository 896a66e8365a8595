"""Start-up: the mode follows the tokens, and a refused token is one clear line, not a hang."""

from __future__ import annotations

from pathlib import Path

import aiohttp
import pytest

from adapters.slack import SlackAdapter, SlackStartError
from bot.config import Settings, SettingsError
from bot.core import ImagineBot
from bot.providers.demo import DemoProvider
from storage import open_store
from tests.fakes.slack_server import FakeSlack


def settings(slack: FakeSlack, **overrides: object) -> Settings:
    values: dict[str, object] = {
        "SLACK_BOT_TOKEN": slack.bot_token,
        "SLACK_API_BASE": slack.api_base,
        "SLACK_HTTP_HOST": "127.0.0.1",
        "SLACK_HTTP_PORT": 0,
        "SLACK_APP_TOKEN": None,
        "SLACK_SIGNING_SECRET": None,
    }
    values.update(overrides)
    return Settings(_env_file=None, **values)  # type: ignore[call-arg, arg-type]


@pytest.fixture
async def core(tmp_path: Path):  # type: ignore[no-untyped-def]
    store = await open_store(f"sqlite:///{tmp_path / 'startup.db'}")
    yield ImagineBot(store, DemoProvider(), model="m")
    await store.close()


async def test_http_mode_needs_the_signing_secret(slack: FakeSlack, core: ImagineBot) -> None:
    with pytest.raises(SettingsError, match="SLACK_SIGNING_SECRET"):
        SlackAdapter(core, settings(slack))


async def test_a_refused_bot_token_stops_start_up(slack: FakeSlack, core: ImagineBot) -> None:
    adapter = SlackAdapter(
        core, settings(slack, SLACK_BOT_TOKEN="xoxb-wrong", SLACK_SIGNING_SECRET="s")
    )
    with pytest.raises(SlackStartError, match=r"SLACK_BOT_TOKEN.*invalid_auth"):
        await adapter.start()
    await adapter.close()


async def test_a_refused_app_token_stops_start_up(slack: FakeSlack, core: ImagineBot) -> None:
    adapter = SlackAdapter(core, settings(slack, SLACK_APP_TOKEN="xapp-wrong"))
    with pytest.raises(SlackStartError, match=r"SLACK_APP_TOKEN.*invalid_auth"):
        await adapter.start()
    await adapter.close()


async def test_http_mode_listens_and_answers_health_checks(
    slack: FakeSlack, core: ImagineBot
) -> None:
    adapter = SlackAdapter(core, settings(slack, SLACK_SIGNING_SECRET="s"))
    await adapter.start()
    try:
        async with (
            aiohttp.ClientSession() as http,
            http.get(f"http://127.0.0.1:{adapter.port}/healthz") as response,
        ):
            assert response.status == 200 and await response.text() == "ok"
    finally:
        await adapter.close()
