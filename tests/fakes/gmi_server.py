"""A fake GMI Cloud request queue on loopback, speaking the documented protocol.

Two origins, like the real service: the API (`/api/v1/ie/requestqueue/apikey/…`, Bearer key
required) and "cloud storage" on a second port (upload targets, public URLs and generated
media, no key). Each submitted request follows a scripted list of statuses, one per poll; on
success it serves real PNGs made by Pillow and a `next_turn_contents` built from the request,
so multi-turn conversations grow like GMI's. Every request is recorded.
"""

from __future__ import annotations

import asyncio
import io
import json
import uuid
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web
from PIL import Image as PILImage

from tests.fakes.loopback import serve

PREFIX = "/api/v1/ie/requestqueue/apikey"
API_KEY = "gmi-test-key"


def make_png(seed: int, size: tuple[int, int] = (64, 48)) -> bytes:
    """A small, real PNG whose colour depends on `seed`."""
    colour = ((seed * 97) % 256, (seed * 57 + 80) % 256, (seed * 31 + 160) % 256)
    buffer = io.BytesIO()
    PILImage.new("RGB", size, colour).save(buffer, format="PNG")
    return buffer.getvalue()


@dataclass
class Script:
    """How one submitted request behaves.

    `statuses` are answered on successive polls (the last one repeats). With `ready_at` and a
    server clock, the request is `processing` until the clock reaches it, then `success`.
    """

    statuses: list[str] = field(default_factory=lambda: ["queued", "processing", "success"])
    submit_status: str = "queued"
    images: int = 1
    failure: dict[str, Any] = field(default_factory=dict)
    """Fields merged into a `failed` answer, e.g. `{"outcome": {"error": "…"}}`."""
    media_body: bytes | None = None
    media_type: str = "image/png"
    with_media: bool = True
    model_text: str = "Here is the generated image."
    ready_at: float | None = None


@dataclass
class Recorded:
    method: str
    path: str
    port: int
    headers: dict[str, str]
    json: Any
    body: bytes


@dataclass
class _Job:
    id: str
    script: Script
    payload: dict[str, Any]
    model: str = "gemini-2.5-flash-image"
    polls: int = 0
    poll_times: list[float] = field(default_factory=list)
    """The server clock at each status poll (when the fake has a clock)."""
    outcome: dict[str, Any] | None = None


@dataclass
class _Fault:
    status: int
    body: str
    headers: dict[str, str]


class FakeGmi:
    def __init__(self, clock: Callable[[], float] | None = None) -> None:
        self.clock = clock
        self.requests: list[Recorded] = []
        self.scripts: deque[Script] = deque()
        self.jobs: dict[str, _Job] = {}
        self.media: dict[str, bytes] = {}
        self.uploads: dict[str, bytes] = {}
        self.faults: dict[str, deque[_Fault]] = {}
        self.api_port = 0
        self.storage_port = 0
        self._runner: web.AppRunner | None = None
        self._seed = 0
        self.media_drip = 0.0
        """When set, media are sent a byte at a time, this many seconds apart."""

        app = web.Application(middlewares=[self._record], client_max_size=64 * 1024 * 1024)
        app.router.add_post(f"{PREFIX}/requests", self._submit)
        app.router.add_get(f"{PREFIX}/requests/{{id}}", self._status)
        app.router.add_post(f"{PREFIX}/upload-url", self._upload_url)
        app.router.add_put("/upload/{key}", self._upload)
        app.router.add_get("/public/{key}", self._public)
        app.router.add_get("/media/{name}", self._media)
        self.app = app

    # --- lifecycle ------------------------------------------------------------------------

    async def start(self) -> FakeGmi:
        self._runner, (api, storage) = await serve(self.app, sites=2)
        self.api_port = int(api.rsplit(":", 1)[1])
        self.storage_port = int(storage.rsplit(":", 1)[1])
        return self

    async def close(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.api_port}"

    @property
    def storage_url(self) -> str:
        return f"http://127.0.0.1:{self.storage_port}"

    # --- scripting ------------------------------------------------------------------------

    def script(self, *statuses: str, **options: Any) -> Script:
        """Script the next submitted request (scripts are used in order)."""
        script = Script(statuses=list(statuses), **options) if statuses else Script(**options)
        self.scripts.append(script)
        return script

    def fail(
        self,
        route: str,
        status: int,
        body: Any = None,
        *,
        headers: dict[str, str] | None = None,
        times: int = 1,
    ) -> None:
        """Answer the next `times` calls to `route` ("submit", "status", "upload-url") with an
        error (or any canned answer); a `str` body is sent as is, anything else as JSON."""
        text = body if isinstance(body, str) else json.dumps(body if body is not None else {})
        queue = self.faults.setdefault(route, deque())
        for _ in range(times):
            queue.append(_Fault(status, text, headers or {}))

    # --- what happened --------------------------------------------------------------------

    def calls(self, method: str, path_prefix: str = "") -> list[Recorded]:
        return [r for r in self.requests if r.method == method and r.path.startswith(path_prefix)]

    @property
    def submits(self) -> list[Recorded]:
        return self.calls("POST", f"{PREFIX}/requests")

    @property
    def polls(self) -> list[Recorded]:
        return self.calls("GET", f"{PREFIX}/requests/")

    # --- handlers -------------------------------------------------------------------------

    @web.middleware
    async def _record(self, request: web.Request, handler: Any) -> web.StreamResponse:
        body = await request.read()
        try:
            parsed = json.loads(body) if body else None
        except ValueError:
            parsed = None
        port = request.transport.get_extra_info("sockname")[1] if request.transport else 0
        self.requests.append(
            Recorded(request.method, request.path, port, dict(request.headers), parsed, body)
        )
        if request.path.startswith(PREFIX):
            if port != self.api_port:
                return web.json_response({"error": "wrong host"}, status=404)
            if request.headers.get("Authorization") != f"Bearer {API_KEY}":
                return web.json_response({"error": "invalid api key"}, status=401)
        result: web.StreamResponse = await handler(request)
        return result

    def _fault(self, route: str) -> web.Response | None:
        queue = self.faults.get(route)
        if not queue:
            return None
        fault = queue.popleft()
        return web.Response(
            status=fault.status,
            text=fault.body,
            headers={"Content-Type": "application/json", **fault.headers},
        )

    async def _submit(self, request: web.Request) -> web.Response:
        if (fault := self._fault("submit")) is not None:
            return fault
        body = await request.json()
        payload = body.get("payload")
        if not isinstance(payload, dict) or not (payload.get("prompt") or payload.get("contents")):
            return web.json_response({"error": "payload.prompt is required"}, status=400)
        job = _Job(
            id=str(uuid.uuid4()),
            script=self.scripts.popleft() if self.scripts else Script(),
            payload=payload,
            model=str(body.get("model")),
        )
        self.jobs[job.id] = job
        answer = {"request_id": job.id, "model": body.get("model"), "status": "queued"}
        if job.script.submit_status != "queued":
            answer.update(self._answer(job, job.script.submit_status))
        return web.json_response(answer)

    async def _status(self, request: web.Request) -> web.Response:
        if (fault := self._fault("status")) is not None:
            return fault
        job = self.jobs.get(request.match_info["id"])
        if job is None:
            return web.json_response({"error": "request not found"}, status=404)
        job.polls += 1
        if self.clock is not None:
            job.poll_times.append(self.clock())
        if job.script.ready_at is not None and self.clock is not None:
            status = "success" if self.clock() >= job.script.ready_at else "processing"
        else:
            statuses = job.script.statuses
            status = statuses[min(job.polls, len(statuses)) - 1]
        return web.json_response(self._answer(job, status))

    def _answer(self, job: _Job, status: str) -> dict[str, Any]:
        answer: dict[str, Any] = {
            "request_id": job.id,
            "model": job.model,
            "status": status,
            "payload": job.payload,
            "created_at": 1761763441,
            "updated_at": 1761763451,
            "queued_at": 1761763441,
        }
        if status == "success":
            answer["outcome"] = self._outcome(job)
        elif status == "failed":
            answer.update(job.script.failure)
        return answer

    def _outcome(self, job: _Job) -> dict[str, Any]:
        if job.outcome is not None:
            return job.outcome
        script = job.script
        names = []
        for index in range(script.images if script.with_media else 0):
            self._seed += 1
            name = f"{job.id}-{index}.png"
            self.media[name] = (
                script.media_body if script.media_body is not None else make_png(self._seed)
            )
            names.append(name)
        model_parts: list[dict[str, Any]] = [{"text": script.model_text}]
        model_parts += [
            {"fileData": {"mimeType": "image/png", "fileUri": f"gs://gmi-bucket/{name}"}}
            for name in names
        ]
        history = _filled(job.payload.get("contents")) or [_first_turn(job.payload)]
        job.outcome = {
            "media_urls": [
                {"id": str(i), "url": f"{self.storage_url}/media/{name}"}
                for i, name in enumerate(names)
            ],
            "next_turn_contents": [
                *history,
                {"role": "model", "parts": model_parts},
                {
                    "role": "user",
                    "parts": [{"text": ""}, {"fileData": {"mimeType": "image/png", "fileUri": ""}}],
                },
            ],
        }
        if not script.with_media:
            del job.outcome["media_urls"]
        return job.outcome

    async def _upload_url(self, request: web.Request) -> web.Response:
        if (fault := self._fault("upload-url")) is not None:
            return fault
        body = await request.json()
        key = f"{uuid.uuid4().hex}.{body.get('file_type', 'png')}"
        return web.json_response(
            {
                "upload_url": f"{self.storage_url}/upload/{key}?X-Goog-Signature=abc",
                "public_url": f"{self.storage_url}/public/{key}",
            }
        )

    async def _upload(self, request: web.Request) -> web.Response:
        self.uploads[request.match_info["key"]] = await request.read()
        return web.Response(status=200)

    async def _public(self, request: web.Request) -> web.Response:
        data = self.uploads.get(request.match_info["key"])
        if data is None:
            return web.Response(status=404, text="<Error>NoSuchKey</Error>")
        return web.Response(body=data, content_type="application/octet-stream")

    async def _media(self, request: web.Request) -> web.Response:
        data = self.media.get(request.match_info["name"])
        if data is None:
            return web.Response(status=404, text="<Error>NoSuchKey</Error>")
        if data.lstrip().startswith(b"<"):
            return web.Response(body=data, content_type="text/html")
        if self.media_drip:
            return await self._trickle(request, data)
        return web.Response(body=data, content_type="image/png")

    async def _trickle(self, request: web.Request, data: bytes) -> web.StreamResponse:
        """A storage host that never pauses long enough for a read timeout, yet takes ages."""
        response = web.StreamResponse(headers={"Content-Type": "image/png"})
        await response.prepare(request)
        for byte in data:
            await asyncio.sleep(self.media_drip)
            await response.write(bytes([byte]))
        await response.write_eof()
        return response


def _first_turn(payload: dict[str, Any]) -> dict[str, Any]:
    parts: list[dict[str, Any]] = [{"text": payload.get("prompt", "")}]
    images = payload.get("image") or []
    for url in [images] if isinstance(images, str) else images:
        parts.append({"fileData": {"mimeType": "image/png", "fileUri": url}})
    return {"role": "user", "parts": parts}


def _filled(contents: Any) -> list[dict[str, Any]]:
    """The request's contents without the empty parts GMI ignores."""
    if not isinstance(contents, list):
        return []
    turns = []
    for turn in contents:
        parts = [
            p
            for p in turn.get("parts", [])
            if not ("text" in p and not p["text"])
            and not ("fileData" in p and not p["fileData"].get("fileUri"))
        ]
        if parts:
            turns.append({"role": turn.get("role"), "parts": parts})
    return turns
