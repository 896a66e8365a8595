"""Two real `imagine-bot run` processes sharing one PostgreSQL database.

Each process serves Slack in HTTP mode on its own port (signed, form-encoded `/imagine`
POSTs, as `tests/test_replicas.py` sends them) against one Slack fake hosted here; the
provider fake (`bench/fake_provider.py`) runs in a child process and counts the calls it has
in flight at once. The database is a fresh one on the tests' throwaway cluster (`bench/pg.py`).

- **Shared load**: `jobs` commands from as many users arrive evenly within 1 s, alternating
  between the two processes; makespan = first command → last `files.completeUploadExternal`
  (ideal = ceil(jobs / cap) × latency), and the provider's highest concurrency.
- **kill -9**: `KILL_JOBS` commands the same way with `IMAGINE_JOB_LEASE=LEASE`; once both
  processes hold jobs at the provider, 2.5 s into a provider call, one is killed with SIGKILL
  (its process group: the decoder workers too). Its worker id is read from its log; the jobs
  table is polled every 20 ms until no unsettled job is owned by it any more.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import signal
import sys
import tempfile
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlencode

import aiohttp
import asyncpg
from slack_sdk.signature import SignatureVerifier

from bench.common import Options, Row, Verdict, ms, percentile, verdict
from bench.fake_provider import API_KEY, ROOT, ProviderProcess, stats
from bench.pg import PostgresUnavailable, fresh_database, postgres_server
from bench.platforms import PNG, SIGNING_SECRET, Sent, TimedSlack, _post_slack, _slack_command
from tests.conftest import bot_env

ARRIVAL_WINDOW = 1.0
KILL_JOBS = 48
LEASE = 10.0
WORKER_LINE = re.compile(r"worker (\S+) serves the job queue")


@dataclass
class Replica:
    process: asyncio.subprocess.Process
    port: int
    log: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/slack/events"

    def worker_id(self) -> str | None:
        found = WORKER_LINE.search(self.log.read_text(errors="replace"))
        return found.group(1) if found else None

    def kill(self) -> None:
        os.killpg(self.process.pid, signal.SIGKILL)

    def tail(self, lines: int = 20) -> str:
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextlib.asynccontextmanager
async def replicas(
    count: int, folder: Path, database: str, provider: str, slack: TimedSlack, **settings: str
) -> AsyncIterator[list[Replica]]:
    """`count` `python -m bot run` processes (own session each), SIGTERM'd afterwards."""
    started: list[Replica] = []
    try:
        for n in range(count):
            home = folder / f"bot-{n}"
            home.mkdir()
            port = _free_port()
            env = bot_env(
                home,
                PYTHONPATH=str(ROOT),
                DATABASE_URL=database,
                SLACK_BOT_TOKEN=slack.bot_token,
                SLACK_SIGNING_SECRET=SIGNING_SECRET,
                SLACK_API_BASE=slack.api_base,
                SLACK_HTTP_HOST="127.0.0.1",
                SLACK_HTTP_PORT=str(port),
                IMAGINE_PROVIDER="nexconn",
                NEXCONN_API_KEY=API_KEY,
                NEXCONN_BASE_URL=provider,
                LOG_LEVEL="INFO",
                **settings,
            )
            log = home / "bot.log"
            with log.open("wb") as sink:
                process = await asyncio.create_subprocess_exec(
                    sys.executable, "-m", "bot", "run", env=env, cwd=home,
                    stdout=sink, stderr=sink, start_new_session=True,
                )  # fmt: skip
            started.append(Replica(process, port, log))
        for replica in started:
            await _until_ready(replica)
        yield started
    finally:
        for replica in started:
            if replica.process.returncode is None:
                replica.process.send_signal(signal.SIGTERM)
        for replica in started:
            try:
                await asyncio.wait_for(replica.process.wait(), 30)
            except TimeoutError:
                replica.kill()
                await replica.process.wait()


async def _until_ready(replica: Replica) -> None:
    deadline = time.monotonic() + 60
    async with aiohttp.ClientSession() as http:
        while time.monotonic() < deadline:
            if replica.process.returncode is not None:
                raise RuntimeError(f"a bot exited while starting:\n{replica.tail()}")
            with contextlib.suppress(aiohttp.ClientError):
                async with http.get(f"http://127.0.0.1:{replica.port}/healthz") as response:
                    if response.status == 200 and replica.worker_id():
                        return
            await asyncio.sleep(0.1)
    raise RuntimeError(f"a bot did not start within 60 s:\n{replica.tail()}")


async def send_burst(
    jobs: int, targets: list[Replica], slack: TimedSlack, http: aiohttp.ClientSession
) -> list[Sent]:
    """`jobs` signed Slack `/imagine` POSTs from distinct users, evenly within 1 s, round
    robin over `targets`."""
    verifier = SignatureVerifier(SIGNING_SECRET)
    sent: list[Sent] = []
    posts: list[asyncio.Task[None]] = []
    start = time.monotonic()
    for n in range(jobs):
        await asyncio.sleep(max(0.0, start + n * ARRIVAL_WINDOW / jobs - time.monotonic()))
        body = urlencode(_slack_command(n, f"a lighthouse at dusk #{n}", slack.base_url))
        one = Sent("slack", time.monotonic())
        url = targets[n % len(targets)].url
        posts.append(asyncio.create_task(_post_slack(http, url, body, verifier, one)))
        sent.append(one)
    await asyncio.gather(*posts)
    return sent


def images_per_thread(slack: TimedSlack) -> Counter[str]:
    """How many images each thread (one per command) received."""
    return Counter(
        str(done.get("thread_ts"))
        for done in slack.completed
        for f in done["files"]
        if slack.uploads.get(f["id"]) == PNG
    )


async def _until(check: Callable[[], bool], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return True
        await asyncio.sleep(0.05)
    return False


async def shared_load(options: Options, server: str, folder: Path) -> list[Row]:
    async with (
        ProviderProcess(options.latency, options.image_bytes) as provider,
        fresh_database(server) as database,
        _slack() as slack,
        replicas(
            2, folder, database, provider, slack, IMAGINE_CONCURRENCY=str(options.cap)
        ) as bots,
        aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as http,
    ):
        sent = await send_burst(options.jobs, bots, slack, http)
        first = sent[0].at
        ideal = -(-options.jobs // options.cap) * options.latency
        await _until(lambda: len(slack.completed_at) >= options.jobs, 2 * ideal + 60)
        end = max(slack.completed_at, default=time.monotonic())
        served = await stats(provider)
        per_thread = images_per_thread(slack)
    makespan = end - first
    ratio = makespan / ideal
    delivered = len(per_thread)
    twice = sum(1 for n in per_thread.values() if n > 1)
    complete = delivered == options.jobs and not twice
    acks = [s.ack for s in sent if s.ack is not None]
    detail = (
        f"{delivered}/{options.jobs} delivered, {twice} twice; provider served "
        f"{served['served']} calls; Slack ack p99 {ms(percentile(acks, 99)) if acks else '—'}"
    )
    return [
        Row(
            f"makespan of {options.jobs} jobs ÷ ideal (two processes, PostgreSQL)",
            "≤ 1.10",
            f"{makespan:.1f} s ÷ {ideal:.0f} s = {ratio:.3f}",
            verdict(ratio <= 1.10 and complete),
            f"ideal = ceil({options.jobs}/{options.cap}) × {options.latency:g} s; commands "
            f"alternate between the processes; {detail}",
        ),
        Row(
            "provider's highest concurrency (two processes, PostgreSQL)",
            f"≤ {options.cap}, exactly",
            f"{served['peak']}",
            verdict(served["peak"] <= options.cap),
            f"`IMAGINE_CONCURRENCY={options.cap}` in each; counted by the provider fake",
        ),
    ]


async def kill_one(options: Options, server: str, folder: Path) -> list[Row]:
    settings = {"IMAGINE_CONCURRENCY": str(options.cap), "IMAGINE_JOB_LEASE": f"{LEASE:g}"}
    async with (
        ProviderProcess(options.latency, options.image_bytes) as provider,
        fresh_database(server) as database,
        _slack() as slack,
        replicas(2, folder, database, provider, slack, **settings) as bots,
        aiohttp.ClientSession() as http,
    ):
        db = await asyncpg.connect(database)
        try:
            await send_burst(KILL_JOBS, bots, slack, http)
            victim, survivor = bots
            dead = victim.worker_id()
            owners = "select distinct owner from jobs where status = 'running' and not settled"
            both = {victim.worker_id(), survivor.worker_id()}
            deadline = time.monotonic() + 60
            while {r["owner"] for r in await db.fetch(owners)} != both:
                if time.monotonic() > deadline:
                    raise RuntimeError("the two processes never both held jobs")
                await asyncio.sleep(0.05)
            await asyncio.sleep(options.latency / 2)  # mid-call
            victim.kill()
            killed = time.monotonic()
            await victim.process.wait()
            held = await db.fetch(
                "select id, status, lease_until from jobs where owner = $1 and not settled", dead
            )
            lease_left = max(r["lease_until"] for r in held) - time.time() if held else 0.0
            ids = [r["id"] for r in held]
            still = "select count(*) from jobs where id = any($1) and owner = $2 and not settled"
            while await db.fetchval(still, ids, dead):
                if time.monotonic() > killed + LEASE + 30:
                    break
                await asyncio.sleep(0.02)
            taken = time.monotonic() - killed
            await _until(lambda: len(images_per_thread(slack)) >= KILL_JOBS, 120)
            await asyncio.sleep(1.0)  # nothing else turns up late
            served = await stats(provider)
            per_thread = images_per_thread(slack)
        finally:
            await db.close()
    statuses = Counter(r["status"] for r in held)
    twice = sum(1 for n in per_thread.values() if n > 1)
    return [
        Row(
            "kill -9 of one of two processes mid-run: kill → all its jobs taken over",
            "≤ lease + 2 s",
            f"{taken:.2f} s (lease {LEASE:g} s; limit {LEASE + 2:g} s)",
            verdict(taken <= LEASE + 2),
            f"it held {len(held)} jobs ({dict(statuses)}); their leases lapsed {lease_left:.2f} s "
            f"after the kill (renewed every lease/3), the takeover came "
            f"{taken - lease_left:.2f} s later (`IMAGINE_JOB_POLL` 1 s); {KILL_JOBS} jobs, "
            f"{len(per_thread)} delivered, {twice} twice; provider served {served['served']} "
            f"calls (the dead one's cut-off calls are made again), peak {served['peak']}",
        )
    ]


@contextlib.asynccontextmanager
async def _slack() -> AsyncIterator[TimedSlack]:
    slack = TimedSlack()
    await slack.start()
    try:
        yield slack
    finally:
        await slack.close()


async def run(options: Options) -> list[Row]:
    try:
        with postgres_server() as server, tempfile.TemporaryDirectory() as name:
            folder = Path(name)
            (folder / "load").mkdir()
            (folder / "kill").mkdir()
            rows = await shared_load(options, server, folder / "load")
            return rows + await kill_one(options, server, folder / "kill")
    except PostgresUnavailable as missing:
        return [Row("two processes on PostgreSQL", "—", "—", Verdict.PENDING, str(missing))]
