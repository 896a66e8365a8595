"""Store: turn lookup by platform message id (the reply-to-an-image hot path), 100k turns.

Setup is bulk: threads, turns and message links are inserted with `executemany` through the
store's own SQLAlchemy engine and tables (`storage.schema`), in chunks, because 100k
one-by-one `complete_job` transactions would take minutes and measure nothing we ask here.
The database is a fresh SQLite file opened with `open_store` (migrations, WAL, the
production pragmas). Then `LOOKUPS` random `SqlStore.turn_for_message` calls — the public
API the adapters use — are timed one by one. Goal: p99 < 2 ms.
"""

from __future__ import annotations

import random
import sqlite3
import tempfile
import time

from bench.common import Options, Row, ms, percentile, verdict
from bot.models import Image
from storage import open_store
from storage.schema import message_links, threads, turns

TURNS = 100_000
TURNS_PER_THREAD = 10
LOOKUPS = 10_000
CHUNK = 5_000


def _message_id(n: int) -> str:
    return str(1_300_000_000_000_000_000 + n * 7919)


async def run(options: Options) -> list[Row]:
    image = Image.of(b"\x89PNG\r\n\x1a\n" + b"\0" * 64)
    with tempfile.TemporaryDirectory(prefix="imagine-bench-") as folder:
        store = await open_store(f"sqlite:///{folder}/store.db")
        try:
            await store.put_images([image])
            setup_start = time.perf_counter()
            for first in range(0, TURNS, CHUNK):
                thread_rows, turn_rows, link_rows = [], [], []
                for n in range(first, first + CHUNK):
                    thread_id = f"t{n // TURNS_PER_THREAD}"
                    if n % TURNS_PER_THREAD == 0:
                        thread_rows.append(_thread(thread_id, n))
                    parent = None if n % TURNS_PER_THREAD == 0 else f"turn{n - 1}"
                    turn_rows.append(_turn(f"turn{n}", thread_id, parent, image.sha256, n))
                    link_rows.append(
                        {
                            "platform": "discord",
                            "message_id": _message_id(n),
                            "turn_id": f"turn{n}",
                            "created_at": 1.7e9 + n,
                        }
                    )
                async with store.engine.begin() as conn:
                    await conn.execute(threads.insert(), thread_rows)
                    await conn.execute(turns.insert(), turn_rows)
                    await conn.execute(message_links.insert(), link_rows)
            setup = time.perf_counter() - setup_start

            rng = random.Random(42)
            for n in rng.sample(range(TURNS), 100):  # warm the pool and the page cache
                await store.turn_for_message("discord", _message_id(n))
            samples = []
            for n in (rng.randrange(TURNS) for _ in range(LOOKUPS)):
                start = time.perf_counter()
                turn = await store.turn_for_message("discord", _message_id(n))
                samples.append(time.perf_counter() - start)
                assert turn is not None and turn.id == f"turn{n}"
        finally:
            await store.close()
        raw = _raw_sqlite(f"{folder}/store.db", rng)
    p50, p99 = percentile(samples, 50), percentile(samples, 99)
    return [
        Row(
            f"store: turn lookup by message id, {TURNS // 1000}k turns stored",
            "p99 < 2 ms",
            f"p50 {ms(p50)}, p99 {ms(p99)}, max {ms(max(samples))} ({LOOKUPS:,} lookups)",
            verdict(p99 < 0.002),
            f"SQLite (WAL) via `SqlStore.turn_for_message`; the same query in plain sqlite3: "
            f"p99 {ms(percentile(raw, 99))}, so the rest is the aiosqlite thread hop and "
            f"SQLAlchemy; bulk setup {setup:.1f} s",
        )
    ]


def _raw_sqlite(path: str, rng: random.Random) -> list[float]:
    """The lookup's SQL alone, synchronous stdlib sqlite3: what the index costs."""
    connection = sqlite3.connect(path)
    query = (
        "SELECT turns.* FROM turns JOIN message_links ON message_links.turn_id = turns.id "
        "WHERE message_links.platform = ? AND message_links.message_id = ?"
    )
    samples = []
    try:
        for n in (rng.randrange(TURNS) for _ in range(LOOKUPS)):
            start = time.perf_counter()
            row = connection.execute(query, ("discord", _message_id(n))).fetchone()
            samples.append(time.perf_counter() - start)
            assert row is not None
    finally:
        connection.close()
    return samples


def _thread(thread_id: str, n: int) -> dict[str, object]:
    return {
        "id": thread_id,
        "platform": "discord",
        "workspace": "guild",
        "channel": f"c{n % 50}",
        "thread": thread_id,
        "created_by": f"u{n % 300}",
        "title": "a panda making latte art",
        "created_at": 1.7e9 + n,
        "updated_at": 1.7e9 + n,
    }


def _turn(turn_id: str, thread_id: str, parent: str | None, sha: str, n: int) -> dict[str, object]:
    return {
        "id": turn_id,
        "thread_id": thread_id,
        "parent_id": parent,
        "user_id": f"u{n % 300}",
        "kind": "imagine" if parent is None else "edit",
        "prompt": "a panda making latte art, now in watercolor",
        "reference_shas": [],
        "result_sha": sha,
        "text": "",
        "aspect_ratio": "1:1",
        "provider": "nexconn",
        "model": "gemini-2.5-flash-image",
        "provider_state": None,
        "input_tokens": 1300,
        "output_tokens": 1290,
        "total_tokens": 2590,
        "created_at": 1.7e9 + n,
        "duration_s": 5.0,
        "deleted": False,
    }
