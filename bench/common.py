"""What every benchmark shares: result rows, percentiles, images, /proc readings, loop lag."""

from __future__ import annotations

import asyncio
import contextlib
import io
import math
import os
import platform
import random
import struct
import time
import zlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

from PIL import Image as PILImage

MB = 1_000_000
"""Image sizes are decimal megabytes: `--image-mb 1.5` is 1,500,000 bytes."""


class Verdict(StrEnum):
    MET = "met"
    MISSED = "**missed**"
    PENDING = "pending"
    INFO = "—"


@dataclass(frozen=True)
class Row:
    """One line of the results table."""

    figure: str
    goal: str
    measured: str
    verdict: Verdict
    note: str = ""


@dataclass(frozen=True)
class Options:
    jobs: int = 200
    latency: float = 5.0
    image_mb: float = 1.5
    cap: int = 16

    @property
    def image_bytes(self) -> int:
        return int(self.image_mb * MB)


def verdict(ok: bool) -> Verdict:
    return Verdict.MET if ok else Verdict.MISSED


def percentile(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100) of a non-empty sequence."""
    ordered = sorted(values)
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return ordered[rank - 1]


def ms(seconds: float) -> str:
    return f"{seconds * 1000:.0f} ms" if seconds >= 0.01 else f"{seconds * 1000:.2f} ms"


# --- images ----------------------------------------------------------------------------------


def noise_png(size: int, seed: int = 1) -> bytes:
    """A real PNG of random noise (incompressible) of exactly `size` bytes.

    Pillow writes the noise image a little under `size`; a private ancillary chunk
    (`bnCh`, ignored by decoders) pads it to the exact byte count.
    """
    rng = random.Random(seed)
    side = max(1, int(math.sqrt(max(size - 2000, 3) / 3)))
    while True:
        buffer = io.BytesIO()
        PILImage.frombytes("RGB", (side, side), rng.randbytes(side * side * 3)).save(
            buffer, format="PNG", compress_level=1
        )
        data = buffer.getvalue()
        if len(data) + 12 <= size:
            break
        side -= max(1, side // 100)
    padding = size - len(data) - 12  # a chunk is length, type, data, crc
    chunk_type = b"bnCh"
    chunk = chunk_type + b"\0" * padding
    iend = data.rindex(b"IEND") - 4
    packed = struct.pack(">I", padding) + chunk + struct.pack(">I", zlib.crc32(chunk))
    result = data[:iend] + packed + data[iend:]
    assert len(result) == size, (len(result), size)
    return result


# --- the machine and processes ---------------------------------------------------------------


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    memory = proc_status("self", "MemTotal", Path("/proc/meminfo"))
    gib = f"{memory / 2**20:.1f} GiB" if memory else "? GiB"
    return f"{os.cpu_count()} cores ({cpu}), {gib} RAM, Linux {platform.release()}"


def proc_status(pid: int | str, field: str, path: Path | None = None) -> int:
    """A `kB` field of /proc/<pid>/status (or another such file), in KiB; 0 if unreadable."""
    try:
        text = (path or Path(f"/proc/{pid}/status")).read_text()
    except OSError:
        return 0
    for line in text.splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return 0


def reset_peak_rss(pid: int | str) -> bool:
    """Reset VmHWM to the current RSS (Linux ≥ 4.0); False when not allowed."""
    try:
        Path(f"/proc/{pid}/clear_refs").write_text("5")
    except OSError:
        return False
    return True


class RssSampler:
    """Samples VmRSS of a process every `interval` s while running (a fallback for VmHWM)."""

    def __init__(self, pid: int | str, interval: float = 0.05) -> None:
        self.pid = pid
        self.interval = interval
        self.peak_kib = 0
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def stop(self) -> int:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        return self.peak_kib

    async def _run(self) -> None:
        while True:
            self.peak_kib = max(self.peak_kib, proc_status(self.pid, "VmRSS"))
            await asyncio.sleep(self.interval)


# --- event-loop lag --------------------------------------------------------------------------


class LoopLag:
    """A 10 ms ticker: how late each tick wakes up is the loop's lag at that moment."""

    def __init__(self, period: float = 0.01) -> None:
        self.period = period
        self.samples: list[tuple[float, float]] = []
        """(monotonic time the tick was due, lag in seconds)."""
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self.run())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def run(self) -> None:
        while True:
            due = time.monotonic() + self.period
            await asyncio.sleep(self.period)
            self.samples.append((due, max(0.0, time.monotonic() - due)))

    def max_between(self, start: float, end: float) -> float:
        return max((lag for at, lag in self.samples if start <= at <= end), default=0.0)

    def lags_between(self, start: float, end: float) -> list[float]:
        return [lag for at, lag in self.samples if start <= at <= end]


@contextlib.contextmanager
def timer() -> Iterator[list[float]]:
    """`with timer() as t: …` then `t[0]` is the elapsed seconds."""
    box: list[float] = []
    start = time.perf_counter()
    try:
        yield box
    finally:
        box.append(time.perf_counter() - start)
