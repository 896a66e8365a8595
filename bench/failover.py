"""One failover: the first provider down, the second answers. What does it cost?

`IMAGINE_PROVIDER=nexconn,gemini` with Nexconn answering 503 to everything and Gemini
answering after `latency` seconds with a noise PNG of the benchmark's image size, both on
loopback. Measured with the real providers and their default retry policies:

- the second provider alone (the baseline);
- the first job after the outage began: Nexconn's retries with backoff, then Gemini;
- the jobs after that, with Nexconn's breaker open: straight to Gemini. The goal is about
  these: at most 1 s over the baseline.
"""

from __future__ import annotations

import statistics
import time
from typing import Any

from bench.common import Options, Row, Verdict, noise_png, verdict
from bot.models import ImageRequest
from bot.providers.failover import FailoverProvider
from bot.providers.gemini import GeminiProvider
from bot.providers.nexconn import NexconnProvider
from tests.fakes.gemini_server import FakeGemini, answer, image_part
from tests.fakes.nexconn_server import FakeNexconn, error_body
from tests.fakes.scripted_json_server import Recorded, Reply

RUNS = 3
REQUEST = ImageRequest(prompt="a lighthouse", aspect_ratio="1:1", model="gemini-2.5-flash-image")


class DownNexconn(FakeNexconn):
    def default_reply(self, request: Recorded) -> Reply:
        return Reply(503, error_body("upstream unavailable", "server_error"))


class SlowGemini(FakeGemini):
    def __init__(self, latency: float, image: bytes) -> None:
        super().__init__("bench-gemini-key")
        self.latency = latency
        self.body = answer([image_part(image)])

    def default_reply(self, request: Recorded) -> Reply:
        return Reply(200, self.body, delay=self.latency)


async def _timed(provider: Any) -> float:
    started = time.perf_counter()
    result = await provider.generate(REQUEST)
    assert result.images
    return time.perf_counter() - started


async def run(options: Options) -> list[Row]:
    down = DownNexconn("bench-nexconn-key")
    second = SlowGemini(options.latency, noise_png(options.image_bytes))
    await down.start()
    await second.start()
    alone = GeminiProvider("bench-gemini-key", second.base_url)
    failover = FailoverProvider(
        [
            NexconnProvider("bench-nexconn-key", down.base_url),
            GeminiProvider("bench-gemini-key", second.base_url),
        ]
    )
    try:
        await _timed(alone)  # warm: connections and the decode pool, as in a running bot
        baseline = [await _timed(alone) for _ in range(RUNS)]
        first = await _timed(failover)  # trips Nexconn's breaker
        tried_first = len(down.requests)
        opened = [await _timed(failover) for _ in range(RUNS)]
        skipped = len(down.requests) == tried_first
    finally:
        await alone.aclose()
        await failover.aclose()
        await down.close()
        await second.close()
    base = statistics.median(baseline)
    extra = statistics.median(opened) - base
    return [
        Row(
            "one failover (first provider down, second answers): extra latency over the "
            "second alone, breaker open",
            "≤ 1 s",
            f"{extra * 1000:+.0f} ms ({statistics.median(opened):.3f} s vs {base:.3f} s, "
            f"median of {RUNS})",
            verdict(extra <= 1.0 and skipped),
            f"real NexconnProvider (503 to everything) then GeminiProvider ({options.latency:g} s, "
            f"{options.image_mb:g} MB image) on loopback; the open breaker sent "
            f"{'no' if skipped else 'some'} request to the first provider",
        ),
        Row(
            "the first job of the outage (breaker still closed)",
            "—",
            f"{first:.3f} s ({first - base:+.3f} s over the second alone)",
            Verdict.INFO,
            f"the first provider's {tried_first} tries with backoff (its default retry "
            "policy), then the second; later jobs skip it",
        ),
    ]
