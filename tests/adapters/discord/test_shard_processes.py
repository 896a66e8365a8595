"""Two real `imagine-bot run` processes split the gateway, and act once on a duplicate.

Process A runs shard 0 of 2 and process B shard 1 of 2 (`DISCORD_SHARD_COUNT=2`,
`DISCORD_SHARD_IDS=0` / `1`), on one SQLite file, against one fake Discord and one fake
Nexconn. The fake delivers an interaction and a reply to both connections, as Discord would
to two processes that were given the same shard by mistake: each is acted on once.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import bot_env, run_cli
from tests.fakes.discord_server import Call, FakeDiscord
from tests.fakes.nexconn_server import FakeNexconn

from .conftest import NEXCONN_KEY, is_callback, is_channel_post, is_original_edit


class BotProcess:
    """`python -m bot run` with its stderr read line by line as it comes."""

    def __init__(self, name: str, process: asyncio.subprocess.Process) -> None:
        self.name = name
        self.process = process
        self.lines: list[str] = []
        self._changed = asyncio.Event()
        self._reader = asyncio.create_task(self._read())

    async def _read(self) -> None:
        assert self.process.stderr is not None
        async for raw in self.process.stderr:
            self.lines.append(raw.decode(errors="replace"))
            self._changed.set()
        self._changed.set()

    @property
    def log(self) -> str:
        return "".join(self.lines)

    async def wait_log(self, text: str, timeout: float = 30.0) -> None:
        async with asyncio.timeout(timeout):
            while not any(text in line for line in self.lines):
                if self._reader.done():
                    raise AssertionError(f"{self.name} ended before logging {text!r}:\n{self.log}")
                self._changed.clear()
                await self._changed.wait()

    async def stop(self) -> int:
        if self.process.returncode is None:
            self.process.send_signal(signal.SIGTERM)
        try:
            returncode = await asyncio.wait_for(self.process.wait(), 30)
        except TimeoutError:
            self.process.kill()
            returncode = await self.process.wait()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self._reader, 5)
        return returncode


@pytest.fixture
async def discord() -> AsyncIterator[FakeDiscord]:
    fake = await FakeDiscord().start()
    yield fake
    await fake.close()


@pytest.fixture
async def nexconn() -> AsyncIterator[FakeNexconn]:
    server = FakeNexconn(NEXCONN_KEY)
    await server.start()
    yield server
    await server.close()


async def start_shard(
    name: str, shard: int, discord: FakeDiscord, nexconn: FakeNexconn, tmp_path: Path
) -> BotProcess:
    env = bot_env(
        tmp_path,
        **discord.bot_settings(),
        DISCORD_SHARD_COUNT="2",
        DISCORD_SHARD_IDS=str(shard),
        IMAGINE_PROVIDER="nexconn",
        NEXCONN_API_KEY=NEXCONN_KEY,
        NEXCONN_BASE_URL=nexconn.base_url,
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
    bot = BotProcess(name, process)
    try:
        await bot.wait_log("Discord: logged in as")
    except BaseException:
        await bot.stop()
        raise
    return bot


async def duplicate_dropped(bots: list[BotProcess], kind: str, event_id: str) -> BotProcess:
    """The process that left `event_id` to the other one (it says so in its log)."""
    needle = f"Discord {kind} {event_id} was already taken by another process"
    async with asyncio.timeout(30):
        while True:
            for bot in bots:
                if needle in bot.log:
                    return bot
            await asyncio.sleep(0.05)


async def test_two_processes_split_the_shards_and_act_once_on_a_duplicated_event(
    discord: FakeDiscord, nexconn: FakeNexconn, tmp_path: Path
) -> None:
    bots: list[BotProcess] = []
    try:
        # one after the other: the first creates the database
        bots.append(await start_shard("shard 0", 0, discord, nexconn, tmp_path))
        bots.append(await start_shard("shard 1", 1, discord, nexconn, tmp_path))

        assert sorted(identify["shard"] for identify in discord.identifies) == [[0, 2], [1, 2]]
        assert sorted(discord.shards) == [(0, 2), (1, 2)]
        syncs = discord.find(lambda c: c.method == "PUT" and c.path.endswith("/commands"))
        assert len(syncs) == 1  # by the process that runs shard 0
        assert "commands are synced by the process that runs shard 0" in bots[1].log

        alice = discord.user("alice")
        payload = discord.slash(alice, "a panda making latte art")
        start = len(discord.calls)
        await discord.dispatch("INTERACTION_CREATE", payload, everywhere=True)
        delivered = is_original_edit(payload["token"], with_file=True)
        await discord.wait_for(delivered, start=start, timeout=30)
        await duplicate_dropped(bots, "interaction", payload["id"])

        [defer] = discord.find(is_callback(payload["token"]))
        assert defer.json == {"type": 5}
        assert len(discord.find(delivered)) == 1
        assert len(nexconn.requests) == 1

        image_message = discord.original_message(payload["token"])
        assert image_message is not None
        reply = discord.user_message(alice, "make the cup blue", reply_to=image_message)
        start = len(discord.calls)
        await discord.dispatch("MESSAGE_CREATE", reply, everywhere=True)

        def is_image_reply(call: Call) -> bool:
            return is_channel_post(discord.channel_id)(call) and bool(call.files)

        answer = await discord.wait_for(is_image_reply, start=start, timeout=30)
        await duplicate_dropped(bots, "message", reply["id"])
        reference: Any = answer.json["message_reference"]
        assert str(reference["message_id"]) == reply["id"]
        assert len(discord.find(is_image_reply)) == 1
        assert len(nexconn.requests) == 2
    finally:
        codes = [await bot.stop() for bot in bots]
    for bot, code in zip(bots, codes, strict=True):
        assert code == 0, bot.log
        assert "Traceback" not in bot.log, bot.log
        assert discord.token not in bot.log


@pytest.mark.parametrize(
    ("settings", "named"),
    [
        ({"DISCORD_SHARD_IDS": "0"}, "DISCORD_SHARD_COUNT"),
        ({"DISCORD_SHARD_COUNT": "2", "DISCORD_SHARD_IDS": "2"}, "DISCORD_SHARD_IDS"),
        ({"DISCORD_SHARD_COUNT": "2", "DISCORD_SHARD_IDS": "one"}, "DISCORD_SHARD_IDS"),
        ({"DISCORD_SHARD_COUNT": "0"}, "DISCORD_SHARD_COUNT"),
    ],
)
def test_bad_shard_settings_stop_run_with_one_line_naming_them(
    tmp_path: Path, settings: dict[str, str], named: str
) -> None:
    result = run_cli(tmp_path, "run", DISCORD_TOKEN="t", **settings)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and named in lines[0], result.stderr
