"""The composition root: the only module that knows every concrete part.

`imagine-bot run` serves Discord and/or Slack (whichever credentials are set);
`imagine-bot console` runs the same core in the terminal; `purge` and `usage` are for
operators and need no chat platform.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import logging
import os
import signal
import sys
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any, Protocol

from bot.config import Settings, SettingsError, StartupError, load_settings
from bot.core import ImagineBot
from bot.health import open_health
from bot.logs import setup_logging
from bot.providers import build_provider
from bot.queue import Limits

log = logging.getLogger("imagine-bot")


class Adapter(Protocol):
    name: str

    async def start(self) -> None: ...

    async def ready(self) -> bool: ...

    async def close(self) -> None: ...


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("imagine-bot")
    except PackageNotFoundError:
        return "(not installed: run pip install -e .)"


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="imagine-bot",
        description="Generate and refine images with Gemini 2.5 Flash Image from Discord, "
        "Slack or the terminal. Configuration comes from the environment and .env "
        "(see .env.example); the options below override it.",
    )
    parser.add_argument(
        "--version", action="version", version=f"%(prog)s {_version()}", help="print the version"
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    def common(p: argparse.ArgumentParser) -> None:
        p.add_argument(
            "--provider",
            metavar="NAME[,NAME…]",
            help="image provider: nexconn, gmi, gemini or demo, or several in order of "
            "preference to fail over (IMAGINE_PROVIDER; default: the first with a key, else demo)",
        )
        p.add_argument("--database-url", help="DATABASE_URL, e.g. sqlite:///./data/bot.db")
        p.add_argument("--log-level", help="LOG_LEVEL: DEBUG, INFO, WARNING, ERROR")

    run = sub.add_parser(
        "run",
        help="serve Discord and/or Slack",
        description="Start every chat adapter whose credentials are set: Discord "
        "(DISCORD_TOKEN) and Slack (SLACK_BOT_TOKEN, plus SLACK_APP_TOKEN for Socket Mode "
        "or SLACK_SIGNING_SECRET for HTTP mode). SIGTERM/SIGINT stop it gracefully.",
    )
    common(run)
    console = sub.add_parser(
        "console",
        help="make and edit images in the terminal",
        description="Read commands from standard input: /imagine <prompt> [--ar 16:9], any "
        "other line edits the current image, /new, /threads, /thread N, /usage, /quit. "
        "With no provider key it uses the offline demo provider.",
    )
    common(console)
    console.add_argument("--output-dir", type=Path, help="IMAGINE_OUTPUT_DIR (default ./out)")
    purge = sub.add_parser(
        "purge",
        help="delete the images of turns older than IMAGINE_RETENTION_DAYS (for cron)",
        description="Remove the stored bytes of images that only turns older than "
        "IMAGINE_RETENTION_DAYS use (their text stays; images a newer turn or an unfinished "
        "job needs are kept), then give SQLite's space back. A running bot does this hourly.",
    )
    common(purge)
    purge.add_argument(
        "--days", type=int, help="retention in days (default: IMAGINE_RETENTION_DAYS)"
    )
    usage = sub.add_parser(
        "usage",
        help="images and estimated cost per workspace and user, from the ledger",
        description="Read the ledger (every accepted job that did not fail and was not "
        "cancelled) without a chat platform: images and estimated US$ "
        "(IMAGINE_PRICE_PER_IMAGE per image, fixed when each job was accepted) per "
        "platform, workspace and user. Days are calendar days in IMAGINE_QUOTA_TZ. "
        "Default: this month.",
    )
    usage.add_argument("--database-url", help="DATABASE_URL, e.g. sqlite:///./data/bot.db")
    usage.add_argument("--log-level", help="LOG_LEVEL: DEBUG, INFO, WARNING, ERROR")
    usage.add_argument(
        "--since",
        metavar="YYYY-MM-DD",
        help="first day counted, from its midnight (default: the first of --until's month, "
        "or of this month)",
    )
    usage.add_argument(
        "--until",
        metavar="YYYY-MM-DD",
        help="last day counted, included up to the next midnight (default: today with "
        "--since, else the end of this month)",
    )
    usage.add_argument(
        "--workspace",
        metavar="ID",
        help="only this workspace: a Discord server id, a Slack team id, or local (the console)",
    )
    usage.add_argument(
        "--format",
        choices=["table", "csv", "json"],
        default="table",
        help="table (aligned, with a total; the default), csv (platform,workspace,user,"
        "images,cost_usd) or json (a list of objects with those keys)",
    )
    return parser


def _settings(args: argparse.Namespace) -> Settings:
    overrides: dict[str, Any] = {}
    for option, variable in (
        ("provider", "IMAGINE_PROVIDER"),
        ("database_url", "DATABASE_URL"),
        ("log_level", "LOG_LEVEL"),
        ("output_dir", "IMAGINE_OUTPUT_DIR"),
    ):
        value = getattr(args, option, None)
        if value is not None:
            overrides[variable] = value
    return load_settings(**overrides)


@contextlib.asynccontextmanager
async def open_core(settings: Settings) -> AsyncIterator[ImagineBot]:
    """Store, provider and core, closed in the right order however the block ends."""
    from storage import DatabaseUnavailable, open_store, redact_url

    try:
        store = await open_store(settings.database_url)
    except DatabaseUnavailable as exc:
        raise StartupError(str(exc)) from None
    provider = build_provider(settings)
    log.info(
        "provider %s, model %s, database %s",
        provider.name,
        settings.model,
        redact_url(settings.database_url),
    )
    core = ImagineBot(
        store,
        provider,
        model=settings.model,
        limits=Limits(
            concurrency=settings.concurrency,
            per_user_running=settings.user_max_running,
            per_user_queued=settings.user_max_queued,
        ),
        history_turns=settings.history_turns,
        retention_days=settings.retention_days,
        default_aspect_ratio=settings.default_aspect_ratio,
        job_timeout=settings.job_timeout,
        lease=settings.job_lease,
        poll=settings.job_poll,
        team=settings.team_settings(),
        models=settings.offered_models,
    )
    try:
        await core.start()
        yield core
    finally:
        await core.shutdown(settings.shutdown_grace)
        await provider.aclose()
        await store.close()


def _stop_on_signals(stop: asyncio.Event) -> None:
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, stop.set)


def _adapters(core: ImagineBot, settings: Settings) -> list[Adapter]:
    adapters: list[Adapter] = []
    if settings.discord_enabled:
        from adapters.discord import DiscordAdapter

        adapters.append(DiscordAdapter(core, settings))
    if settings.slack_enabled:
        from adapters.slack import SlackAdapter

        adapters.append(SlackAdapter(core, settings))
    return adapters


async def serve(settings: Settings, stop: asyncio.Event | None = None) -> int:
    if not (settings.discord_enabled or settings.slack_enabled):
        print(
            "imagine-bot run: no chat platform is configured. Set DISCORD_TOKEN for Discord "
            "and/or SLACK_BOT_TOKEN (with SLACK_APP_TOKEN or SLACK_SIGNING_SECRET) for Slack. "
            "Try `imagine-bot console` to use it in the terminal.",
            file=sys.stderr,
        )
        return 2
    stop = stop or asyncio.Event()
    _stop_on_signals(stop)
    async with open_core(settings) as core, open_health(settings, core.store) as health:
        started: list[Adapter] = []
        try:
            # constructing an adapter registers its sink factory, so resumed jobs can deliver
            adapters = _adapters(core, settings)
            health.watch([(adapter.name, adapter.ready) for adapter in adapters])
            for adapter in adapters:
                started.append(adapter)  # closed below even if its start fails half-way
                await adapter.start()
            resumed = await core.resume_unfinished()
            log.info(
                "worker %s serves the job queue; took %d job(s) at start", core.worker.id, resumed
            )
            # Start-up objects (libraries, caches) live forever: keep them out of the
            # collector's full passes, which otherwise pause the loop ~100 ms under load.
            gc.collect()
            gc.freeze()
            log.info("imagine-bot is running; SIGTERM or Ctrl+C stops it")
            await stop.wait()
            # drain before the adapters close: running jobs still deliver through them
            log.info("stopping: finishing running jobs (up to %ss)", settings.shutdown_grace)
            await core.shutdown(settings.shutdown_grace)
        finally:
            for adapter in reversed(started):
                with contextlib.suppress(Exception):
                    await adapter.close()
    return 0


LEAVING_NOW = 130
"""`imagine-bot console`'s exit status after a second Ctrl+C left a job unfinished."""


async def console(settings: Settings) -> int:
    from adapters.console import ConsoleAdapter, check_output_dir

    check_output_dir(settings.output_dir)
    stop = asyncio.Event()
    leave_now = asyncio.Event()
    _stop_on_signals(stop)
    async with open_core(settings) as core:
        adapter = ConsoleAdapter(core, settings.output_dir)

        def interrupted() -> None:
            """Ctrl+C: finish the running image and leave; a second one leaves at once."""
            if stop.is_set():
                leave_now.set()
                return
            stop.set()
            if core.board.live:
                adapter.say("finishing the current image… (Ctrl+C again to leave now)")

        with contextlib.suppress(NotImplementedError, RuntimeError):
            asyncio.get_running_loop().add_signal_handler(signal.SIGINT, interrupted)
        resumed = await core.resume_unfinished()
        if resumed:
            print(f"resuming {resumed} unfinished image(s) from last time")
        runner = asyncio.create_task(adapter.run(stop))
        stopper = asyncio.create_task(stop.wait())
        await asyncio.wait({runner, stopper}, return_when=asyncio.FIRST_COMPLETED)
        stopper.cancel()
        if not runner.done():
            runner.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await runner
        if stop.is_set():
            # the running image gets the grace period, unless Ctrl+C comes again
            draining = asyncio.create_task(core.shutdown(settings.shutdown_grace))
            leaving = asyncio.create_task(leave_now.wait())
            await asyncio.wait({draining, leaving}, return_when=asyncio.FIRST_COMPLETED)
            leaving.cancel()
            if not draining.done():
                await core.shutdown(0)  # hands the job back to the queue at once
                await draining
                adapter.say("left now; the unfinished image resumes the next time you start")
                return LEAVING_NOW
    return 0


async def purge(settings: Settings, days: int | None = None) -> int:
    """`imagine-bot purge`: one retention sweep, without serving anything."""
    from bot.models import now
    from storage import open_store

    days = settings.retention_days if days is None else days
    if days < 0:
        print("imagine-bot purge: --days must be 0 or more", file=sys.stderr)
        return 2
    if days == 0:
        print("imagine-bot purge: IMAGINE_RETENTION_DAYS is 0 (keep forever); nothing to do.")
        return 0
    store = await open_store(settings.database_url)
    try:
        result = await store.purge_images(
            before=now() - days * 86400, history_turns=settings.history_turns
        )
    finally:
        await store.close()
    print(
        f"imagine-bot purge: removed {result.images} image(s), "
        f"{result.bytes / (1024 * 1024):.1f} MB, used only by turns older than {days} day(s)"
    )
    return 0


def _missing_sqlite_file(database_url: str) -> Path | None:
    """The SQLite file `database_url` names, when it does not exist (else None)."""
    from storage.urls import parse_url, sqlite_path

    path = sqlite_path(parse_url(database_url))
    return path if path is not None and not path.exists() else None


async def usage(
    settings: Settings,
    *,
    since: str | None = None,
    until: str | None = None,
    workspace: str | None = None,
    fmt: str = "table",
) -> int:
    """`imagine-bot usage`: the ledger for a period, printed; no chat platform, no provider."""
    from bot.models import now
    from bot.report import BadDate, parse_day, render, usage_period
    from storage import DatabaseUnavailable, open_store

    tz = settings.team_settings().tz
    try:
        first = parse_day("--since", since) if since is not None else None
        last = parse_day("--until", until) if until is not None else None
        period = usage_period(first, last, tz, now())
    except BadDate as exc:
        print(f"imagine-bot usage: {exc}", file=sys.stderr)
        return 2
    missing = _missing_sqlite_file(settings.database_url)
    if missing is not None:  # a report must not make an empty database and call it a ledger
        print(
            f"imagine-bot usage: no database at {missing} (DATABASE_URL); nothing to report",
            file=sys.stderr,
        )
        return 2
    try:
        store = await open_store(settings.database_url)
    except DatabaseUnavailable as exc:
        raise StartupError(str(exc)) from None
    try:
        lines = await store.usage_lines(period.start, period.end, workspace=workspace)
    finally:
        await store.close()
    print(render(fmt, lines, period, tz))
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        settings = _settings(args)
    except SettingsError as exc:
        print(f"imagine-bot: invalid configuration: {exc}", file=sys.stderr)
        return 2
    level = settings.log_level
    quiet = args.command in ("console", "usage")
    if quiet and "LOG_LEVEL" not in os.environ and not args.log_level:
        level = "WARNING"  # the terminal is the user interface; keep it readable
    setup_logging(level, settings.log_format, settings.secrets())
    try:
        if args.command == "console":
            return asyncio.run(console(settings))
        if args.command == "purge":
            return asyncio.run(purge(settings, args.days))
        if args.command == "usage":
            return asyncio.run(
                usage(
                    settings,
                    since=args.since,
                    until=args.until,
                    workspace=args.workspace,
                    fmt=args.format,
                )
            )
        return asyncio.run(serve(settings))
    except StartupError as exc:
        print(f"imagine-bot: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
