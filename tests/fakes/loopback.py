"""Serving an aiohttp app on 127.0.0.1 at free ports: what every fake server does."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

from aiohttp import web


async def serve(app: web.Application, *, sites: int = 1) -> tuple[web.AppRunner, list[str]]:
    """Start `app` on `sites` free loopback ports; the caller cleans the runner up."""
    runner = web.AppRunner(app, handler_cancellation=True, shutdown_timeout=1.0)
    await runner.setup()
    for _ in range(sites):
        await web.TCPSite(runner, "127.0.0.1", 0).start()
    return runner, [f"http://127.0.0.1:{address[1]}" for address in runner.addresses]


@contextlib.asynccontextmanager
async def loopback(app: web.Application) -> AsyncIterator[str]:
    """`app` served on one free loopback port for the block; yields its base URL."""
    runner, (url,) = await serve(app)
    try:
        yield url
    finally:
        await runner.cleanup()
