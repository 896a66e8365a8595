"""Metrics and health as an operator sees them: a real `imagine-bot run` process, scraped
over HTTP and parsed with prometheus-client's own parser."""

from __future__ import annotations

import asyncio
import io
import re
import signal
import sys
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import aiohttp
import httpx
import pytest
from PIL import Image as PILImage
from prometheus_client.parser import text_string_to_metric_families

from bot import metrics
from bot.config import load_settings
from bot.providers.http import RetryPolicy, request_json
from tests.adapters.discord.conftest import is_original_edit
from tests.adapters.slack.conftest import SECRET
from tests.conftest import bot_env
from tests.fakes.discord_server import FakeDiscord
from tests.fakes.slack_server import FakeSlack
from tests.test_process import free_port, wait_until_listening

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


@pytest.fixture
async def discord() -> AsyncIterator[FakeDiscord]:
    fake = await FakeDiscord().start()
    yield fake
    await fake.close()


async def get(port: int, path: str) -> tuple[int, str]:
    async with (
        aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as http,
        http.get(f"http://127.0.0.1:{port}{path}") as response,
    ):
        return response.status, await response.text()


async def scrape(port: int) -> Samples:
    status, text = await get(port, "/metrics")
    assert status == 200
    samples: Samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


async def eventually(check: Callable[[], object], timeout: float = 30.0) -> None:
    async with asyncio.timeout(timeout):
        while not await check():  # type: ignore[misc]
            await asyncio.sleep(0.1)


async def stop(process: asyncio.subprocess.Process) -> str:
    if process.returncode is None:
        process.send_signal(signal.SIGTERM)
    _, stderr = await asyncio.wait_for(process.communicate(), 30)
    return stderr.decode()


async def test_discord_process_serves_metrics_health_and_readiness(
    discord: FakeDiscord, tmp_path: Path
) -> None:
    port = free_port()
    env = bot_env(
        tmp_path,
        **discord.bot_settings(),
        IMAGINE_METRICS_PORT=str(port),
    )
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "bot", "run", env=env, cwd=tmp_path, stderr=asyncio.subprocess.PIPE
    )
    try:
        await wait_until_listening(port, process)
        assert await get(port, "/healthz") == (200, "ok\n")

        async def ready() -> bool:
            return (await get(port, "/readyz"))[0] == 200

        await eventually(ready)
        before = await scrape(port)
        assert value(before, "imagine_queue_depth") == 0

        payload = discord.slash(discord.user("alice"), "a heron in the fog")
        await discord.dispatch("INTERACTION_CREATE", payload)
        posted = await discord.wait_for(
            is_original_edit(payload["token"], with_file=True), timeout=30
        )
        assert PILImage.open(io.BytesIO(posted.files[0].data)).format == "PNG"

        async def counted() -> bool:
            return value(await scrape(port), "imagine_jobs_total", outcome="done") == 1

        await eventually(counted, timeout=10)
        after = await scrape(port)
        assert value(after, "imagine_images_total", provider="demo") == 1
        assert value(after, "imagine_estimated_cost_usd_total", provider="demo") == pytest.approx(
            0.039
        )
        assert value(after, "imagine_job_duration_seconds_count", outcome="done") == 1
        assert (
            value(
                after, "imagine_provider_call_duration_seconds_count", provider="demo", outcome="ok"
            )
            == 1
        )
        assert value(after, "imagine_ack_latency_seconds_count", platform="discord") == 1
        assert value(after, "imagine_jobs_running") == 0
        # no user, thread or job ids in any label
        assert all(
            "alice" not in str(labels) and payload["id"] not in str(labels) for _, labels in after
        )

        await discord.close()  # the gateway goes away

        async def not_ready() -> bool:
            status, body = await get(port, "/readyz")
            return status == 503 and "discord" in body

        await eventually(not_ready, timeout=20)
        status, body = await get(port, "/readyz")
        assert (
            status == 503 and "store" not in body
        )  # the store still answers; only Discord is named
        assert (await get(port, "/healthz"))[0] == 200
    finally:
        log = await stop(process)
    assert process.returncode == 0, log
    assert discord.token not in log


async def test_slack_http_mode_keeps_its_healthz_and_serves_readyz(
    slack: FakeSlack, tmp_path: Path
) -> None:
    slack_port, port = free_port(), free_port()
    env = bot_env(
        tmp_path,
        SLACK_BOT_TOKEN=slack.bot_token,
        SLACK_SIGNING_SECRET=SECRET,
        SLACK_API_BASE=slack.api_base,
        SLACK_HTTP_HOST="127.0.0.1",
        SLACK_HTTP_PORT=str(slack_port),
        IMAGINE_METRICS_PORT=str(port),
        IMAGINE_METRICS_HOST="127.0.0.1",
    )
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "bot", "run", env=env, cwd=tmp_path, stderr=asyncio.subprocess.PIPE
    )
    try:
        await wait_until_listening(slack_port, process)
        assert (await get(slack_port, "/healthz"))[0] == 200
        assert await get(port, "/readyz") == (200, "ready\n")
        samples = await scrape(port)
        assert ("imagine_queue_depth", ()) in samples
    finally:
        log = await stop(process)
    assert process.returncode == 0, log


def test_metrics_settings_default_to_no_listener_on_loopback() -> None:
    assert load_settings(IMAGINE_METRICS_PORT="").metrics_port is None
    settings = load_settings(IMAGINE_METRICS_PORT="9100")
    assert (settings.metrics_port, settings.metrics_host) == (9100, "127.0.0.1")


async def test_provider_retries_are_counted_by_reason() -> None:
    answers = iter([httpx.Response(503), httpx.Response(429), httpx.Response(200, json={})])
    client = httpx.AsyncClient(transport=httpx.MockTransport(lambda request: next(answers)))

    async def no_wait(seconds: float) -> None:
        return None

    def count(reason: str) -> float:
        sample = metrics.REGISTRY.get_sample_value(
            "imagine_provider_retries_total", {"reason": reason}
        )
        return sample or 0.0

    server_errors, rate_limits = count("server_error"), count("rate_limited")
    async with client:
        assert (
            await request_json(
                client, "GET", "http://provider.test/x", policy=RetryPolicy(), sleep=no_wait
            )
            == {}
        )
    assert count("server_error") == server_errors + 1
    assert count("rate_limited") == rate_limits + 1


def test_every_metric_is_documented_in_the_readme() -> None:
    """An operator reads the README's table to build dashboards: nothing exported is missing."""
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    documented = set(re.findall(r"^\| `(imagine_[a-z_]+)`", readme, re.MULTILINE))
    exported = {
        family.name + ("_total" if family.type == "counter" else "")
        for family in metrics.REGISTRY.collect()
    }
    assert exported - documented == set()
