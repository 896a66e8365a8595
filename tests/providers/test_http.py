"""The shared HTTP plumbing: whole-attempt deadlines, odd Retry-After values, request bodies
encoded exactly as httpx would (large ones in a worker process)."""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from aiohttp import web

from bot.errors import ProviderTimeout, RateLimited
from bot.models import Image, ImageRequest
from bot.providers import offload
from bot.providers.http import RetryPolicy, data_url, encode_json, make_client, request_json
from bot.providers.nexconn import NexconnProvider
from tests.fakes.loopback import loopback
from tests.fakes.nexconn_server import FakeNexconn, error_body
from tests.fakes.scripted_json_server import Reply
from tests.providers.support import FAST, Sleeps, within

KEY = "nx-test-key"
MODEL = "gemini-2.5-flash-image"


# --- a server that trickles its answer --------------------------------------------------------


@pytest.fixture
async def trickling() -> AsyncIterator[str]:
    """Answers 200 at once, then one byte every 50 ms for a minute: never idle long enough
    for a read timeout."""

    async def handler(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "application/json"})
        await response.prepare(request)
        await response.write(b"{")
        for _ in range(1200):
            await asyncio.sleep(0.05)
            await response.write(b" ")
        await response.write(b"}")
        return response

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", handler)
    async with loopback(app) as url:
        yield url


async def test_a_trickling_answer_times_out_as_a_whole(trickling: str) -> None:
    provider = NexconnProvider(
        KEY, trickling, policy=RetryPolicy(attempts=2, base_delay=0.01), timeout=0.5
    )
    started = time.monotonic()
    try:
        with pytest.raises(ProviderTimeout) as caught:
            await within(provider.generate(ImageRequest("a fox", "1:1", MODEL)), 20.0)
    finally:
        await provider.aclose()
    assert caught.value.user_message == ProviderTimeout().user_message
    assert time.monotonic() - started < 10.0  # two attempts of 0.5 s, not two of a minute


# --- Retry-After values no one can wait for -------------------------------------------------


@pytest.mark.parametrize("header", ["inf", "1e999", "-inf"])
async def test_a_retry_after_that_is_not_a_finite_number_is_ignored(header: str) -> None:
    server = FakeNexconn(KEY)
    await server.start()
    sleeps = Sleeps()
    provider = NexconnProvider(KEY, server.base_url, policy=FAST, sleep=sleeps)
    server.script(*[Reply(429, error_body("Rate limit"), headers={"Retry-After": header})] * 3)
    try:
        with pytest.raises(RateLimited) as caught:
            await within(provider.generate(ImageRequest("x", "1:1", MODEL)))
    finally:
        await provider.aclose()
        await server.close()
    assert caught.value.user_message == (
        "The image provider is rate limiting us. Please try again in a minute."
    )
    assert len(server.requests) == FAST.attempts  # retried with backoff, like no header
    assert len(sleeps.waits) == FAST.attempts - 1
    assert all(0 <= wait <= FAST.max_delay for wait in sleeps.waits)


# --- request bodies -------------------------------------------------------------------------


def httpx_bytes(body: Any) -> bytes:
    """What `httpx` would have sent for `json=body`."""
    return httpx.Request("POST", "http://x/", json=body).content


@pytest.mark.parametrize(
    "body",
    [
        {},
        [],
        {"prompt": 'a "quoted" \\ back\nslash \x00 ünï ✨', "n": 1, "f": 1.5, "b": True, "z": None},
        {"a": ["QUJD" * 10, ("t", ""), {"x": "="}]},
        {"k": "data:image/png;base64," + "A" * (offload.LARGE + 1), "after": "é"},
    ],
)
async def test_encode_json_sends_what_httpx_would(body: Any) -> None:
    assert await encode_json(body) == httpx_bytes(body)


@pytest.fixture
async def sink() -> AsyncIterator[tuple[str, list[list[bytes]], list[int]]]:
    """A server that keeps request bodies as the chunks they arrive in (joining 45 MB would
    stall the loop it shares with the client), and answers with the next status of its
    script (then 200)."""
    bodies: list[list[bytes]] = []
    statuses: list[int] = []

    async def handler(request: web.Request) -> web.Response:
        bodies.append([chunk async for chunk in request.content.iter_any()])
        status = statuses.pop(0) if statuses else 200
        return web.json_response({"ok": status == 200}, status=status)

    app = web.Application(client_max_size=128 * 1024 * 1024)
    app.router.add_post("/{tail:.*}", handler)
    async with loopback(app) as url:
        yield url, bodies, statuses


async def big_body(images: int, size: int) -> dict[str, Any]:
    pictures = [Image.of(b"\x89PNG\r\n\x1a\n" + os.urandom(size)) for _ in range(images)]
    parts = [{"type": "image_url", "image_url": {"url": await data_url(p)}} for p in pictures]
    return {"model": MODEL, "messages": [{"role": "user", "content": parts}], "n": 1}


async def test_a_streamed_body_is_sent_whole_again_on_a_retry(
    sink: tuple[str, list[list[bytes]], list[int]],
) -> None:
    base_url, bodies, statuses = sink
    body = await big_body(3, 300_000)
    statuses.append(500)
    client = make_client(base_url, {})
    try:
        answer = await within(
            request_json(client, "POST", "/chat", json_body=body, policy=FAST, sleep=Sleeps())
        )
    finally:
        await client.aclose()
    assert answer == {"ok": True}
    assert len(bodies) == 2
    assert b"".join(bodies[0]) == b"".join(bodies[1]) == httpx_bytes(body)
