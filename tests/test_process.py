"""`imagine-bot run` as an admin starts it: a real process, configured by environment only."""

from __future__ import annotations

import asyncio
import io
import signal
import socket
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from urllib.parse import urlencode

import aiohttp
import pytest
from PIL import Image as PILImage

from tests.adapters.discord.conftest import is_original_edit
from tests.adapters.slack.conftest import SECRET, command_form, signed
from tests.conftest import bot_env
from tests.fakes.discord_server import FakeDiscord
from tests.fakes.slack_server import FakeSlack


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.fixture
async def discord() -> AsyncIterator[FakeDiscord]:
    fake = await FakeDiscord().start()
    yield fake
    await fake.close()


async def wait_until_listening(port: int, process: asyncio.subprocess.Process) -> None:
    for _ in range(200):
        if process.returncode is not None:
            assert process.stderr is not None
            raise AssertionError(
                "the bot exited during start-up:\n" + (await process.stderr.read()).decode()
            )
        try:
            _, writer = await asyncio.open_connection("127.0.0.1", port)
        except OSError:
            await asyncio.sleep(0.05)
            continue
        writer.close()
        return
    raise AssertionError("the bot never listened")


async def test_run_serves_slack_and_stops_cleanly_on_sigterm(
    slack: FakeSlack, tmp_path: Path
) -> None:
    port = free_port()
    env = bot_env(
        tmp_path,
        SLACK_BOT_TOKEN=slack.bot_token,
        SLACK_SIGNING_SECRET=SECRET,
        SLACK_API_BASE=slack.api_base,
        SLACK_HTTP_HOST="127.0.0.1",
        SLACK_HTTP_PORT=str(port),
        LOG_LEVEL="INFO",
    )
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "bot",
        "run",
        env=env,
        cwd=tmp_path,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        await wait_until_listening(port, process)
        form = {
            k: v.replace("{base}", slack.base_url)
            for k, v in command_form("a lighthouse at dusk --ar 16:9").items()
        }
        body = urlencode(form)
        headers = {"Content-Type": "application/x-www-form-urlencoded", **signed(body)}
        async with (
            aiohttp.ClientSession() as http,
            http.post(f"http://127.0.0.1:{port}/slack/events", data=body, headers=headers) as r,
        ):
            assert r.status == 200
        root = await slack.wait_for(lambda: next(iter(slack.roots("C1")), None), timeout=20)
        uploads = await slack.wait_for(lambda: slack.uploads_in(root.ts) or None, timeout=20)
        image = PILImage.open(io.BytesIO(uploads[0]))
        assert image.format == "PNG" and image.size == (1344, 768)
    finally:
        if process.returncode is None:
            process.send_signal(signal.SIGTERM)
        _, stderr = await asyncio.wait_for(process.communicate(), 30)
    log = stderr.decode()
    assert process.returncode == 0, log
    assert "Traceback" not in log
    assert slack.bot_token not in log  # secrets never reach the log


async def test_one_process_serves_discord_and_slack_together(
    slack: FakeSlack, discord: FakeDiscord, tmp_path: Path
) -> None:
    port = free_port()
    env = bot_env(
        tmp_path,
        **discord.bot_settings(),
        SLACK_BOT_TOKEN=slack.bot_token,
        SLACK_SIGNING_SECRET=SECRET,
        SLACK_API_BASE=slack.api_base,
        SLACK_HTTP_HOST="127.0.0.1",
        SLACK_HTTP_PORT=str(port),
    )
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "bot", "run", env=env, cwd=tmp_path, stderr=asyncio.subprocess.PIPE
    )
    try:
        await wait_until_listening(port, process)  # Slack listens once Discord is ready too
        identify = await discord.wait_identify(timeout=30)
        assert identify["intents"] & (1 << 15)  # message content, for replies

        alice = discord.user("alice")
        payload = discord.slash(alice, "a panda making latte art")
        await discord.dispatch("INTERACTION_CREATE", payload)
        body = urlencode(
            {k: v.replace("{base}", slack.base_url) for k, v in command_form("a fox").items()}
        )
        headers = {"Content-Type": "application/x-www-form-urlencoded", **signed(body)}
        async with (
            aiohttp.ClientSession() as http,
            http.post(f"http://127.0.0.1:{port}/slack/events", data=body, headers=headers) as r,
        ):
            assert r.status == 200

        posted = await discord.wait_for(
            is_original_edit(payload["token"], with_file=True), timeout=30
        )
        assert PILImage.open(io.BytesIO(posted.files[0].data)).format == "PNG"
        root = await slack.wait_for(lambda: next(iter(slack.roots("C1")), None), timeout=20)
        assert await slack.wait_for(lambda: slack.uploads_in(root.ts) or None, timeout=20)
    finally:
        if process.returncode is None:
            process.send_signal(signal.SIGTERM)
        _, stderr = await asyncio.wait_for(process.communicate(), 30)
    assert process.returncode == 0, stderr.decode()
    assert discord.token not in stderr.decode() and slack.bot_token not in stderr.decode()
