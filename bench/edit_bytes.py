"""Edits that stay fast as threads grow: bytes an edit sends at depth 8 ÷ at depth 1, and
the end-to-end time of a depth-8 edit over a 50 Mbit/s uplink ÷ the provider's latency.

The real providers (`GeminiProvider` with the Files API, `NexconnProvider` in chat mode)
talk to the loopback fakes (tests/fakes/gemini_files_server.py, nexconn_server.py) through
a TCP proxy that paces every byte going *up* to 50 Mbit/s, all connections sharing one
link (answers come down unpaced). A thread is built turn by turn as users build it: an
imagine, then edits, each answered with a fresh incompressible `--image-mb` PNG; between
turns the provider finishes its work ahead of the next edit (uploads, reduced copies), as
it does while a user looks at the image. Depth d = an edit whose history holds d turns.

Bytes are every request body the fake received because of that edit — its generation
request, and for Gemini the uploads it caused (steady state: only images not uploaded
before). The measured edits wait `--latency` seconds at the fake; the others answer at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from bench.common import Options, Row, noise_png, verdict
from bot.models import HistoryTurn, ImageRequest, ImageResult
from bot.providers.files import FileCache
from bot.providers.gemini import GeminiProvider
from bot.providers.nexconn import NexconnProvider
from tests.fakes.gemini_files_server import FakeGeminiFiles
from tests.fakes.gemini_server import answer, image_part
from tests.fakes.nexconn_server import FakeNexconn, chat_answer, images_answer
from tests.fakes.scripted_json_server import Recorded, Reply

UPLINK_BITS = 50_000_000
DEPTH = 8
MODEL = "gemini-2.5-flash-image"


class Uplink:
    """One shared uplink: bytes leave no faster than `bits` per second, in order."""

    def __init__(self, bits: int) -> None:
        self.rate = bits / 8
        self.free_at = 0.0

    async def send(self, size: int) -> None:
        now = time.monotonic()
        start = max(now, self.free_at)
        self.free_at = start + size / self.rate
        await asyncio.sleep(self.free_at - now)


@contextlib.asynccontextmanager
async def throttled(upstream: str, uplink: Uplink) -> AsyncIterator[str]:
    """A TCP proxy on loopback in front of `upstream`, pacing client → server bytes."""
    host, port = upstream.removeprefix("http://").split(":")

    async def pipe(
        reader: asyncio.StreamReader, writer: asyncio.StreamWriter, link: Uplink | None
    ) -> None:
        with contextlib.suppress(ConnectionError):
            while chunk := await reader.read(64 * 1024):
                if link is not None:
                    await link.send(len(chunk))
                writer.write(chunk)
                await writer.drain()
        with contextlib.suppress(OSError, RuntimeError):
            writer.close()

    async def handle(client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        server_r, server_w = await asyncio.open_connection(host, int(port))
        await asyncio.gather(pipe(client_r, server_w, uplink), pipe(server_r, client_w, None))

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    address = server.sockets[0].getsockname()
    try:
        yield f"http://127.0.0.1:{address[1]}"
    finally:
        server.close()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(server.wait_closed(), 2)


@dataclass(frozen=True)
class Edit:
    depth: int
    sent: int
    """Request body bytes the fake received because of the edit."""
    seconds: float
    """From the call to the image in hand."""


def body_bytes(recorded: list[Recorded]) -> int:
    return sum(len(r.raw) for r in recorded)


async def build(
    turns: int,
    options: Options,
    make: Callable[[int, bool], None],
    generate: Callable[[ImageRequest], Awaitable[ImageResult]],
    idle: Callable[[], Awaitable[None]],
    received: Callable[[], int],
    provider: str,
    measured: tuple[int, ...],
) -> list[Edit]:
    """Make a thread turn by turn; measure the edits at the `measured` depths."""
    history: list[HistoryTurn] = []
    edits: list[Edit] = []
    for depth in range(turns):
        timed = depth in measured
        make(depth, timed)
        before = received()
        started = time.perf_counter()
        result = await generate(ImageRequest(f"step {depth}", "1:1", MODEL, history=tuple(history)))
        seconds = time.perf_counter() - started
        await idle()
        if timed:
            edits.append(Edit(depth, received() - before, seconds))
        history.append(
            HistoryTurn(
                prompt=f"step {depth}",
                references=(),
                result=result.image,
                text=result.text,
                provider=provider,
                provider_state=result.provider_state,
            )
        )
    return edits


async def gemini(options: Options, images: list[bytes]) -> list[Edit]:
    fake = FakeGeminiFiles("bench-gemini-key")
    await fake.start()
    try:
        async with throttled(fake.base_url, Uplink(UPLINK_BITS)) as url:
            provider = GeminiProvider("bench-gemini-key", url, files=FileCache(), timeout=60)

            def make(depth: int, timed: bool) -> None:
                reply = answer([image_part(images[depth])])
                fake.script(Reply(200, reply, delay=options.latency if timed else 0.0))

            def received() -> int:
                return body_bytes(fake.generations) + body_bytes(fake.starts + fake.finishes)

            try:
                return await build(
                    DEPTH + 1,
                    options,
                    make,
                    provider.generate,
                    provider.idle,
                    received,
                    "gemini",
                    (1, DEPTH),
                )
            finally:
                await provider.aclose()
    finally:
        await fake.close()


async def nexconn(options: Options, images: list[bytes]) -> list[Edit]:
    fake = FakeNexconn("bench-nexconn-key")
    await fake.start()
    try:
        async with throttled(fake.base_url, Uplink(UPLINK_BITS)) as url:
            provider = NexconnProvider("bench-nexconn-key", url, timeout=60)

            def make(depth: int, timed: bool) -> None:
                body: dict[str, Any] = (
                    images_answer(images[depth]) if depth == 0 else chat_answer(images[depth])
                )
                fake.script(Reply(200, body, delay=options.latency if timed else 0.0))

            try:
                return await build(
                    DEPTH + 1,
                    options,
                    make,
                    provider.generate,
                    provider.idle,
                    lambda: body_bytes(fake.requests),
                    "nexconn",
                    (1, DEPTH),
                )
            finally:
                await provider.aclose()
    finally:
        await fake.close()


def rows_for(name: str, how: str, edits: list[Edit], options: Options) -> list[Row]:
    first, deep = edits
    ratio = deep.sent / first.sent
    e2e = deep.seconds / options.latency
    mb = 1_000_000
    return [
        Row(
            f"{name}: bytes sent by an edit at depth {DEPTH} ÷ at depth 1",
            "≤ 1.5",
            f"{ratio:.2f} ({deep.sent / mb:.2f} MB ÷ {first.sent / mb:.2f} MB)",
            verdict(ratio <= 1.5),
            f"{options.image_mb:g} MB images; {how}",
        ),
        Row(
            f"{name}: end-to-end of a depth-{DEPTH} edit at 50 Mbit/s up ÷ provider latency",
            "≤ 1.10",
            f"{e2e:.3f} ({deep.seconds:.2f} s ÷ {options.latency:g} s; depth 1: "
            f"{first.seconds:.2f} s)",
            verdict(e2e <= 1.10),
            "loopback fake behind a proxy pacing uploads to 50 Mbit/s",
        ),
    ]


async def run(options: Options) -> list[Row]:
    images = [noise_png(options.image_bytes, seed=100 + n) for n in range(DEPTH + 1)]
    rows = rows_for(
        "Gemini (Files API)",
        "uploads counted once, when the edit that first sends an image inline uploads it "
        "after its answer",
        await gemini(options, images),
        options,
    )
    rows += rows_for(
        "Nexconn chat",
        "older images as ≤ 512 px JPEG copies (noise: the worst case for JPEG)",
        await nexconn(options, images),
        options,
    )
    return rows
