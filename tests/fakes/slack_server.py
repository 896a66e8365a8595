"""A fake Slack on loopback: the Web API, file upload/download and Socket Mode.

The real `slack_sdk.AsyncWebClient` talks to it (`base_url=fake.api_base`, trailing slash
included) and the real Bolt app receives what a test pushes through its Socket Mode
websocket. Everything that arrives is recorded; tests wait on the records, with timeouts.

- Web API `POST` (or `GET`) `/api/<method>`: `auth.test`, `chat.postMessage` / `update` / `delete` /
  `postEphemeral`, `views.open`, `files.getUploadURLExternal` (the upload URL points back
  here), `files.completeUploadExternal`, `files.delete`, `files.info`,
  `apps.connections.open` (needs the `xapp-` token), `users.info` (workspace admins in
  `admins`; `users_read_scope = False` answers `missing_scope`), `conversations.open` (a DM
  is `D` + the user id). Bot methods need `Bearer xoxb-…`.
- `POST /upload/<file_id>`: the bytes of `files_upload_v2`.
- `GET /files-pri/<team>-<id>/<name>`: a file's `url_private`. Without the bot token — or
  with `files_read_scope = False` — it answers Slack's HTML login page with status 200.
- `POST /response/<id>`: `response_url` answers.
- `GET /link`: the Socket Mode websocket; it says hello, pushes `send_envelope` messages and
  records the acks.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar
from urllib.parse import parse_qsl

from aiohttp import WSMsgType, web

from tests.fakes.loopback import serve

T = TypeVar("T")

LOGIN_PAGE = b"""<!DOCTYPE html>
<html lang="en-US"><head><meta charset="utf-8"><title>Slack</title></head>
<body><div id="page">Sign in to your workspace</div></body></html>
"""


@dataclass
class ApiCall:
    method: str
    params: dict[str, Any]
    authorization: str


@dataclass
class Download:
    path: str
    authorization: str
    served_html: bool


@dataclass
class Message:
    """A message the bot posted, with its latest text and blocks."""

    channel: str
    ts: str
    thread_ts: str | None
    text: str
    blocks: list[dict[str, Any]] = field(default_factory=list)
    deleted: bool = False


class FakeSlack:
    bot_token = "xoxb-1-test-bot-token"
    app_token = "xapp-1-test-app-token"
    team_id = "T0001"
    bot_user_id = "UBOT"
    bot_id = "BBOT"

    def __init__(self) -> None:
        self.calls: list[ApiCall] = []
        self.messages: dict[str, Message] = {}
        """By ts."""
        self.uploads: dict[str, bytes] = {}
        """file_id → bytes the bot uploaded."""
        self.completed: list[dict[str, Any]] = []
        """files.completeUploadExternal params, with `files` parsed."""
        self.downloads: list[Download] = []
        self.responses: list[dict[str, Any]] = []
        self.acks: list[dict[str, Any]] = []
        self.hosted: dict[str, bytes] = {}
        self.files_read_scope = True
        self.uploads_open = asyncio.Event()
        self.uploads_open.set()
        """Clear it to hold every file upload until it is set again."""
        self.upload_attempts = 0
        self.posts_open = asyncio.Event()
        self.posts_open.set()
        """Clear it to hold every chat.postMessage until it is set again (`posts_held` counts
        the waiting ones): a test can let two requests pass a precheck before either posts."""
        self.posts_held = 0
        self.post_errors: dict[str, str] = {}
        """channel → error that chat.postMessage answers there (e.g. `not_in_channel`)."""
        self.admins: set[str] = set()
        self.external_users: dict[str, str] = {}
        """Slack Connect guests: user id → their own organisation's team id."""
        """Users whom `users.info` calls workspace admins (`is_admin`)."""
        self.users_read_scope = True
        self.base_url = ""
        self._ts = itertools.count(1)
        self._ids = itertools.count(1)
        self._changed = asyncio.Condition()
        self._runner: web.AppRunner | None = None
        self._sockets: list[web.WebSocketResponse] = []

    # --- lifecycle -------------------------------------------------------------------------

    @property
    def api_base(self) -> str:
        return f"{self.base_url}/api/"

    async def start(self) -> str:
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_post("/api/{method}", self._api)
        app.router.add_get("/api/{method}", self._api)  # the SDK GETs a few (users.info)
        app.router.add_post("/upload/{file_id}", self._upload)
        app.router.add_get("/files-pri/{file}/{name}", self._download)
        app.router.add_post("/response/{id}", self._response)
        app.router.add_get("/link", self._link)
        self._runner, (self.base_url,) = await serve(app)
        return self.base_url

    async def close(self) -> None:
        for ws in list(self._sockets):
            await ws.close()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    # --- what tests use --------------------------------------------------------------------

    async def wait_for(self, probe: Callable[[], T | None], timeout: float = 10.0) -> T:
        """Wait until `probe()` returns something truthy (re-checked whenever a request lands)."""
        async with asyncio.timeout(timeout), self._changed:
            while not (value := probe()):
                await self._changed.wait()
            return value

    def api(self, method: str) -> list[ApiCall]:
        return [c for c in self.calls if c.method == method]

    def roots(self, channel: str | None = None) -> list[Message]:
        """Top-level messages the bot posted, oldest first."""
        return [
            m
            for m in self.messages.values()
            if m.thread_ts is None and (channel is None or m.channel == channel)
        ]

    def replies(self, thread_ts: str) -> list[Message]:
        return [m for m in self.messages.values() if m.thread_ts == thread_ts]

    def uploads_in(self, thread_ts: str) -> list[bytes]:
        """Bytes of every file completed into `thread_ts`, in order."""
        out: list[bytes] = []
        for done in self.completed:
            if done.get("thread_ts") == thread_ts:
                out.extend(self.uploads[f["id"]] for f in done["files"])
        return out

    def host_file(self, name: str, data: bytes, mimetype: str = "image/png") -> dict[str, Any]:
        """Serve `data` as a private file; returns the file object an event would carry."""
        file_id = f"FU{next(self._ids):04d}"
        path = f"/files-pri/{self.team_id}-{file_id}/{name}"
        self.hosted[path] = data
        return {
            "id": file_id,
            "name": name,
            "title": name,
            "mimetype": mimetype,
            "filetype": name.rsplit(".", 1)[-1],
            "size": len(data),
            "url_private": self.base_url + path,
            "url_private_download": self.base_url + path + "?download=1",
        }

    def next_ts(self) -> str:
        return f"1700000000.{next(self._ts):06d}"

    async def send_envelope(
        self, kind: str, payload: dict[str, Any], *, retry_attempt: int = 0
    ) -> str:
        """Push a Socket Mode envelope (`slash_commands`, `events_api`, `interactive`)."""
        await self.wait_for(lambda: self._sockets, timeout=10.0)
        envelope_id = str(uuid.uuid4())
        envelope = {
            "envelope_id": envelope_id,
            "type": kind,
            "payload": payload,
            "accepts_response_payload": kind != "events_api",
            "retry_attempt": retry_attempt,
            "retry_reason": "timeout" if retry_attempt else "",
        }
        await self._sockets[-1].send_str(json.dumps(envelope))
        return envelope_id

    def ack_of(self, envelope_id: str) -> dict[str, Any] | None:
        return next((a for a in self.acks if a.get("envelope_id") == envelope_id), None)

    # --- handlers --------------------------------------------------------------------------

    async def _changed_now(self) -> None:
        async with self._changed:
            self._changed.notify_all()

    async def _api(self, request: web.Request) -> web.Response:
        method = request.match_info["method"]
        raw = await request.read()
        params: dict[str, Any] = dict(request.query)
        if request.content_type == "application/json" and raw:
            params.update(json.loads(raw))
        elif raw:
            params.update(parse_qsl(raw.decode(), keep_blank_values=True))
        auth = request.headers.get("Authorization", "")
        if method == "chat.postMessage" and not self.posts_open.is_set():
            self.posts_held += 1
            await self._changed_now()
            await self.posts_open.wait()
        self.calls.append(ApiCall(method, params, auth))
        try:
            body = self._answer(method, params, auth)
        finally:
            await self._changed_now()
        return web.json_response(body)

    def _answer(self, method: str, params: dict[str, Any], auth: str) -> dict[str, Any]:
        if method == "apps.connections.open":
            if auth != f"Bearer {self.app_token}":
                return {"ok": False, "error": "invalid_auth"}
            return {"ok": True, "url": self.base_url.replace("http", "ws", 1) + "/link"}
        if auth != f"Bearer {self.bot_token}":
            return {"ok": False, "error": "invalid_auth"}
        handler = getattr(self, "_m_" + method.replace(".", "_"), None)
        if handler is None:
            return {"ok": False, "error": "unknown_method"}
        result: dict[str, Any] = handler(params)
        return result

    def _m_auth_test(self, params: dict[str, Any]) -> dict[str, Any]:
        return {
            "ok": True,
            "url": "https://test.slack.com/",
            "team": "Test Team",
            "user": "imagine-bot",
            "team_id": self.team_id,
            "user_id": self.bot_user_id,
            "bot_id": self.bot_id,
            "is_enterprise_install": False,
        }

    def _m_chat_postMessage(self, params: dict[str, Any]) -> dict[str, Any]:
        channel = str(params.get("channel", ""))
        if channel in self.post_errors:
            return {"ok": False, "error": self.post_errors[channel]}
        ts = self.next_ts()
        message = Message(
            channel=channel,
            ts=ts,
            thread_ts=params.get("thread_ts") or None,
            text=str(params.get("text", "")),
            blocks=parse_blocks(params.get("blocks")),
        )
        self.messages[ts] = message
        return {"ok": True, "channel": channel, "ts": ts, "message": {"text": message.text}}

    def _m_chat_update(self, params: dict[str, Any]) -> dict[str, Any]:
        message = self.messages.get(str(params.get("ts")))
        if message is None:
            return {"ok": False, "error": "message_not_found"}
        message.text = str(params.get("text", ""))
        message.blocks = parse_blocks(params.get("blocks"))
        return {"ok": True, "channel": message.channel, "ts": message.ts, "text": message.text}

    def _m_chat_delete(self, params: dict[str, Any]) -> dict[str, Any]:
        message = self.messages.get(str(params.get("ts")))
        if message is None:
            return {"ok": False, "error": "message_not_found"}
        message.deleted = True
        return {"ok": True, "channel": message.channel, "ts": message.ts}

    def _m_chat_postEphemeral(self, params: dict[str, Any]) -> dict[str, Any]:
        return {"ok": True, "message_ts": self.next_ts()}

    def _m_users_info(self, params: dict[str, Any]) -> dict[str, Any]:
        if not self.users_read_scope:
            return {"ok": False, "error": "missing_scope", "needed": "users:read"}
        user = str(params.get("user") or "")
        if not user:
            return {"ok": False, "error": "user_not_found"}
        admin = user in self.admins
        return {
            "ok": True,
            "user": {
                "id": user,
                "team_id": self.external_users.get(user, self.team_id),
                "name": user.lower(),
                "is_admin": admin,
                "is_owner": False,
                "is_primary_owner": False,
                "is_bot": False,
            },
        }

    def _m_conversations_open(self, params: dict[str, Any]) -> dict[str, Any]:
        users = str(params.get("users") or "")
        if not users or "," in users:
            return {"ok": False, "error": "invalid_arguments"}
        return {"ok": True, "channel": {"id": f"D{users}"}}

    def _m_views_open(self, params: dict[str, Any]) -> dict[str, Any]:
        if not params.get("trigger_id"):
            return {"ok": False, "error": "invalid_trigger_id"}
        view = params.get("view")
        view = json.loads(view) if isinstance(view, str) else view
        return {"ok": True, "view": {"id": f"V{next(self._ids):04d}", **(view or {})}}

    def _m_files_getUploadURLExternal(self, params: dict[str, Any]) -> dict[str, Any]:
        if not params.get("filename") or not params.get("length"):
            return {"ok": False, "error": "invalid_arguments"}
        file_id = f"F{next(self._ids):04d}"
        return {"ok": True, "upload_url": f"{self.base_url}/upload/{file_id}", "file_id": file_id}

    def _m_files_completeUploadExternal(self, params: dict[str, Any]) -> dict[str, Any]:
        files = json.loads(params.get("files") or "[]")
        if any(f.get("id") not in self.uploads for f in files):
            return {"ok": False, "error": "file_not_found"}
        self.completed.append({**params, "files": files})
        return {"ok": True, "files": [{"id": f["id"], "title": f.get("title")} for f in files]}

    def _m_files_delete(self, params: dict[str, Any]) -> dict[str, Any]:
        if self.uploads.pop(str(params.get("file")), None) is None:
            return {"ok": False, "error": "file_not_found"}
        return {"ok": True}

    def _m_files_info(self, params: dict[str, Any]) -> dict[str, Any]:
        return {"ok": False, "error": "file_not_found"}

    async def _upload(self, request: web.Request) -> web.Response:
        data = await request.read()
        self.upload_attempts += 1
        await self._changed_now()
        await self.uploads_open.wait()  # a test may hold uploads (a crash mid-delivery)
        self.uploads[request.match_info["file_id"]] = data
        await self._changed_now()
        return web.Response(text=f"OK - {len(self.uploads[request.match_info['file_id']])}")

    async def _download(self, request: web.Request) -> web.Response:
        auth = request.headers.get("Authorization", "")
        data = self.hosted.get(request.path)
        login = auth != f"Bearer {self.bot_token}" or not self.files_read_scope
        self.downloads.append(Download(request.path, auth, served_html=login or data is None))
        await self._changed_now()
        if login or data is None:
            return web.Response(body=LOGIN_PAGE, content_type="text/html", charset="utf-8")
        return web.Response(body=data, content_type="application/octet-stream")

    async def _response(self, request: web.Request) -> web.Response:
        self.responses.append(await request.json())
        await self._changed_now()
        return web.Response(text="ok")

    async def _link(self, request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse(autoping=True)
        await ws.prepare(request)
        self._sockets.append(ws)
        await ws.send_str(json.dumps({"type": "hello", "num_connections": 1}))
        await self._changed_now()
        try:
            async for frame in ws:
                if frame.type == WSMsgType.TEXT:
                    self.acks.append(json.loads(frame.data))
                    await self._changed_now()
        finally:
            self._sockets.remove(ws)
        return ws


def parse_blocks(value: Any) -> list[dict[str, Any]]:
    if isinstance(value, str):
        value = json.loads(value) if value else []
    return list(value or [])
