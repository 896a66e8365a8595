"""The real bot process against fake Discord, fake Slack and a slow provider.

Three processes: this one hosts the Discord fake (REST + gateway, tests/fakes/discord_server)
and the Slack fake (Web API, tests/fakes/slack_server) and plays the users; the provider fake
(bench/fake_provider) runs in its own; the bot is `imagine-bot run` (bench/bot_process: the
same `bot.cli.main(["run"])` plus a 10 ms ticker) with a fresh SQLite file, reading only
its environment, like production. Discord goes through the gateway, Slack through signed HTTP
posts to the bot's own server (HTTP mode).

First one `/imagine` alone (end to end vs. a raw provider call), then
`jobs` `/imagine` commands from as many distinct users arrive evenly within 1 s, alternating
Discord and Slack. Measured from the fakes' side: ack latency (INTERACTION_CREATE sent →
defer callback received; HTTP POST → Slack's 200), makespan (first command → last image
upload: Discord's `@original` edit carrying the PNG, Slack's `files.completeUploadExternal`),
the bot's RSS (/proc/<pid>/status: VmHWM reset at idle) and its loop lag.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import aiohttp
from aiohttp import web
from slack_sdk.signature import SignatureVerifier

from bench import load
from bench.common import (
    LoopLag,
    Options,
    Row,
    Verdict,
    ms,
    percentile,
    proc_status,
    reset_peak_rss,
    verdict,
)
from bench.e2e import raw_call
from bench.fake_provider import API_KEY, ROOT, ProviderProcess, stats
from tests.fakes.discord_server import Call, FakeDiscord
from tests.fakes.slack_server import FakeSlack

SIGNING_SECRET = "bench-signing-secret"
PNG = b"\x89PNG\r\n\x1a\n"
ARRIVAL_WINDOW = 1.0
START_TIMEOUT = 60.0
_OWN_PREFIXES = ("IMAGINE_", "DISCORD_", "SLACK_", "NEXCONN_", "GMI_", "GEMINI_", "GOOGLE_API")


class TimedSlack(FakeSlack):
    """The Slack fake, noting when each upload completes and keeping only a file's signature
    (a few hundred 1.5 MB uploads would otherwise sit in this process's memory)."""

    def __init__(self) -> None:
        super().__init__()
        self.completed_at: list[float] = []
        self.upload_sizes: dict[str, int] = {}

    async def _upload(self, request: web.Request) -> web.Response:
        response = await super()._upload(request)
        file_id = request.match_info["file_id"]
        self.upload_sizes[file_id] = len(self.uploads[file_id])
        self.uploads[file_id] = self.uploads[file_id][:8]
        return response

    def _m_files_completeUploadExternal(self, params: dict[str, Any]) -> dict[str, Any]:
        answer = super()._m_files_completeUploadExternal(params)
        if answer.get("ok"):
            files = json.loads(params.get("files") or "[]")
            if any(self.uploads.get(f.get("id")) == PNG for f in files):
                self.completed_at.append(time.monotonic())
        return answer


@dataclass
class Sent:
    platform: str
    at: float
    ack: float | None = None
    """Seconds from sending to the acknowledgement."""


@dataclass
class Burst:
    sent: list[Sent] = field(default_factory=list)
    discord_tokens: dict[str, Sent] = field(default_factory=dict)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _is_image_edit(call: Call) -> bool:
    return call.method in ("PATCH", "POST") and any(f.data.startswith(PNG) for f in call.files)


class BotProcess:
    """`python -m bench.bot_process` with an environment pointing at the fakes."""

    def __init__(self, env: dict[str, str], folder: Path) -> None:
        base = {k: v for k, v in os.environ.items() if not k.startswith(_OWN_PREFIXES)}
        base.pop("DATABASE_URL", None)
        self.env = {**base, "PYTHONPATH": str(ROOT), **env}
        self.folder = folder
        self.log = folder / "bot.log"
        self.lag_file = folder / "lag.json"
        self.env["BENCH_LAG_FILE"] = str(self.lag_file)
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> int:
        with self.log.open("wb") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "bench.bot_process"],
                cwd=self.folder,
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    async def stop(self) -> int | None:
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        for _ in range(300):
            if self.proc.poll() is not None:
                break
            await asyncio.sleep(0.1)
        else:
            self.proc.kill()
        return self.proc.wait()

    def tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def lag(self) -> LoopLag:
        lag = LoopLag()
        with contextlib.suppress(OSError, ValueError):
            lag.samples = [(a, b) for a, b in json.loads(self.lag_file.read_text())]
        return lag


async def _until(predicate: Any, timeout: float, bot: BotProcess, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not await predicate():
        if not bot.alive():
            raise RuntimeError(f"the bot exited while {what}:\n{bot.tail()}")
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out {what}:\n{bot.tail()}")
        await asyncio.sleep(0.05)


async def run(options: Options) -> list[Row]:
    with tempfile.TemporaryDirectory(prefix="imagine-bench-") as name:
        folder = Path(name)
        async with ProviderProcess(options.latency, options.image_bytes) as provider_url:
            discord = await FakeDiscord().start()
            slack = TimedSlack()
            await slack.start()
            http = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0))
            try:
                return await _measure(options, folder, provider_url, discord, slack, http)
            finally:
                await http.close()
                await slack.close()
                await discord.close()


async def _measure(
    options: Options,
    folder: Path,
    provider_url: str,
    discord: FakeDiscord,
    slack: TimedSlack,
    http: aiohttp.ClientSession,
) -> list[Row]:
    port = _free_port()
    slack_url = f"http://127.0.0.1:{port}/slack/events"
    bot = BotProcess(
        {
            "NEXCONN_API_KEY": API_KEY,
            "NEXCONN_BASE_URL": provider_url,
            "IMAGINE_PROVIDER": "nexconn",
            "IMAGINE_CONCURRENCY": str(options.cap),
            "DATABASE_URL": f"sqlite:///{folder}/bot.db",
            "DISCORD_TOKEN": discord.token,
            "DISCORD_API_BASE": discord.api_base,
            "DISCORD_GATEWAY_URL": discord.gateway_url,
            "DISCORD_GUILD_IDS": str(discord.guild_id),
            "SLACK_BOT_TOKEN": slack.bot_token,
            "SLACK_SIGNING_SECRET": SIGNING_SECRET,
            "SLACK_API_BASE": slack.api_base,
            "SLACK_HTTP_HOST": "127.0.0.1",
            "SLACK_HTTP_PORT": str(port),
        },
        folder,
    )
    pid = bot.start()
    try:
        await _until(lambda: _ready(discord, http, port), START_TIMEOUT, bot, "starting")
        single = await _single_job(discord, provider_url)
        await asyncio.sleep(1.0)  # garbage settles; the idle baseline
        reset_peak_rss(pid)
        idle_kib = proc_status(pid, "VmRSS")

        before = len(discord.calls)
        burst = await _send_burst(options, discord, http, slack_url, slack.base_url)
        first = burst.sent[0].at
        expected_discord = len(burst.discord_tokens)
        expected_slack = len(burst.sent) - expected_discord

        def delivered() -> tuple[list[float], list[float]]:
            d = [c.at for c in discord.calls[before:] if _is_image_edit(c)]
            return d, list(slack.completed_at)

        async def all_delivered() -> bool:
            d, s = delivered()
            return len(d) >= expected_discord and len(s) >= expected_slack

        ideal = -(-options.jobs // options.cap) * options.latency
        try:
            await _until(all_delivered, ideal * 2 + 60, bot, "waiting for the images")
        except RuntimeError as exc:
            print(f"warning: {str(exc).splitlines()[0]}", file=sys.stderr)
        d_times, s_times = delivered()
        end = max(d_times + s_times, default=time.monotonic())
        peak_kib = proc_status(pid, "VmHWM")
        _collect_discord_acks(burst, discord)
        peak_in_flight = (await stats(provider_url))["peak"]
        rest_calls = len(discord.calls)
        slack_calls = len(slack.calls)
    finally:
        code = await bot.stop()
    if code not in (0, None):
        print(f"warning: the bot exited with {code}:\n{bot.tail()}", file=sys.stderr)

    rows = [_single_row(*single), *_ack_rows(burst)]
    failures = (
        f" (Discord {len(d_times)}/{expected_discord}, Slack {len(s_times)}/{expected_slack})"
    )
    rows += load.rows(
        options,
        len(d_times) + len(s_times),
        first,
        end,
        bot.lag(),
        idle_kib,
        peak_kib,
        peak_in_flight,
        "real process",
        failures,
    )
    return [
        *rows,
        Row(
            "platform API calls during the run (real process)",
            "—",
            f"Discord REST {rest_calls}, Slack Web API {slack_calls}",
            Verdict.INFO,
            "progress edits (queue position, elapsed) included",
        ),
    ]


async def _single_job(discord: FakeDiscord, provider_url: str) -> tuple[float, float]:
    """(end to end, raw): one Discord `/imagine` until its image is posted, alone, and one
    raw provider call from this process against the same fake."""
    raw = await raw_call(provider_url)
    payload = discord.slash(discord.user("solo"), "a red fox")
    start = len(discord.calls)
    sent = time.monotonic()
    await discord.dispatch("INTERACTION_CREATE", payload)
    call = await discord.wait_for(_is_image_edit, start=start, timeout=60 + 3 * raw)
    return call.at - sent, raw


def _single_row(e2e: float, raw: float) -> Row:
    limit = 1.05 * raw + 0.1
    return Row(
        "end-to-end of one job ÷ raw provider call (real process, Discord)",
        "≤ 1.05 + 100 ms",
        f"{e2e:.3f} s ÷ {raw:.3f} s = {e2e / raw:.3f} (overhead {(e2e - raw) * 1000:.0f} ms;"
        f" limit {limit:.3f} s)",
        verdict(e2e <= limit),
        "INTERACTION_CREATE sent → PNG posted to Discord, vs one `NexconnProvider.generate`",
    )


async def _ready(discord: FakeDiscord, http: aiohttp.ClientSession, port: int) -> bool:
    synced = any(c.method == "PUT" and c.path.endswith("/commands") for c in discord.calls)
    if not synced:
        return False
    try:
        async with http.get(f"http://127.0.0.1:{port}/healthz") as response:
            return response.status == 200
    except aiohttp.ClientError:
        return False


async def _send_burst(
    options: Options,
    discord: FakeDiscord,
    http: aiohttp.ClientSession,
    slack_url: str,
    slack_base: str,
) -> Burst:
    """`jobs` commands evenly over ARRIVAL_WINDOW, alternating Discord and Slack."""
    burst = Burst()
    posts: list[asyncio.Task[None]] = []
    verifier = SignatureVerifier(SIGNING_SECRET)
    start = time.monotonic()
    for n in range(options.jobs):
        await asyncio.sleep(max(0.0, start + n * ARRIVAL_WINDOW / options.jobs - time.monotonic()))
        prompt = f"a lighthouse at dusk #{n}"
        if n % 2 == 0:
            payload = discord.slash(discord.user(f"user{n}"), prompt)
            sent = Sent("discord", time.monotonic())
            burst.discord_tokens[payload["token"]] = sent
            await discord.dispatch("INTERACTION_CREATE", payload)
        else:
            sent = Sent("slack", time.monotonic())
            body = urlencode(_slack_command(n, prompt, slack_base))
            posts.append(asyncio.create_task(_post_slack(http, slack_url, body, verifier, sent)))
        burst.sent.append(sent)
    await asyncio.gather(*posts)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and not all(
        any(c.path.endswith(f"/{token}/callback") for c in discord.calls)
        for token in burst.discord_tokens
    ):
        await asyncio.sleep(0.05)
    return burst


def _slack_command(n: int, prompt: str, base: str) -> dict[str, str]:
    user = f"U{n:05d}"
    return {
        "token": "legacy",
        "team_id": FakeSlack.team_id,
        "team_domain": "bench",
        "channel_id": "C1",
        "channel_name": "general",
        "user_id": user,
        "user_name": user.lower(),
        "command": "/imagine",
        "text": prompt,
        "api_app_id": "A1",
        "response_url": f"{base}/response/r{n}",
        "trigger_id": f"t.{n}",
    }


async def _post_slack(
    http: aiohttp.ClientSession,
    url: str,
    body: str,
    verifier: SignatureVerifier,
    sent: Sent,
) -> None:
    stamp = str(int(time.time()))
    headers = {
        "Content-Type": "application/x-www-form-urlencoded",
        "X-Slack-Request-Timestamp": stamp,
        "X-Slack-Signature": verifier.generate_signature(timestamp=stamp, body=body) or "",
    }
    async with http.post(url, data=body.encode(), headers=headers) as response:
        await response.read()
        if response.status == 200:
            sent.ack = time.monotonic() - sent.at


def _collect_discord_acks(burst: Burst, discord: FakeDiscord) -> None:
    for call in discord.calls:
        if call.method == "POST" and call.path.endswith("/callback"):
            token = call.path.split("/")[-2]
            sent = burst.discord_tokens.get(token)
            if sent is not None and sent.ack is None:
                sent.ack = call.at - sent.at


def _ack_rows(burst: Burst) -> list[Row]:
    rows = []
    for platform, what in (("discord", "Discord defer callback"), ("slack", "Slack HTTP ack")):
        sent = [s for s in burst.sent if s.platform == platform]
        acks = [s.ack for s in sent if s.ack is not None]
        if not acks:
            rows.append(
                Row(f"ack latency, {what}", "p99 < 250 ms, max < 1 s", "no acks", Verdict.MISSED)
            )
            continue
        p99, worst = percentile(acks, 99), max(acks)
        missing = len(sent) - len(acks)
        rows.append(
            Row(
                f"ack latency, {what}",
                "p99 < 250 ms, max < 1 s",
                f"p50 {ms(percentile(acks, 50))}, p99 {ms(p99)}, max {ms(worst)} "
                f"({len(acks)} commands)",
                verdict(p99 < 0.25 and worst < 1.0 and not missing),
                f"real process; {len(burst.sent)} commands within 1 s, Discord and Slack "
                "alternating" + (f"; {missing} never acknowledged" if missing else ""),
            )
        )
    return rows
