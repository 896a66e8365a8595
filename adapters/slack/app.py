"""The Slack adapter's lifecycle: a Bolt `AsyncApp` in Socket Mode or behind an HTTP server.

Neither mode blocks: Socket Mode connects (`connect_async`) and HTTP mode runs an aiohttp
`AppRunner`, so Discord and Slack share one process and one event loop. Socket Mode is
chosen when `SLACK_APP_TOKEN` is set (no public URL needed); otherwise every command,
event and button click is a POST to `/slack/events`, verified with `SLACK_SIGNING_SECRET`
by Bolt (a bad or stale signature gets 401 before any listener runs).
"""

from __future__ import annotations

import asyncio
import logging

import aiohttp
from aiohttp import web
from pydantic import SecretStr
from slack_bolt.adapter.aiohttp import to_aiohttp_response, to_bolt_request
from slack_bolt.adapter.socket_mode.async_handler import AsyncSocketModeHandler
from slack_bolt.async_app import AsyncApp
from slack_sdk.errors import SlackApiError
from slack_sdk.http_retry.builtin_async_handlers import AsyncRateLimitErrorRetryHandler
from slack_sdk.web.async_client import AsyncWebClient

from adapters.slack.convert import PLATFORM
from adapters.slack.files import SlackFiles
from adapters.slack.handlers import SlackHandlers
from adapters.slack.team import SlackAdmins, SlackTeam
from bot.config import Settings, SettingsError, StartupError
from bot.core import ImagineBot

log = logging.getLogger(__name__)

EVENTS_PATH = "/slack/events"
HEALTH_PATH = "/healthz"
CONNECT_TIMEOUT = 30.0


class SlackStartError(StartupError):
    """Slack refused a token or could not be reached: one line saying which."""


class _QuietBoltWarnings(logging.Filter):
    """Bolt warns that `SLACK_BOT_TOKEN` from the environment is unused when a client is
    given; the client *is* built from it (with `SLACK_API_BASE`), so the warning only confuses."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "`token` will be unused" not in record.getMessage()


def _secret(value: SecretStr | None) -> str:
    return value.get_secret_value().strip() if value is not None else ""


class SlackAdapter:
    """`await start()` connects (Socket Mode) or listens (HTTP); `await close()` stops taking
    requests. Jobs already accepted keep answering through the Web API until the core drains.
    """

    name = PLATFORM

    def __init__(
        self, core: ImagineBot, settings: Settings, *, progress_interval: float = 1.0
    ) -> None:
        token = _secret(settings.slack_bot_token)
        if not token:
            raise SettingsError("SLACK_BOT_TOKEN: must be set to run the Slack adapter")
        self.settings = settings
        self.app_token = _secret(settings.slack_app_token)
        signing_secret = _secret(settings.slack_signing_secret)
        if not self.app_token and not signing_secret:
            raise SettingsError(
                "SLACK_SIGNING_SECRET: required in HTTP mode "
                "(or set SLACK_APP_TOKEN to use Socket Mode)"
            )
        self.core = core
        self.client = AsyncWebClient(token=token, base_url=settings.slack_api_base)
        # a busy channel can hit chat.update's rate limit: wait out Retry-After, twice at most
        self.client.retry_handlers.append(AsyncRateLimitErrorRetryHandler(max_retry_count=2))
        bolt_log = logging.getLogger("adapters.slack.bolt")
        bolt_log.addFilter(_QuietBoltWarnings())
        self.app = AsyncApp(
            name="imagine-bot",
            client=self.client,
            signing_secret=signing_secret,
            logger=bolt_log,
        )
        self.files = SlackFiles(self.client, token, settings.slack_api_base)
        self.handlers = SlackHandlers(
            core, self.client, self.files, progress_interval=progress_interval
        )
        self.handlers.register(self.app)
        self.team = SlackTeam(core, self.client, SlackAdmins(self.client))
        self.team.register(self.app)
        core.register_platform(PLATFORM, self.handlers.sink_for_job)
        self._socket: AsyncSocketModeHandler | None = None
        self._runner: web.AppRunner | None = None
        self.port: int | None = None
        """HTTP mode: the port actually bound (useful with `SLACK_HTTP_PORT=0`)."""

    @property
    def socket_mode(self) -> bool:
        return bool(self.app_token)

    async def start(self) -> None:
        identity = await self._check_bot_token()
        if self.socket_mode:
            await self._connect_socket_mode()
            log.info("Slack: connected in Socket Mode as %s", identity)
        else:
            await self._listen()
            log.info(
                "Slack: listening on http://%s:%s%s as %s",
                self.settings.slack_http_host,
                self.port,
                EVENTS_PATH,
                identity,
            )

    async def ready(self) -> bool:
        """Socket Mode: the websocket is connected; HTTP mode: the listener is up (`/readyz`)."""
        if self.socket_mode:
            return self._socket is not None and await self._socket.client.is_connected()
        return self._runner is not None

    async def close(self) -> None:
        if self._socket is not None:
            await self._socket.close_async()
            self._socket = None
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        await self.files.close()

    # --- start-up ---------------------------------------------------------------------------------

    async def _check_bot_token(self) -> str:
        try:
            auth = await self.client.auth_test()
        except SlackApiError as exc:
            reason = exc.response.get("error")
            raise SlackStartError(f"SLACK_BOT_TOKEN was refused by Slack ({reason})") from None
        except (aiohttp.ClientError, TimeoutError) as exc:
            where = f"Slack at {self.settings.slack_api_base} ({type(exc).__name__})"
            if "slack_api_base" in self.settings.model_fields_set:  # the user chose it
                raise SlackStartError(f"SLACK_API_BASE: cannot reach {where}") from None
            raise SlackStartError(
                f"cannot reach {where}; check this machine's network connection"
            ) from None
        return f"{auth.get('user') or auth.get('user_id')} in {auth.get('team') or '?'}"

    async def _connect_socket_mode(self) -> None:
        handler = AsyncSocketModeHandler(self.app, self.app_token, web_client=self.client)
        try:
            try:
                # asked here, not inside the SDK's connect loop, which retries a bad token forever
                opened = await self.client.apps_connections_open(app_token=self.app_token)
            except SlackApiError as exc:
                reason = exc.response.get("error")
                raise SlackStartError(f"SLACK_APP_TOKEN was refused by Slack ({reason})") from None
            except (aiohttp.ClientError, TimeoutError) as exc:
                raise SlackStartError(
                    f"Slack Socket Mode: cannot open a connection ({type(exc).__name__})"
                ) from None
            handler.client.wss_uri = str(opened["url"])
            try:
                async with asyncio.timeout(CONNECT_TIMEOUT):
                    await handler.connect_async()
            except TimeoutError:
                message = "Slack Socket Mode: could not connect the websocket"
                raise SlackStartError(message) from None
        except BaseException:  # refused, unreachable or cancelled: leave no session open
            await handler.close_async()
            raise
        self._socket = handler

    async def _listen(self) -> None:
        server = web.Application()
        server.router.add_post(EVENTS_PATH, self._dispatch)
        server.router.add_get(HEALTH_PATH, self._health)
        runner = web.AppRunner(server, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, self.settings.slack_http_host, self.settings.slack_http_port)
        try:
            await site.start()
        except OSError as exc:
            await runner.cleanup()
            raise SlackStartError(
                f"SLACK_HTTP_PORT: cannot listen on "
                f"{self.settings.slack_http_host}:{self.settings.slack_http_port} ({exc.strerror})"
            ) from None
        self._runner = runner
        addresses = runner.addresses
        self.port = int(addresses[0][1]) if addresses else self.settings.slack_http_port

    async def _dispatch(self, request: web.Request) -> web.Response:
        bolt_response = await self.app.async_dispatch(await to_bolt_request(request))
        return await to_aiohttp_response(bolt_response)

    async def _health(self, request: web.Request) -> web.Response:
        return web.Response(text="ok")
