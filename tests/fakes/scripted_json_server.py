"""A loopback JSON API server whose answers a test scripts, and which records every request.

Provider fakes subclass it: they say which paths exist, how a request is authenticated and
what a normal answer looks like; a test queues special answers (errors, delays, broken
bodies) with `script(...)` and reads what went over the wire from `requests`.
"""

from __future__ import annotations

import asyncio
import base64
import io
import json
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web
from PIL import Image as PILImage

from tests.fakes.loopback import serve


def png(color: tuple[int, int, int] = (255, 0, 0), size: tuple[int, int] = (8, 8)) -> bytes:
    """A real, small PNG of one colour."""
    buffer = io.BytesIO()
    PILImage.new("RGB", size, color).save(buffer, format="PNG")
    return buffer.getvalue()


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


@dataclass(frozen=True)
class Reply:
    """One canned answer: a JSON `body` (or `raw` bytes), a status, headers, a delay."""

    status: int = 200
    body: Any = None
    raw: bytes | None = None
    headers: Mapping[str, str] = field(default_factory=dict)
    delay: float = 0.0


@dataclass(frozen=True)
class Recorded:
    method: str
    path: str
    headers: Mapping[str, str]
    """Lower-case names."""
    json: Any
    raw: bytes


class ScriptedJsonServer:
    """Subclasses set `paths` and implement `authorized` and `default_reply`."""

    paths: frozenset[str] = frozenset()

    def __init__(self) -> None:
        self.requests: list[Recorded] = []
        self._script: deque[Reply] = deque()
        self._runner: web.AppRunner | None = None
        self.base_url = ""
        self._arrived = asyncio.Event()

    # --- scripting -------------------------------------------------------------------------

    def script(self, *replies: Reply) -> None:
        """Queue answers; once they are used up, `default_reply` answers."""
        self._script.extend(replies)

    def authorized(self, request: Recorded) -> bool:
        return True

    def unauthorized_reply(self) -> Reply:
        return Reply(401, {"error": {"message": "Unauthorized", "type": "invalid_request_error"}})

    def default_reply(self, request: Recorded) -> Reply:
        raise NotImplementedError

    async def wait_for_requests(self, count: int, timeout: float = 5.0) -> None:
        async with asyncio.timeout(timeout):
            while len(self.requests) < count:
                self._arrived.clear()
                await self._arrived.wait()

    # --- lifecycle -------------------------------------------------------------------------

    async def start(self) -> str:
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._runner, (self.base_url,) = await serve(app)
        return self.base_url

    async def close(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        raw = await request.read()
        try:
            parsed: Any = json.loads(raw) if raw else None
        except ValueError:
            parsed = None
        recorded = Recorded(
            method=request.method,
            path=request.path,
            headers={k.lower(): v for k, v in request.headers.items()},
            json=parsed,
            raw=raw,
        )
        self.requests.append(recorded)
        self._arrived.set()
        if request.path not in self.paths:
            reply = Reply(404, {"error": {"message": f"no route {request.path}", "code": 404}})
        elif self._script:
            reply = self._script.popleft()
        elif not self.authorized(recorded):
            reply = self.unauthorized_reply()
        else:
            reply = self.default_reply(recorded)
        if reply.delay:
            await asyncio.sleep(reply.delay)
        payload = reply.raw if reply.raw is not None else json.dumps(reply.body).encode()
        return web.Response(
            status=reply.status,
            body=payload,
            headers={"Content-Type": "application/json", **reply.headers},
        )
