"""Rough edges a new user meets first: --ar mistakes, plurals, start-up noise."""

from __future__ import annotations

import asyncio
import signal
import socket
import sys
from pathlib import Path

import pytest

from adapters.slack import SlackAdapter, SlackStartError
from adapters.slack.convert import parse_prompt
from bot.config import Settings
from bot.core import ImagineBot
from bot.errors import AspectRatioFlag, RateLimited, UserQueueFull
from bot.inputs import split_prompt_flags
from bot.providers.demo import DemoProvider
from bot.runner import history_note
from storage import open_store
from tests.conftest import bot_env, run_cli
from tests.fakes.discord_server import FakeDiscord

ONCE = "Give --ar only once, like --ar 16:9."
NO_VALUE = "--ar needs an aspect ratio after it, like --ar 16:9."


@pytest.mark.parametrize(
    ("text", "sentence"),
    [
        ("a cat --ar", NO_VALUE),
        ("a cat --ar=", NO_VALUE),
        ("a cat --ar --stylize 5", NO_VALUE),
        ("a cat --ar 16:9 --ar 1:1", ONCE),
        ("--aspect 1:1 a cat --ar=16:9", ONCE),
    ],
)
def test_ar_twice_or_without_a_value_is_an_error(text: str, sentence: str) -> None:
    with pytest.raises(AspectRatioFlag) as caught:
        split_prompt_flags(text)
    assert caught.value.user_message == sentence
    with pytest.raises(AspectRatioFlag):  # Slack parses through the same function
        parse_prompt(text)


def test_ar_once_still_works() -> None:
    assert split_prompt_flags("a cat --ar=9x16 on a mat") == ("a cat on a mat", "9:16")
    assert split_prompt_flags("an --artful cat") == ("an --artful cat", None)


def test_ar_mistakes_in_the_console_are_one_line_each(tmp_path: Path) -> None:
    result = run_cli(
        tmp_path, "console", stdin="/imagine a cat --ar\n/imagine a cat --ar 1:1 --ar 16:9\n"
    )
    assert result.returncode == 0, result.stderr
    assert f"✗ {NO_VALUE}" in result.stdout.splitlines()
    assert f"✗ {ONCE}" in result.stdout.splitlines()
    assert "✓ " not in result.stdout  # nothing was drawn with "--ar" in its prompt


def test_counts_read_right_for_one_and_two() -> None:
    assert history_note(1) == (
        "This thread is long, so only its last image was sent to the model as context."
    )
    assert "only its last 2 images were sent" in history_note(2)
    assert "Please try again in 1 second." in RateLimited(1).user_message
    assert "Please try again in 2 seconds." in RateLimited(1.2).user_message
    assert (
        UserQueueFull(1).user_message
    ) == "You already have 1 image in progress. Try again when it is finished."
    assert UserQueueFull(2).user_message.startswith("You already have 2 images in progress.")


def _closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.mark.parametrize("chosen", [True, False])
async def test_unreachable_slack_blames_slack_api_base_only_when_set(
    tmp_path: Path, chosen: bool
) -> None:
    unreachable = f"http://127.0.0.1:{_closed_port()}/api/"
    values: dict[str, object] = {"SLACK_BOT_TOKEN": "xoxb-1", "SLACK_SIGNING_SECRET": "s"}
    if chosen:
        values["SLACK_API_BASE"] = unreachable
    settings = Settings(_env_file=None, **values)  # type: ignore[call-arg, arg-type]
    store = await open_store(f"sqlite:///{tmp_path / 'bot.db'}")
    adapter = SlackAdapter(ImagineBot(store, DemoProvider(), model="m"), settings)
    adapter.client.base_url = unreachable  # the real slack.com is never asked in tests
    try:
        with pytest.raises(SlackStartError) as caught:
            await adapter.start()
    finally:
        await adapter.close()
        await store.close()
    message = str(caught.value)
    if chosen:
        assert message.startswith(f"SLACK_API_BASE: cannot reach Slack at {unreachable}")
    else:
        assert "SLACK_API_BASE" not in message
        assert message.startswith("cannot reach Slack at https://slack.com/api/")
        assert "network connection" in message


async def test_no_voice_warnings_when_discord_starts(tmp_path: Path) -> None:
    discord = await FakeDiscord().start()
    env = bot_env(
        tmp_path,
        **discord.bot_settings(),
        LOG_LEVEL="INFO",
    )
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "bot", "run", env=env, cwd=tmp_path, stderr=asyncio.subprocess.PIPE
    )
    try:
        await discord.wait_identify(timeout=30)
        await asyncio.sleep(0.5)
    finally:
        if process.returncode is None:
            process.send_signal(signal.SIGTERM)
        _, stderr = await asyncio.wait_for(process.communicate(), 30)
        await discord.close()
    log = stderr.decode()
    assert process.returncode == 0, log
    assert "discord" in log  # the library did log (at INFO) …
    assert "PyNaCl" not in log, log
    assert "davey" not in log, log
    assert "voice will NOT" not in log, log
