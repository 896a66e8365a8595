"""The terminal adapter: the same core as Discord and Slack, driven by lines of text.

`/imagine <prompt> [--ar 16:9]` starts a thread, any other line edits the current thread's
latest image, `/new` starts afresh, `/threads` lists threads (newest first) and
`/thread N` picks one up again, `/usage` shows the images made and what is left under the
limits, `/quit` leaves. Images are written to the output folder and their paths printed.
The current thread is remembered in the store, so a second run continues where the first
stopped.
"""

from __future__ import annotations

import asyncio
import contextlib
import getpass
import os
import sys
import tempfile
import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, TextIO

from bot.chart import usage_chart
from bot.config import StartupError
from bot.core import Delivery, EditRequest, ImagineBot, ImagineRequest, Phase, Progress
from bot.errors import ImagineError
from bot.inputs import split_prompt_flags
from bot.models import Job, Thread, ThreadKey, new_id
from bot.policy import Requester
from bot.usage import render_usage

PLATFORM = "console"
WORKSPACE, CHANNEL = "local", "console"
CURRENT_THREAD = "console:current-thread"
HELP = """commands:
  /imagine <prompt> [--ar 16:9]   start a new image thread
  <any text>                      edit the current thread's latest image
  /new                            leave the current thread (the next line starts a new one)
  /threads                        list threads;  /thread N  continues thread N
  /usage                          images made today and this month, and what is left
  /help                           this text;     /quit  leave"""


def thread_key(thread_id: str) -> ThreadKey:
    return ThreadKey(PLATFORM, WORKSPACE, CHANNEL, thread_id)


@dataclass(frozen=True, slots=True)
class ConsoleSink:
    """Prints progress and writes the image; bound to one job like bolt's `say`."""

    output_dir: Path
    write: Callable[[str], None]

    async def progress(self, update: Progress) -> None:
        if update.phase is Phase.QUEUED:
            self.write(f"… queued (position {update.position})")
        elif update.phase is Phase.GENERATING and update.elapsed == 0:
            self.write("… generating")

    async def deliver(self, delivery: Delivery) -> str | None:
        turn = delivery.turn
        name = f"{turn.thread_id}-{datetime.now():%Y%m%d-%H%M%S}-{turn.id[:6]}.png"
        path = self.output_dir / name
        try:
            await asyncio.to_thread(_write_file, path, delivery.image.data)
        except OSError as exc:
            # The image is stored with its thread, so the next edit still builds on it.
            where = await asyncio.to_thread(os.path.abspath, path)
            self.write(
                f"✗ couldn't save the image as {where} ({_reason(exc)}). "
                "Make that folder writable, or restart with another IMAGINE_OUTPUT_DIR "
                "(--output-dir); the image is kept in this thread, so your next edit "
                "builds on it."
            )
            return None
        for note in delivery.notes:
            self.write(f"note: {note}")
        made_by = "offline demo" if turn.provider == "demo" else f"{turn.provider} {turn.model}"
        self.write(f"✓ {path}  ({turn.aspect_ratio}, {made_by}, {turn.duration_s:.1f} s)")
        return None

    async def fail(self, job: Job | None, error: ImagineError) -> None:
        self.write(f"✗ {error.user_message}")


def _write_file(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)


def _reason(exc: OSError) -> str:
    return exc.strerror or str(exc) or type(exc).__name__


def check_output_dir(output_dir: Path) -> None:
    """Create the output folder if missing and make sure files can be written in it;
    else `StartupError` with one line naming the folder."""
    folder = os.path.abspath(output_dir)
    hint = "choose another folder with --output-dir or IMAGINE_OUTPUT_DIR"
    if output_dir.exists() and not output_dir.is_dir():
        raise StartupError(f"the output folder {folder} is a file, not a folder; {hint}")
    try:
        output_dir.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=output_dir, prefix=".imagine-bot-check-"):
            pass
    except OSError as exc:
        raise StartupError(
            f"cannot write images to the output folder {folder} ({_reason(exc)}); {hint}"
        ) from None


class ConsoleAdapter:
    def __init__(
        self,
        core: ImagineBot,
        output_dir: Path,
        *,
        stdin: TextIO = sys.stdin,
        stdout: TextIO = sys.stdout,
        user_id: str | None = None,
    ) -> None:
        self.core = core
        self.stdin = stdin
        self.stdout = stdout
        self.user_id = user_id or _user()
        self.sink = ConsoleSink(output_dir, self._print)
        self.current: str | None = None
        self._listed: list[Thread] = []
        self._asking = False  # a prompt is on screen, waiting for a line
        core.register_platform(PLATFORM, lambda job: self.sink)

    def _print(self, text: str) -> None:
        # never on the prompt's line: a result that arrives while it waits starts a new one
        self.stdout.write(("\n" if self._asking else "") + text + "\n")
        self.stdout.flush()

    def say(self, text: str) -> None:
        """A line from outside the conversation (Ctrl+C), on a line of its own."""
        self._print(("\n" if self.interactive and not self._asking else "") + text)

    @property
    def interactive(self) -> bool:
        """Typing at a terminal (not a script piped in): a prompt, line editing, history."""
        return _isatty(self.stdin)

    async def run(self, stop: asyncio.Event | None = None) -> None:
        """Read commands until `/quit`, end of input or `stop`; each job finishes first."""
        stored = await self.core.store.get_state(CURRENT_THREAD)
        if isinstance(stored, str) and await self.core.store.get_thread(stored):
            self.current = stored
            thread = await self.core.store.get_thread(stored)
            if thread:
                self._print(f"continuing thread “{thread.title[:60]}” (/new for a new one)")
        self._print("imagine-bot console. /help for commands.")
        if not self.interactive:
            lines = _line_reader(self.stdin)
            while stop is None or not stop.is_set():
                line = await lines.get()
                if line is None or not await self.handle(line.strip()):
                    break
                await self.core.idle()
        else:
            terminal = _Terminal(self.stdin, self.stdout)
            try:
                while stop is None or not stop.is_set():
                    await self.core.idle()  # results first: the prompt comes after them
                    self._asking = True
                    line = await terminal.read("> ")  # cancelled here: _asking stays True
                    self._asking = False
                    if line is None or not await self.handle(line.strip()):
                        break
            finally:
                terminal.restore(newline=self._asking)
                self._asking = False
        if stop is None or not stop.is_set():
            await self.core.idle()  # resumed jobs finish before the console leaves

    async def handle(self, line: str) -> bool:
        """Handle one line; False means quit."""
        if not line:
            return True
        command, _, rest = line.partition(" ")
        try:
            if command in ("/quit", "/exit"):
                return False
            if command == "/help":
                self._print(HELP)
            elif command == "/new":
                await self._select(None)
                self._print("new thread: type a prompt (or /imagine <prompt> --ar 16:9)")
            elif command == "/threads":
                await self._list_threads()
            elif command == "/thread":
                await self._pick(rest.strip())
            elif command == "/imagine":
                await self._imagine(rest)
            elif command == "/usage":
                await self._usage()
            elif command.startswith("/"):
                self._print(f"unknown command {command}; /help lists them")
            elif self.current is None:
                await self._imagine(line)
            else:
                await self._edit(line)
        except ImagineError as error:
            self._print(f"✗ {error.user_message}")
        return True

    async def _imagine(self, text: str) -> None:
        prompt, ratio = split_prompt_flags(text)
        thread_id = new_id()
        request = ImagineRequest(
            key=thread_key(thread_id),
            user_id=self.user_id,
            prompt=prompt,
            aspect_ratio=ratio,
        )
        job = await self.core.imagine(request, self.sink)
        await self._select(job.thread_id)

    async def _edit(self, text: str) -> None:
        instruction, ratio = split_prompt_flags(text)
        thread = await self.core.store.get_thread(self.current or "")
        if thread is None:
            await self._imagine(text)
            return
        request = EditRequest(
            user_id=self.user_id,
            instruction=instruction,
            thread_key=thread.key,
            aspect_ratio=ratio,
        )
        await self.core.edit(request, self.sink)

    @property
    def requester(self) -> Requester:
        """The console user, where the console's threads are. Always an admin: the console
        runs on the operator's own machine, with the operator's database."""
        return Requester(PLATFORM, WORKSPACE, CHANNEL, self.user_id, platform_admin=True)

    async def _usage(self) -> None:
        """`/usage`: the numbers, then this month's chart written next to the images."""
        report = await self.core.team.usage(self.requester)
        for line in render_usage(report, bold="", mention="{user}"):
            self._print(line)
        if report.workspace is None:
            return
        usage = report.workspace
        chart = await usage_chart(usage.per_day, usage.chart_title)
        path = self.sink.output_dir / f"usage-{usage.first_day:%Y-%m}.png"
        try:
            await asyncio.to_thread(_write_file, path, chart.data)
        except OSError as exc:
            where = await asyncio.to_thread(os.path.abspath, path)
            self._print(f"✗ couldn't save the chart as {where} ({_reason(exc)})")
            return
        self._print(f"chart: {path}")

    async def _select(self, thread_id: str | None) -> None:
        self.current = thread_id
        await self.core.store.set_state(CURRENT_THREAD, thread_id)

    async def _list_threads(self) -> None:
        self._listed = await self.core.store.list_threads(PLATFORM, limit=20)
        if not self._listed:
            self._print("no threads yet: type a prompt")
            return
        for number, thread in enumerate(self._listed, 1):
            marker = "*" if thread.id == self.current else " "
            when = datetime.fromtimestamp(thread.created_at).strftime("%Y-%m-%d %H:%M")
            self._print(f"{marker}{number:>3}. {when}  {thread.title[:70]}")
        self._print("/thread N continues one")

    async def _pick(self, arg: str) -> None:
        if not self._listed:
            self._listed = await self.core.store.list_threads(PLATFORM, limit=20)
        if not arg.isdigit() or not 1 <= int(arg) <= len(self._listed):
            self._print(f"pick a number from 1 to {len(self._listed)} (see /threads)")
            return
        thread = self._listed[int(arg) - 1]
        await self._select(thread.id)
        self._print(f"continuing “{thread.title[:60]}”: type an edit")


def _user() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return "console"


def _isatty(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError, OSError):
        return False


class _Terminal:
    """Lines typed at a terminal, one `input()` at a time in a daemon thread (so leaving
    never waits on it), with `readline`'s line editing and history where the platform has
    it. The terminal's modes are put back on the way out, even if a read is still pending."""

    def __init__(self, stdin: TextIO, stdout: TextIO) -> None:
        self.stdin, self.stdout = stdin, stdout
        # input() edits lines only on the process's own terminal; else plain reads
        self.own = stdin is sys.stdin and stdout is sys.stdout
        if self.own:
            with contextlib.suppress(ImportError):
                import readline  # noqa: F401  (importing it is what turns it on)
        self._modes: list[Any] | None = None
        try:
            import termios

            self._modes = termios.tcgetattr(stdin.fileno())
        except (ImportError, OSError, ValueError, AttributeError):
            pass

    async def read(self, prompt: str) -> str | None:
        loop = asyncio.get_running_loop()
        answer: asyncio.Future[str | None] = loop.create_future()

        def settle(line: str | None) -> None:
            if not answer.done():
                answer.set_result(line)

        def ask() -> None:
            line: str | None
            try:
                if self.own:
                    line = input(prompt)
                else:
                    self.stdout.write(prompt)
                    self.stdout.flush()
                    read = self.stdin.readline()
                    line = read.rstrip("\n") if read else None
            except (EOFError, OSError, ValueError, KeyboardInterrupt):
                line = None
            with contextlib.suppress(RuntimeError):  # the loop may be gone already
                loop.call_soon_threadsafe(settle, line)

        threading.Thread(target=ask, name="console-input", daemon=True).start()
        return await answer

    def restore(self, *, newline: bool) -> None:
        if self._modes is not None:
            with contextlib.suppress(Exception):
                import termios

                termios.tcsetattr(self.stdin.fileno(), termios.TCSANOW, self._modes)
        if newline:  # left at the prompt: the shell's prompt goes on a line of its own
            with contextlib.suppress(Exception):
                self.stdout.write("\n")
                self.stdout.flush()


def _line_reader(stream: TextIO) -> asyncio.Queue[str | None]:
    """Lines from a blocking stream, read in a daemon thread so exit never waits on it."""
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue[str | None] = asyncio.Queue()

    def pump() -> None:
        for line in stream:
            loop.call_soon_threadsafe(queue.put_nowait, line)
        loop.call_soon_threadsafe(queue.put_nowait, None)

    threading.Thread(target=pump, name="console-stdin", daemon=True).start()
    return queue
