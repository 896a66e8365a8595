"""The loopback Nexconn fake (tests/fakes/nexconn_server.py) with latency and a big image.

Every answer waits `latency` seconds and carries one noise PNG of `image_bytes` bytes, as
Nexconn's `/v1/images/generations` and `/v1/chat/completions` answers do. The JSON bodies are
encoded once at start, so serving 200 answers costs the fake almost nothing. It also counts
the requests in flight (`GET /bench/stats`), which is how many jobs the bot really runs at once.

Run alone (the benchmarks start it in its own process, away from the process measured):
`python -m bench.fake_provider --latency 5 --image-bytes 1500000` prints its base URL on the
first line of stdout and serves until stdin closes.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from aiohttp import web

from bench.common import noise_png
from tests.fakes.nexconn_server import CHAT, FakeNexconn, chat_answer, images_answer
from tests.fakes.scripted_json_server import Recorded, Reply

API_KEY = "bench-nexconn-key"
STATS = "/bench/stats"
ROOT = Path(__file__).resolve().parent.parent


class SlowNexconn(FakeNexconn):
    def __init__(self, latency: float, image_bytes: int) -> None:
        super().__init__(API_KEY)
        self.latency = latency
        self.image = noise_png(image_bytes)
        self._chat = json.dumps(chat_answer(self.image)).encode()
        self._images = json.dumps(images_answer(self.image)).encode()
        self.in_flight = 0
        self.peak_in_flight = 0
        self.served = 0

    def default_reply(self, request: Recorded) -> Reply:
        raw = self._chat if request.path == CHAT else self._images
        return Reply(200, raw=raw, delay=self.latency)

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        if request.path == STATS:
            return web.json_response(self.stats())
        self.in_flight += 1
        self.peak_in_flight = max(self.peak_in_flight, self.in_flight)
        try:
            return await super()._handle(request)
        finally:
            self.in_flight -= 1
            self.served += 1
            self.requests.clear()  # keep memory flat over hundreds of requests

    def stats(self) -> dict[str, Any]:
        return {"served": self.served, "in_flight": self.in_flight, "peak": self.peak_in_flight}


class ProviderProcess:
    """`async with ProviderProcess(latency, size) as url:` — the fake in a child process."""

    def __init__(self, latency: float, image_bytes: int) -> None:
        self.args = [
            sys.executable,
            "-m",
            "bench.fake_provider",
            f"--latency={latency}",
            f"--image-bytes={image_bytes}",
        ]
        self.proc: asyncio.subprocess.Process | None = None
        self.url = ""

    async def __aenter__(self) -> str:
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        self.proc = await asyncio.create_subprocess_exec(
            *self.args,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            cwd=ROOT,
            env=env,
        )
        assert self.proc.stdout is not None
        line = await asyncio.wait_for(self.proc.stdout.readline(), 30)
        self.url = line.decode().strip()
        if not self.url.startswith("http"):
            raise RuntimeError(f"fake provider did not start: {line!r}")
        return self.url

    async def __aexit__(self, *exc: object) -> None:
        if self.proc is None:
            return
        assert self.proc.stdin is not None
        self.proc.stdin.close()
        try:
            await asyncio.wait_for(self.proc.wait(), 10)
        except TimeoutError:
            self.proc.kill()
            await self.proc.wait()


async def stats(url: str) -> dict[str, Any]:
    import httpx

    async with httpx.AsyncClient() as client:
        return (await client.get(url + STATS)).json()


async def _serve(latency: float, image_bytes: int) -> None:
    fake = SlowNexconn(latency, image_bytes)
    url = await fake.start()
    print(url, flush=True)
    loop = asyncio.get_running_loop()
    await loop.run_in_executor(None, sys.stdin.read)  # until the parent closes our stdin
    await fake.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--latency", type=float, default=5.0)
    parser.add_argument("--image-bytes", type=int, default=1_500_000)
    args = parser.parse_args()
    asyncio.run(_serve(args.latency, args.image_bytes))


if __name__ == "__main__":
    main()
