"""A fake Discord (REST API, gateway and attachment CDN) on loopback, for the real discord.py.

It speaks just enough of Discord for a bot to log in, sync commands, receive interactions and
messages over the gateway and answer them: interaction callbacks (`?with_response=1`),
`@original` edits, followups, channel messages, deletes and attachment downloads. Every REST
request is recorded with its JSON (or multipart `payload_json`) and uploaded file bytes, in
arrival order, so a test asserts what a user would see. JSON answers carry exactly
`Content-Type: application/json` (with a charset discord.py reads them as text and fails).

The gateway takes any number of connections at once (one per shard, from one process or
several) and records each IDENTIFY, `shard` field included. As Discord does, a shard's READY
lists only the guilds of that shard (`(guild_id >> 22) % shard_count`), and an event goes to
the connection of its guild's shard (DMs to shard 0); a test can also send one event to a
chosen shard or to every connection (two processes that run the same shard by mistake).
"""

from __future__ import annotations

import asyncio
import itertools
import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from aiohttp import WSMsgType, web

from tests.fakes.loopback import serve

API = "/api/v10"
DISCORD_EPOCH_MS = 1420070400000
TOKEN_LIFETIME_MS = 15 * 60 * 1000
"""Discord accepts an interaction's token (its webhook) for 15 minutes."""

INTENT_GUILDS = 1 << 0
INTENT_GUILD_MESSAGES = 1 << 9
INTENT_DM_MESSAGES = 1 << 12
INTENT_MESSAGE_CONTENT = 1 << 15

MANAGE_GUILD = 1 << 5
MANAGE_MESSAGES = 1 << 13
MEMBER_PERMISSIONS = (1 << 10) | (1 << 11) | (1 << 16)
"""View Channel, Send Messages, Read Message History: an ordinary member."""


def snowflake(at: datetime | None = None, counter: int = 0) -> int:
    """A Discord id whose timestamp is `at` (now by default)."""
    moment = at or datetime.now(UTC)
    ms = int(moment.timestamp() * 1000) - DISCORD_EPOCH_MS
    return (ms << 22) | (counter & 0x3FFFFF)


def iso(moment: datetime | None = None) -> str:
    return (moment or datetime.now(UTC)).isoformat()


@dataclass(frozen=True)
class Upload:
    field: str
    filename: str
    content_type: str
    data: bytes


@dataclass
class Call:
    """One REST request, as it arrived, and the JSON the fake answered.

    `path` is without the `/api/v10` prefix; `at` is time.monotonic() on arrival.
    """

    method: str
    path: str
    query: dict[str, str]
    json: Any
    files: tuple[Upload, ...]
    at: float
    answer: Any = None


@dataclass
class User:
    id: int
    name: str
    bot: bool = False

    def payload(self) -> dict[str, Any]:
        return {
            "id": str(self.id),
            "username": self.name,
            "global_name": self.name,
            "discriminator": "0",
            "avatar": None,
            "bot": self.bot,
        }


@dataclass
class _Blob:
    data: bytes
    content_type: str


@dataclass(eq=False)
class _Connection:
    ws: web.WebSocketResponse
    shard: tuple[int, int] | None = None
    """[shard_id, shard_count] from its IDENTIFY; None before it (or when not sharded)."""


def shard_of(guild_id: int | None, shard_count: int) -> int:
    """The shard Discord sends a guild's events on; DMs go to shard 0."""
    return 0 if guild_id is None else (guild_id >> 22) % shard_count


@dataclass
class FakeDiscord:
    token: str = "fake-bot-token"
    app_id: int = field(default_factory=lambda: snowflake(counter=1))
    guild_id: int = field(default_factory=lambda: snowflake(counter=2))
    channel_id: int = field(default_factory=lambda: snowflake(counter=3))
    dm_channel_id: int = field(default_factory=lambda: snowflake(counter=4))

    def __post_init__(self) -> None:
        self.bot = User(self.app_id, "imagine-bot", bot=True)
        self.calls: list[Call] = []
        self.identifies: list[dict[str, Any]] = []
        """Every IDENTIFY's `d`, in arrival order (its `shard` is [shard_id, shard_count])."""
        self.recommended_shards = 1
        """What `GET /gateway/bot` recommends (discord.py's automatic sharding uses it)."""
        self.messages: dict[int, dict[str, Any]] = {}
        self.allowed_intents = -1
        """Intents the application may use; others get close code 4014, as when Message
        Content is not enabled in the developer portal."""
        self.failing_original_edits = 0
        """How many coming edits of an interaction's `@original` are refused with a 400
        (discord.py retries a 5xx for 25 s before giving up the same way)."""
        self.downloads: list[str] = []
        """Paths of attachment downloads from the fake CDN."""
        self.cdn_gate: asyncio.Event | None = None
        """When set, attachment downloads wait until this event is set (a slow CDN)."""
        self.roles: dict[int, str] = {}
        """The guild's roles besides @everyone (id → name), sent in GUILD_CREATE."""
        self.closed_channels: set[int] = set()
        """Channels the bot user is not in (a group DM, a server it was never added to):
        REST calls on them get 403 Missing Access, as Discord answers. Interaction
        webhooks still work there."""
        self.refused_tokens: set[str] = set()
        """Interaction tokens Discord no longer accepts (as it refuses every token 15 minutes
        after its interaction, which the fake does too): their webhook calls get 401."""
        self.base_url = ""
        self._ids = itertools.count(100)
        self._blobs: dict[str, _Blob] = {}
        self._interactions: dict[str, dict[str, Any]] = {}
        self._originals: dict[str, int] = {}
        self._connections: list[_Connection] = []
        self._seq = itertools.count(1)
        self._changed = asyncio.Event()
        self._runner: web.AppRunner | None = None

    # --- lifecycle -------------------------------------------------------------------------

    @property
    def api_base(self) -> str:
        return self.base_url + API

    @property
    def gateway_url(self) -> str:
        return self.base_url.replace("http://", "ws://") + "/gateway"

    def bot_settings(self) -> dict[str, str]:
        """The environment that points a real `imagine-bot run` at this fake."""
        return {
            "DISCORD_TOKEN": self.token,
            "DISCORD_API_BASE": self.api_base,
            "DISCORD_GATEWAY_URL": self.gateway_url,
            "DISCORD_GUILD_IDS": str(self.guild_id),
        }

    async def start(self) -> FakeDiscord:
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_get("/gateway", self._gateway)
        app.router.add_get("/cdn/{key:.+}", self._cdn)
        app.router.add_route("*", API + "/{tail:.*}", self._rest)
        self._runner, (self.base_url,) = await serve(app)
        return self

    async def close(self) -> None:
        for connection in list(self._connections):
            await connection.ws.close()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    # --- what tests use --------------------------------------------------------------------

    def new_id(self, at: datetime | None = None) -> int:
        return snowflake(at, next(self._ids))

    def user(self, name: str = "alice") -> User:
        return User(self.new_id(), name)

    def attachment(
        self, filename: str, data: bytes, content_type: str | None, *, size: int | None = None
    ) -> dict[str, Any]:
        """An attachment payload whose URL this fake serves; `size` may lie, as metadata can."""
        attachment_id = self.new_id()
        key = f"attachments/{attachment_id}/{filename}"
        self._blobs[key] = _Blob(data, content_type or "application/octet-stream")
        payload: dict[str, Any] = {
            "id": str(attachment_id),
            "filename": filename,
            "size": len(data) if size is None else size,
            "url": f"{self.base_url}/cdn/{key}",
            "proxy_url": f"{self.base_url}/cdn/{key}",
        }
        if content_type is not None:
            payload["content_type"] = content_type
        return payload

    def role(self, name: str) -> int:
        """A guild role (create it before the bot connects: GUILD_CREATE carries it)."""
        role_id = self.new_id()
        self.roles[role_id] = name
        return role_id

    def role_payload(self, role_id: int) -> dict[str, Any]:
        return {
            "id": str(role_id),
            "name": "@everyone" if role_id == self.guild_id else self.roles.get(role_id, "role"),
            "permissions": str(MEMBER_PERMISSIONS) if role_id == self.guild_id else "0",
            "position": 0 if role_id == self.guild_id else 1,
            "color": 0,
            "hoist": False,
            "managed": False,
            "mentionable": False,
        }

    def member(
        self, user: User, permissions: int = MEMBER_PERMISSIONS, roles: Sequence[int] = ()
    ) -> dict[str, Any]:
        return {
            "user": user.payload(),
            "roles": [str(role_id) for role_id in roles],
            "joined_at": iso(),
            "deaf": False,
            "mute": False,
            "flags": 0,
            "permissions": str(permissions),
        }

    def interaction(
        self,
        kind: int,
        data: dict[str, Any],
        user: User,
        *,
        dm: bool = False,
        permissions: int = MEMBER_PERMISSIONS,
        message: dict[str, Any] | None = None,
        at: datetime | None = None,
        roles: Sequence[int] = (),
        channel_id: int | None = None,
        private_channel: int | None = None,
        owners: dict[str, str] | None = None,
        thread_of: int | None = None,
    ) -> dict[str, Any]:
        """An INTERACTION_CREATE payload: in the guild channel (or `channel_id`, another
        text channel of the guild; with `thread_of`, a public thread of that channel), or in
        the user's DMs; `roles` are the member's.

        `private_channel`: in a group DM (context 2) the bot user is not in; `owners` is the
        payload's `authorizing_integration_owners` ({"1": user id} for a user install,
        {"0": guild id} for a server install; absent by default, like older payloads)."""
        payload: dict[str, Any] = {
            "id": str(self.new_id(at)),
            "application_id": str(self.app_id),
            "type": kind,
            "token": f"itoken-{next(self._ids)}",
            "version": 1,
            "attachment_size_limit": 10 * 1024 * 1024,
            "app_permissions": str(MEMBER_PERMISSIONS | (1 << 15) | (1 << 14)),
            "locale": "en-US",
            "data": data,
        }
        if private_channel is not None:
            payload["channel_id"] = str(private_channel)
            payload["channel"] = {
                "id": str(private_channel),
                "type": 3,
                "name": None,
                "recipients": [user.payload()],
                "owner_id": str(user.id),
                "icon": None,
            }
            payload["user"] = user.payload()
            payload["context"] = 2
        elif dm:
            payload["channel_id"] = str(self.dm_channel_id)
            payload["channel"] = {"id": str(self.dm_channel_id), "type": 1, "recipients": []}
            payload["user"] = user.payload()
            payload["context"] = 1
        else:
            channel = channel_id or self.channel_id
            payload["guild_id"] = str(self.guild_id)
            payload["channel_id"] = str(channel)
            payload["channel"] = {
                "id": str(channel),
                "type": 0,
                "guild_id": str(self.guild_id),
                "name": "general" if channel == self.channel_id else f"channel-{channel}",
                "position": 0,
                "permission_overwrites": [],
            }
            if thread_of is not None:
                payload["channel"] = {
                    "id": str(channel),
                    "type": 11,
                    "guild_id": str(self.guild_id),
                    "parent_id": str(thread_of),
                    "owner_id": str(user.id),
                    "name": f"thread-{channel}",
                    "message_count": 0,
                    "member_count": 1,
                    "rate_limit_per_user": 0,
                    "flags": 0,
                    "last_message_id": None,
                    "thread_metadata": {
                        "archived": False,
                        "auto_archive_duration": 1440,
                        "archive_timestamp": "2026-12-03T00:00:00+00:00",
                        "locked": False,
                    },
                }
            payload["member"] = self.member(user, permissions, roles)
            payload["context"] = 0
        if message is not None:
            payload["message"] = message
        if owners is not None:
            payload["authorizing_integration_owners"] = owners
        return payload

    def slash(
        self,
        user: User,
        prompt: str,
        *,
        aspect_ratio: str | None = None,
        images: list[dict[str, Any]] | None = None,
        dm: bool = False,
        at: datetime | None = None,
        model: str | None = None,
        size: str | None = None,
        **where: Any,
    ) -> dict[str, Any]:
        """`/imagine` as Discord sends it; `images` are attachment payloads (up to three);
        `model` and `size` the chosen values of those options; `where` goes to
        `interaction` (`roles`, `permissions`, `channel_id`, `private_channel`, `owners`)."""
        options: list[dict[str, Any]] = [{"name": "prompt", "type": 3, "value": prompt}]
        if aspect_ratio is not None:
            options.append({"name": "aspect_ratio", "type": 3, "value": aspect_ratio})
        for name, value in (("model", model), ("size", size)):
            if value is not None:
                options.append({"name": name, "type": 3, "value": value})
        resolved: dict[str, Any] = {}
        for name, attachment in zip(("image", "image2", "image3"), images or (), strict=False):
            options.append({"name": name, "type": 11, "value": attachment["id"]})
            resolved.setdefault("attachments", {})[attachment["id"]] = attachment
        data: dict[str, Any] = {
            "id": str(self.new_id()),
            "name": "imagine",
            "type": 1,
            "options": options,
        }
        if resolved:
            data["resolved"] = resolved
        return self.interaction(2, data, user, dm=dm, at=at, **where)

    def context_menu(self, user: User, target: dict[str, Any], **where: Any) -> dict[str, Any]:
        """The "Edit image" message command on `target` (a message payload)."""
        data = {
            "id": str(self.new_id()),
            "name": "Edit image",
            "type": 3,
            "target_id": target["id"],
            "resolved": {"messages": {target["id"]: target}},
        }
        return self.interaction(2, data, user, **where)

    def button(
        self,
        user: User,
        message: dict[str, Any],
        custom_id: str,
        *,
        permissions: int = 0,
        roles: Sequence[int] = (),
        **where: Any,
    ) -> dict[str, Any]:
        """A click on the button `custom_id` of `message` (which must carry it); `where`
        goes to `interaction` (`private_channel`, `owners`)."""
        data = {"custom_id": custom_id, "component_type": 2}
        dm = "guild_id" not in message
        perms = permissions or MEMBER_PERMISSIONS
        return self.interaction(
            3, data, user, dm=dm, permissions=perms, message=message, roles=roles, **where
        )

    def select(
        self,
        user: User,
        message: dict[str, Any],
        custom_id: str,
        values: Sequence[str],
        *,
        permissions: int = 0,
        roles: Sequence[int] = (),
        **where: Any,
    ) -> dict[str, Any]:
        """A choice in the string select `custom_id` of `message` (which must carry it)."""
        data = {"custom_id": custom_id, "component_type": 3, "values": list(values)}
        dm = "guild_id" not in message
        perms = permissions or MEMBER_PERMISSIONS
        return self.interaction(
            3, data, user, dm=dm, permissions=perms, message=message, roles=roles, **where
        )

    def modal_submit(
        self,
        user: User,
        custom_id: str,
        values: dict[str, str],
        message: dict[str, Any] | None,
        **where: Any,
    ) -> dict[str, Any]:
        """A submitted modal: one text input per entry of `values` (custom id → text)."""
        rows = [
            {"type": 1, "components": [{"type": 4, "custom_id": cid, "value": text}]}
            for cid, text in values.items()
        ]
        data = {"custom_id": custom_id, "components": rows}
        return self.interaction(5, data, user, message=message, **where)

    def user_message(
        self,
        user: User,
        content: str,
        *,
        reply_to: dict[str, Any] | None = None,
        attachments: list[dict[str, Any]] | None = None,
        dm: bool = False,
        channel_id: int | None = None,
        roles: Sequence[int] = (),
    ) -> dict[str, Any]:
        """A MESSAGE_CREATE payload from a person, optionally replying to `reply_to`;
        `channel_id` puts it elsewhere in the guild (a thread the bot never cached);
        `roles` are the author's."""
        channel = channel_id or (self.dm_channel_id if dm else self.channel_id)
        message = self._message(channel, user.payload(), content, attachments=attachments or [])
        if not dm:
            message["guild_id"] = str(self.guild_id)
            member = self.member(user, roles=roles)
            message["member"] = {k: v for k, v in member.items() if k != "user"}
        if reply_to is not None:
            message["type"] = 19
            message["message_reference"] = {
                "message_id": reply_to["id"],
                "channel_id": reply_to["channel_id"],
                **({"guild_id": reply_to["guild_id"]} if "guild_id" in reply_to else {}),
            }
            message["referenced_message"] = reply_to
        self.messages[int(message["id"])] = message
        return message

    @property
    def shards(self) -> list[tuple[int, int] | None]:
        """The shard of every open gateway connection, in the order they connected."""
        return [connection.shard for connection in self._connections]

    async def dispatch(
        self,
        event: str,
        data: dict[str, Any],
        *,
        shard: int | None = None,
        everywhere: bool = False,
    ) -> None:
        """Push a gateway event to the bot: to the connection of its guild's shard (as
        Discord does; the most recent connection when none is sharded), to the connection
        of `shard`, or, with `everywhere`, to every open connection."""
        if data.get("token"):
            self._interactions[data["token"]] = data
        targets = list(self._connections) if everywhere else [self._route(data, shard)]
        if not targets:
            raise RuntimeError("no gateway connection")
        for connection in targets:
            await self._send(event, data, connection.ws)

    def _route(self, data: dict[str, Any], shard: int | None) -> _Connection:
        sharded = [(c, c.shard) for c in self._connections if c.shard is not None]
        if shard is None and sharded:
            guild = data.get("guild_id")
            shard = shard_of(int(guild) if guild else None, sharded[-1][1][1])
        if shard is not None:
            for connection, (shard_id, _) in reversed(sharded):
                if shard_id == shard:
                    return connection
            raise RuntimeError(f"no gateway connection runs shard {shard}")
        if not self._connections:
            raise RuntimeError("no gateway connection")
        return self._connections[-1]

    async def wait_for(
        self, predicate: Callable[[Call], bool], *, timeout: float = 10.0, start: int = 0
    ) -> Call:
        """The first recorded call (from index `start`) matching `predicate`."""
        async with asyncio.timeout(timeout):
            while True:
                for call in self.calls[start:]:
                    if predicate(call):
                        return call
                self._changed.clear()
                await self._changed.wait()

    async def wait_identify(self, timeout: float = 10.0, *, count: int = 1) -> dict[str, Any]:
        """The latest IDENTIFY, once at least `count` have arrived."""
        async with asyncio.timeout(timeout):
            while len(self.identifies) < count:
                self._changed.clear()
                await self._changed.wait()
        return self.identifies[-1]

    def find(self, predicate: Callable[[Call], bool]) -> list[Call]:
        return [call for call in self.calls if predicate(call)]

    def original_message(self, token: str) -> dict[str, Any] | None:
        message_id = self._originals.get(token)
        return self.messages.get(message_id) if message_id is not None else None

    # --- REST ------------------------------------------------------------------------------

    async def _rest(self, request: web.Request) -> web.StreamResponse:
        body, files = await _read_body(request)
        path = request.path[len(API) :]
        call = Call(request.method, path, dict(request.query), body, files, time.monotonic())
        self.calls.append(call)
        self._changed.set()
        try:
            response = self._answer(call, request)
            if isinstance(response, web.Response) and response.body:
                call.answer = json.loads(response.body)  # type: ignore[arg-type]
            return response
        finally:
            self._changed.set()

    def _answer(self, call: Call, request: web.Request) -> web.Response:
        parts = call.path.strip("/").split("/")
        method = call.method
        if parts[:2] == ["users", "@me"] and method == "GET":
            if request.headers.get("Authorization") != f"Bot {self.token}":
                return _json({"message": "401: Unauthorized", "code": 0}, 401)
            return _json(self.bot.payload())
        if parts[:3] == ["oauth2", "applications", "@me"]:
            return _json(self._app_info())
        if parts == ["gateway", "bot"] and method == "GET":
            return _json(
                {
                    "url": self.gateway_url,
                    "shards": self.recommended_shards,
                    "session_start_limit": {
                        "total": 1000,
                        "remaining": 999,
                        "reset_after": 0,
                        "max_concurrency": 1,
                    },
                }
            )
        if parts[0] == "applications" and parts[-1] == "commands" and method == "PUT":
            extra = {"application_id": str(self.app_id), "version": "1", "description": ""}
            if len(parts) == 5:
                extra["guild_id"] = parts[3]
            return _json([{**extra, **c, "id": str(self.new_id())} for c in call.json])
        if parts[0] == "interactions" and parts[-1] == "callback":
            return self._callback(parts[1], parts[2], call.json)
        if parts[0] == "webhooks":
            return self._webhook(method, parts[2], parts[3:], call)
        if parts[0] == "channels" and len(parts) >= 3 and parts[2] == "messages":
            return self._channel(method, int(parts[1]), parts[3:], call)
        return _json({"message": "Unknown route", "code": 0}, 404)

    def _app_info(self) -> dict[str, Any]:
        return {
            "id": str(self.app_id),
            "name": "imagine-bot",
            "description": "",
            "icon": None,
            "bot_public": True,
            "bot_require_code_grant": False,
            "owner": {**self.bot.payload(), "id": str(self.new_id()), "bot": False},
            "verify_key": "0" * 64,
            "flags": 0,
        }

    def _callback(self, interaction_id: str, token: str, body: Any) -> web.Response:
        kind = body.get("type") if isinstance(body, dict) else None
        data = (body or {}).get("data") or {}
        source = self._interactions.get(token, {})
        flags = int(data.get("flags") or 0)
        answer: dict[str, Any] = {
            "id": interaction_id,
            "type": source.get("type", 2),
            "response_message_loading": kind == 5,
            "response_message_ephemeral": bool(flags & 64),
        }
        if kind in (4, 5):
            message = self._message(
                int(source.get("channel_id") or self.channel_id),
                self.bot.payload(),
                data.get("content") or "",
                payload=data,
                guild=source.get("guild_id"),
            )
            message["flags"] = flags | (128 if kind == 5 else 0)
            who = source.get("user") or (source.get("member") or {}).get("user") or {}
            message["interaction_metadata"] = {
                "id": interaction_id,
                "type": source.get("type", 2),
                "user": who or self.bot.payload(),
                "authorizing_integration_owners": {},
            }
            self.messages[int(message["id"])] = message
            self._originals[token] = int(message["id"])
            answer["response_message_id"] = message["id"]
        elif kind in (6, 7) and "message" in source:
            self._originals[token] = int(source["message"]["id"])
        return _json({"interaction": answer})

    def _token_refused(self, token: str) -> bool:
        """Refused by hand, or its interaction's id says it is over 15 minutes old."""
        source = self._interactions.get(token, {})
        if token in self.refused_tokens:
            return True
        if not str(source.get("id", "")).isdigit():
            return False
        created_ms = (int(source["id"]) >> 22) + DISCORD_EPOCH_MS
        return time.time() * 1000 - created_ms > TOKEN_LIFETIME_MS

    def _webhook(self, method: str, token: str, rest: list[str], call: Call) -> web.Response:
        if self._token_refused(token):
            return _json({"message": "Invalid Webhook Token", "code": 50027}, 401)
        if not rest:  # followup: POST /webhooks/{app}/{token}
            source = self._interactions.get(token, {})
            channel = int(source.get("channel_id") or self.channel_id)
            message = self._message(
                channel, self.bot.payload(), "", payload=call.json, files=call.files
            )
            self.messages[int(message["id"])] = message
            return _json(message)
        target = rest[1]
        message_id = self._originals.get(token) if target == "@original" else int(target)
        if message_id is None or message_id not in self.messages:
            return _json({"message": "Unknown Message", "code": 10008}, 404)
        if method == "DELETE":
            self.messages.pop(message_id, None)
            return web.Response(status=204)
        if method == "PATCH":
            if target == "@original" and self.failing_original_edits > 0:
                self.failing_original_edits -= 1
                return _json({"message": "Invalid Form Body", "code": 50035}, 400)
            return _json(self._edit(message_id, call))
        return _json(self.messages[message_id])

    def _channel(self, method: str, channel_id: int, rest: list[str], call: Call) -> web.Response:
        if channel_id in self.closed_channels:
            return _json({"message": "Missing Access", "code": 50001}, 403)
        if not rest and method == "POST":
            message = self._message(
                channel_id, self.bot.payload(), "", payload=call.json, files=call.files
            )
            reference = (call.json or {}).get("message_reference")
            if reference:
                message["type"] = 19
                message["message_reference"] = reference
            self.messages[int(message["id"])] = message
            return _json(message)
        if not rest:
            return _json({"message": "Method not allowed", "code": 0}, 405)
        message_id = int(rest[0])
        if message_id not in self.messages:
            return _json({"message": "Unknown Message", "code": 10008}, 404)
        if method == "DELETE":
            self.messages.pop(message_id)
            return web.Response(status=204)
        if method == "PATCH":
            return _json(self._edit(message_id, call))
        return _json(self.messages[message_id])

    def _message(
        self,
        channel_id: int,
        author: dict[str, Any],
        content: str,
        *,
        payload: Any = None,
        files: tuple[Upload, ...] = (),
        attachments: list[dict[str, Any]] | None = None,
        guild: str | None = None,
    ) -> dict[str, Any]:
        payload = payload if isinstance(payload, dict) else {}
        message: dict[str, Any] = {
            "id": str(self.new_id()),
            "channel_id": str(channel_id),
            "author": author,
            "content": payload.get("content") or content,
            "timestamp": iso(),
            "edited_timestamp": None,
            "tts": False,
            "mention_everyone": False,
            "mentions": [],
            "mention_roles": [],
            "attachments": attachments if attachments is not None else self._stored(files),
            "embeds": payload.get("embeds") or [],
            "components": payload.get("components") or [],
            "pinned": False,
            "type": 0,
            "flags": int(payload.get("flags") or 0),
        }
        if guild is not None or channel_id == self.channel_id:
            message["guild_id"] = guild or str(self.guild_id)
        return message

    def _edit(self, message_id: int, call: Call) -> dict[str, Any]:
        message = self.messages[message_id]
        body = call.json if isinstance(call.json, dict) else {}
        for key in ("content", "embeds", "components"):
            if key in body:
                message[key] = (
                    body[key] if body[key] is not None else ([] if key != "content" else "")
                )
        if "attachments" in body or call.files:
            message["attachments"] = self._stored(call.files)
        message["flags"] = int(message.get("flags") or 0) & ~128
        message["edited_timestamp"] = iso()
        return message

    def _stored(self, files: tuple[Upload, ...]) -> list[dict[str, Any]]:
        return [self.attachment(f.filename, f.data, f.content_type) for f in files]

    # --- CDN -------------------------------------------------------------------------------

    async def _cdn(self, request: web.Request) -> web.StreamResponse:
        self.downloads.append(request.path)
        if self.cdn_gate is not None:
            await self.cdn_gate.wait()
        blob = self._blobs.get(request.match_info["key"])
        if blob is None:
            return web.Response(status=404)
        return web.Response(body=blob.data, headers={"Content-Type": blob.content_type})

    # --- gateway ---------------------------------------------------------------------------

    async def _gateway(self, request: web.Request) -> web.StreamResponse:
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        connection = _Connection(ws)
        self._connections.append(connection)
        await ws.send_str(json.dumps({"op": 10, "d": {"heartbeat_interval": 41250}}))
        try:
            async for frame in ws:
                if frame.type != WSMsgType.TEXT:
                    continue
                message = json.loads(frame.data)
                if message["op"] == 1:
                    await ws.send_str(json.dumps({"op": 11}))
                elif message["op"] == 2:
                    identify = message["d"]
                    self.identifies.append(identify)
                    shard = identify.get("shard")
                    if shard is not None:
                        connection.shard = (int(shard[0]), int(shard[1]))
                    self._changed.set()
                    if identify["intents"] & ~self.allowed_intents:
                        await ws.close(code=4014, message=b"Disallowed intent(s).")
                        break
                    await self._ready(connection)
        finally:
            self._connections.remove(connection)
        return ws

    async def _ready(self, connection: _Connection) -> None:
        ws = connection.ws
        shard = connection.shard
        ours = shard is None or shard_of(self.guild_id, shard[1]) == shard[0]
        ready: dict[str, Any] = {
            "v": 10,
            "user": self.bot.payload(),
            "guilds": [{"id": str(self.guild_id), "unavailable": True}] if ours else [],
            "session_id": f"fake-session-{next(self._ids)}",
            "resume_gateway_url": self.gateway_url,
            "application": {"id": str(self.app_id), "flags": 0},
        }
        if shard is not None:
            ready["shard"] = list(shard)
        await self._send("READY", ready, ws)
        if not ours:
            return
        guild = {
            "id": str(self.guild_id),
            "name": "Test guild",
            "unavailable": False,
            "owner_id": str(self.new_id()),
            "member_count": 3,
            "roles": [self.role_payload(role_id) for role_id in (self.guild_id, *self.roles)],
            "channels": [
                {
                    "id": str(self.channel_id),
                    "type": 0,
                    "name": "general",
                    "position": 0,
                    "permission_overwrites": [],
                }
            ],
            "threads": [],
            "members": [],
            "emojis": [],
            "stickers": [],
            "features": [],
            "joined_at": iso(),
        }
        await self._send("GUILD_CREATE", guild, ws)

    async def _send(self, event: str, data: dict[str, Any], ws: web.WebSocketResponse) -> None:
        frame = {"op": 0, "s": next(self._seq), "t": event, "d": data}
        await ws.send_str(json.dumps(frame))


def _json(body: Any, status: int = 200) -> web.Response:
    return web.Response(
        status=status,
        body=json.dumps(body).encode(),
        headers={"Content-Type": "application/json"},
    )


async def _read_body(request: web.Request) -> tuple[Any, tuple[Upload, ...]]:
    """JSON, or multipart with `payload_json` and `files[n]` parts (their bytes kept)."""
    if not request.can_read_body:
        return None, ()
    if request.content_type.startswith("multipart/"):
        reader = await request.multipart()
        body: Any = None
        files: list[Upload] = []
        async for part in reader:
            if part is None:
                break
            data = await part.read()  # type: ignore[union-attr]
            name = part.name or ""
            if name == "payload_json":
                body = json.loads(data)
            else:
                files.append(
                    Upload(
                        name,
                        part.filename or "",  # type: ignore[union-attr]
                        part.headers.get("Content-Type", ""),
                        bytes(data),
                    )
                )
        return body, tuple(files)
    raw = await request.read()
    return (json.loads(raw) if raw else None), ()
