"""The operator's listener (`IMAGINE_METRICS_PORT`): `/metrics`, `/healthz`, `/readyz`.

One small aiohttp server in every mode of `imagine-bot run`:

- `GET /metrics`: Prometheus text from `bot.metrics.REGISTRY` (`generate_latest`); the
  queue depth is read from the store at scrape time.
- `GET /healthz`: 200 while the process answers.
- `GET /readyz`: 200 only when the store answers a trivial query and every configured
  platform is connected; else 503 with one line per check that is not (`discord: not
  connected`, `store: …`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from bot import metrics
from bot.config import Settings, StartupError
from bot.models import JobStatus
from bot.store import Store

log = logging.getLogger(__name__)

CHECK_TIMEOUT = 2.0
"""Seconds one readiness check (or the scrape's queue read) may take."""

ReadyCheck = tuple[str, Callable[[], Awaitable[bool]]]
"""A name shown when it fails (`discord`, `slack`) and a check that says whether it is up."""


class HealthServer:
    def __init__(self, store: Store, host: str, port: int) -> None:
        self.store = store
        self.host = host
        self.port = port
        self.checks: list[ReadyCheck] = []
        self._runner: web.AppRunner | None = None

    def watch(self, checks: Sequence[ReadyCheck]) -> None:
        """Platforms `/readyz` waits for (added as the adapters are built)."""
        self.checks.extend(checks)

    async def start(self) -> None:
        app = web.Application()
        app.router.add_get("/metrics", self._metrics)
        app.router.add_get("/healthz", self._healthz)
        app.router.add_get("/readyz", self._readyz)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        try:
            await web.TCPSite(runner, self.host, self.port).start()
        except OSError as exc:
            await runner.cleanup()
            raise StartupError(
                f"IMAGINE_METRICS_PORT: cannot listen on {self.host}:{self.port} ({exc.strerror})"
            ) from None
        self._runner = runner
        addresses = runner.addresses
        if addresses:
            self.port = int(addresses[0][1])
        log.info("metrics and health on http://%s:%s/metrics", self.host, self.port)

    async def close(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    # --- handlers ---------------------------------------------------------------------------

    async def _metrics(self, request: web.Request) -> web.Response:
        try:
            async with asyncio.timeout(CHECK_TIMEOUT):
                view = await self.store.queue_view()
            metrics.QUEUE_DEPTH.set(
                sum(1 for entry in view.entries if entry.status is JobStatus.QUEUED)
            )
        except Exception:
            log.warning("reading the queue depth for /metrics failed", exc_info=True)
        body = generate_latest(metrics.REGISTRY)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def _healthz(self, request: web.Request) -> web.Response:
        return web.Response(text="ok\n")

    async def _readyz(self, request: web.Request) -> web.Response:
        problems = [p for p in await asyncio.gather(self._store(), *map(_check, self.checks)) if p]
        if problems:
            return web.Response(status=503, text="".join(f"{p}\n" for p in problems))
        return web.Response(text="ready\n")

    async def _store(self) -> str | None:
        try:
            async with asyncio.timeout(CHECK_TIMEOUT):
                await self.store.get_state("readyz")
        except TimeoutError:
            return f"store: no answer in {CHECK_TIMEOUT:g} s"
        except Exception as exc:
            return f"store: {type(exc).__name__}"
        return None


async def _check(check: ReadyCheck) -> str | None:
    name, ready = check
    try:
        async with asyncio.timeout(CHECK_TIMEOUT):
            if await ready():
                return None
    except Exception as exc:
        return f"{name}: {type(exc).__name__}"
    return f"{name}: not connected"


@contextlib.asynccontextmanager
async def open_health(settings: Settings, store: Store) -> AsyncIterator[HealthServer]:
    """The listener while the block runs, when `IMAGINE_METRICS_PORT` is set (else an
    unstarted server whose `watch` does nothing useful, so callers need no branch)."""
    server = HealthServer(store, settings.metrics_host, settings.metrics_port or 0)
    if settings.metrics_port is None:
        yield server
        return
    await server.start()
    try:
        yield server
    finally:
        await server.close()
