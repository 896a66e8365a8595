"""`imagine-bot run`, unchanged, plus a 10 ms ticker on its event loop.

`python -m bench.bot_process` calls `bot.cli.main(["run"])` — the same settings, logging,
composition root (`serve`), adapters and signal handling as `python -m bot run` — after
installing an event-loop policy whose loop also runs the `LoopLag` ticker. The ticker's
samples are written to `$BENCH_LAG_FILE` (JSON `[[due, lag], …]`, monotonic seconds, which
are comparable across processes on Linux) when the loop shuts down. The process cannot be
measured from outside without such a hook; nothing in bot/ knows about it.
"""

from __future__ import annotations

import asyncio
import json
import os
from pathlib import Path

from bench.common import LoopLag
from bot.cli import main

LAG_FILE = "BENCH_LAG_FILE"


async def _tick(lag: LoopLag, path: Path) -> None:
    try:
        await lag.run()
    finally:
        path.write_text(json.dumps(lag.samples))


class _TickingPolicy(asyncio.DefaultEventLoopPolicy):
    def new_event_loop(self) -> asyncio.AbstractEventLoop:
        loop = super().new_event_loop()
        path = Path(os.environ[LAG_FILE])
        loop.call_soon(lambda: loop.create_task(_tick(LoopLag(), path), name="bench-ticker"))
        return loop


if __name__ == "__main__":
    asyncio.set_event_loop_policy(_TickingPolicy())
    raise SystemExit(main(["run"]))
