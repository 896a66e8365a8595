"""Several real `imagine-bot run` processes on one database: nothing lost, nothing twice.

Each process serves Slack in HTTP mode on its own port, against one fake Slack and one fake
Nexconn that counts the calls per prompt and the most it ever had in flight at once. A
process is killed with SIGKILL (its whole process group: the decoder workers too), as an
OOM kill or a lost node would.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import aiohttp
import asyncpg
import pytest
from aiohttp import web

from bot.errors import ProviderTimeout
from tests.adapters.slack.conftest import SECRET, action_ids, block_action, command_form, signed
from tests.conftest import bot_env, fresh_database
from tests.fakes.nexconn_server import FakeNexconn
from tests.fakes.slack_server import FakeSlack, Message
from tests.test_process import free_port, wait_until_listening

KEY = "nx-replica-key"
LEASE = 2.0
CONCURRENCY = 3


class CountingNexconn(FakeNexconn):
    """Nexconn that takes `latency` seconds per image and counts what it was asked."""

    def __init__(self, latency: float) -> None:
        super().__init__(KEY)
        self.latency = latency
        self.active = 0
        self.peak = 0
        self.prompts: Counter[str] = Counter()

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        prompt = json.loads(body or b"{}").get("prompt", "")
        self.prompts[prompt] += 1
        self.active += 1
        self.peak = max(self.peak, self.active)
        try:
            await asyncio.sleep(self.latency)
            return await super()._handle(request)
        finally:
            self.active -= 1


@dataclass
class BotProcess:
    process: asyncio.subprocess.Process
    port: int
    log: Path

    async def command(self, slack: FakeSlack, text: str, rid: str) -> None:
        form = command_form(text, rid=rid)
        await self._post(
            urlencode({k: v.replace("{base}", slack.base_url) for k, v in form.items()})
        )

    async def interactive(self, slack: FakeSlack, payload: dict[str, Any]) -> None:
        text = json.dumps(payload).replace("{base}", slack.base_url)
        await self._post(urlencode({"payload": text}))

    async def _post(self, body: str) -> None:
        headers = {"Content-Type": "application/x-www-form-urlencoded", **signed(body)}
        url = f"http://127.0.0.1:{self.port}/slack/events"
        async with aiohttp.ClientSession() as http, http.post(url, data=body, headers=headers) as r:
            assert r.status == 200

    def kill(self) -> None:
        """SIGKILL, the process and its decoder workers: nothing gets to clean up."""
        os.killpg(self.process.pid, signal.SIGKILL)

    async def stop(self) -> str:
        if self.process.returncode is None:
            self.process.send_signal(signal.SIGTERM)
        await asyncio.wait_for(self.process.wait(), 30)
        return self.log.read_text()


Start = Callable[..., Awaitable[BotProcess]]


@pytest.fixture
async def nexconn() -> AsyncIterator[CountingNexconn]:
    fake = CountingNexconn(latency=1.0)
    await fake.start()
    yield fake
    await fake.close()


@pytest.fixture
async def postgres_url(postgres_server_url: str) -> AsyncIterator[str]:
    async with fresh_database(postgres_server_url) as url:
        yield url


@pytest.fixture
async def start_bot(
    slack: FakeSlack, nexconn: CountingNexconn, tmp_path: Path
) -> AsyncIterator[Start]:
    """Start `imagine-bot run` processes (each in its own session, so a kill takes its
    workers too); whatever is still running at the end is stopped."""
    started: list[BotProcess] = []

    async def start(database_url: str, **settings: str) -> BotProcess:
        port = free_port()
        home = tmp_path / f"bot-{len(started)}"
        home.mkdir()
        env = bot_env(
            home,
            DATABASE_URL=database_url,
            SLACK_BOT_TOKEN=slack.bot_token,
            SLACK_SIGNING_SECRET=SECRET,
            SLACK_API_BASE=slack.api_base,
            SLACK_HTTP_HOST="127.0.0.1",
            SLACK_HTTP_PORT=str(port),
            IMAGINE_PROVIDER="nexconn",
            NEXCONN_API_KEY=KEY,
            NEXCONN_BASE_URL=nexconn.base_url,
            IMAGINE_CONCURRENCY=str(CONCURRENCY),
            IMAGINE_USER_MAX_RUNNING=str(CONCURRENCY),
            IMAGINE_USER_MAX_QUEUED="50",
            IMAGINE_JOB_LEASE=str(LEASE),
            IMAGINE_JOB_POLL="0.2",
            LOG_LEVEL="INFO",
            **settings,
        )
        log = home / "bot.log"
        with log.open("wb") as sink:
            process = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "bot",
                "run",
                env=env,
                cwd=home,
                stdout=sink,
                stderr=sink,
                start_new_session=True,
            )
        bot = BotProcess(process, port, log)
        started.append(bot)
        try:
            await wait_until_listening(port, process)
        except AssertionError as failed:
            raise AssertionError(f"{failed}\n{log.read_text()}") from None
        return bot

    yield start
    for bot in started:
        if bot.process.returncode is None:
            bot.kill()
            await bot.process.wait()


async def recorded_jobs(database_url: str, count: int) -> None:
    """Wait until the processes have recorded `count` jobs: the ack of a Slack command
    comes first (3 s deadline), the record some milliseconds later."""
    connection = await asyncpg.connect(database_url)
    try:
        async with asyncio.timeout(20):
            while await connection.fetchval("SELECT count(*) FROM jobs") < count:
                await asyncio.sleep(0.05)
    finally:
        await connection.close()


def root_for(slack: FakeSlack, prompt: str) -> Message | None:
    return next((m for m in slack.roots("C1") if prompt in m.text), None)


def images_per_prompt(slack: FakeSlack, prompts: list[str]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for prompt in prompts:
        root = root_for(slack, prompt)
        counts[prompt] = len(slack.uploads_in(root.ts)) if root is not None else 0
    return counts


async def test_two_processes_share_the_work_and_a_kill_loses_nothing(
    slack: FakeSlack, nexconn: CountingNexconn, start_bot: Start, postgres_url: str
) -> None:
    first = await start_bot(postgres_url)
    second = await start_bot(postgres_url)
    prompts = [f"lighthouse {n} at dusk" for n in range(12)]
    for n, prompt in enumerate(prompts):
        await (first if n % 2 == 0 else second).command(slack, prompt, rid=f"r{n}")
    await recorded_jobs(postgres_url, len(prompts))  # acknowledged is not yet recorded
    await slack.wait_for(lambda: sum(nexconn.prompts.values()) >= 2, timeout=20)

    first.kill()  # mid-run: it holds jobs at the provider and in the queue
    everything = {prompt: 1 for prompt in prompts}
    await slack.wait_for(lambda: images_per_prompt(slack, prompts) == everything, timeout=60)
    await asyncio.sleep(LEASE)  # nothing else turns up later
    assert images_per_prompt(slack, prompts) == everything, "every job delivered exactly once"
    assert nexconn.peak <= CONCURRENCY, "the cap holds across processes"
    # a synchronous call cut off by the kill is made again; nothing else is
    assert sum(nexconn.prompts.values()) <= len(prompts) + CONCURRENCY
    assert set(nexconn.prompts) == set(prompts)
    log = await second.stop()
    assert second.process.returncode == 0, log
    assert "Traceback" not in log


async def test_a_second_process_steals_nothing_a_live_one_holds(
    slack: FakeSlack, nexconn: CountingNexconn, start_bot: Start, postgres_url: str
) -> None:
    nexconn.latency = 3 * LEASE  # outlives several leases: only renewals keep it held
    first = await start_bot(postgres_url)
    prompts = [f"comet number {n}" for n in range(3)]
    for n, prompt in enumerate(prompts):
        await first.command(slack, prompt, rid=f"r{n}")
    await slack.wait_for(lambda: sum(nexconn.prompts.values()) == 3, timeout=20)

    second = await start_bot(postgres_url)  # a rolling deploy: the new one comes up first
    everything = {prompt: 1 for prompt in prompts}
    await slack.wait_for(lambda: images_per_prompt(slack, prompts) == everything, timeout=60)
    assert nexconn.prompts == Counter(prompts), "nothing was sent to the provider twice"
    for bot in (first, second):
        log = await bot.stop()
        assert bot.process.returncode == 0 and "Traceback" not in log, log


@pytest.fixture(params=["sqlite", "postgres"])
async def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[str]:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path}/shared.db"
        return
    async with fresh_database(request.getfixturevalue("postgres_server_url")) as url:
        yield url


async def test_a_crash_after_the_image_was_made_posts_it_without_a_second_call(
    slack: FakeSlack, nexconn: CountingNexconn, start_bot: Start, database_url: str
) -> None:
    nexconn.latency = 0.1
    slack.uploads_open.clear()  # the image is made and stored; its upload hangs
    first = await start_bot(database_url)
    await first.command(slack, "a panda making latte art", rid="r1")
    await slack.wait_for(lambda: slack.upload_attempts >= 1, timeout=20)
    first.kill()  # between "made" and "delivered"
    await first.process.wait()
    slack.uploads_open.set()

    await start_bot(database_url)
    root = await slack.wait_for(lambda: root_for(slack, "a panda making latte art"), timeout=5)
    uploads = await slack.wait_for(lambda: slack.uploads_in(root.ts), timeout=LEASE + 20)
    assert uploads == [nexconn.image]
    assert nexconn.prompts == Counter({"a panda making latte art": 1})


async def test_a_provider_that_never_answers_gets_the_timeout_message(
    slack: FakeSlack, nexconn: CountingNexconn, start_bot: Start, tmp_path: Path
) -> None:
    nexconn.latency = 600.0
    bot = await start_bot(f"sqlite:///{tmp_path}/bot.db", IMAGINE_JOB_TIMEOUT="2")
    await bot.command(slack, "a very slow sunrise", rid="r1")
    said = ProviderTimeout().user_message

    def told() -> bool:
        return any(said in json.dumps(call.params) for call in slack.api("chat.update"))

    await slack.wait_for(told, timeout=30)
    root = root_for(slack, "a very slow sunrise")
    assert root is not None and slack.uploads_in(root.ts) == []
    assert nexconn.prompts == Counter({"a very slow sunrise": 1})  # not sent again
    log = await bot.stop()
    assert bot.process.returncode == 0, log


async def test_cancel_pressed_on_another_replica_stops_the_job(
    slack: FakeSlack, nexconn: CountingNexconn, start_bot: Start, postgres_url: str
) -> None:
    nexconn.latency = 60.0
    holder = await start_bot(postgres_url)
    await holder.command(slack, "a very slow painting", rid="r1")
    await slack.wait_for(lambda: nexconn.active == 1, timeout=20)  # at the provider
    other = await start_bot(postgres_url)
    root = await slack.wait_for(lambda: root_for(slack, "a very slow painting"), timeout=5)
    await slack.wait_for(lambda: "imagine:cancel" in action_ids(root), timeout=10)
    job_id = next(e["value"] for b in root.blocks if b["type"] == "actions" for e in b["elements"])
    await other.interactive(
        slack, block_action("imagine:cancel", job_id, user="U1", message_ts=root.ts)
    )
    await slack.wait_for(lambda: "Cancelled." in root.text, timeout=10)
    await slack.wait_for(lambda: nexconn.active == 0, timeout=5)  # the call was dropped
    assert slack.uploads_in(root.ts) == []
    for bot in (holder, other):
        log = await bot.stop()
        assert bot.process.returncode == 0 and "Traceback" not in log, log
