"""What the shared queue costs per job: claim, lease renewals and state changes.

In-process, `SqlStore` alone (no core, no provider), on SQLite (a fresh WAL file opened by
`open_store`) and on PostgreSQL (the tests' throwaway cluster, a fresh database). `JOBS`
jobs from as many users wait in the queue; one worker keeps `CAP` of them held, as a busy
process does: when a job ends (`make_job`, then `deliver_job`) its slot frees, the worker
claims one more (`claim_jobs` with one free slot, then `cancel_requests`, which every queue
pass runs while jobs are held) and starts it (`start_job`); every `CAP` finished jobs it
renews its leases (`renew_leases`; in production every lease/3 = 10 s, i.e. less often).
Each call is timed alone; a job's overhead is the sum of its own calls, the claim pass that
took it, and its share of each renewal made while it was held. Images are 1 kB: storing a
1.5 MB image is the same write the bot made before the queue existed, not the queue's cost.
"""

from __future__ import annotations

import random
import tempfile
import time
from collections import deque
from collections.abc import Awaitable
from dataclasses import dataclass, field
from typing import TypeVar

from bench.common import Options, Row, Verdict, ms, percentile, verdict
from bench.pg import PostgresUnavailable, fresh_database, postgres_server
from bot.models import Image, Job, Thread, ThreadKey, Turn, TurnKind, Usage, now
from bot.queue import ClaimRequest, Limits
from storage import SqlStore, open_store

JOBS = 1000
BANDS = ((0, 50), (0, 200), (800, JOBS))
"""Queue depths (jobs waiting when a job was claimed) reported apart."""
CAP = 16
LEASE = 30.0
WORKER = "w-bench"
MODEL = "gemini-2.5-flash-image"
GOAL = 0.005
T = TypeVar("T")


@dataclass
class Samples:
    per_job: list[tuple[int, float]] = field(default_factory=list)
    """(jobs waiting when it was claimed, its overhead in seconds)."""
    claims: list[tuple[int, float]] = field(default_factory=list)
    """(jobs waiting, seconds) of each claim pass: claim_jobs + cancel_requests."""
    renewals: list[float] = field(default_factory=list)
    changes: dict[str, list[float]] = field(default_factory=dict)
    admissions: list[float] = field(default_factory=list)


async def _timed(box: list[float], call: Awaitable[T]) -> T:
    start = time.perf_counter()
    result = await call
    box.append(time.perf_counter() - start)
    return result


def _job(n: int, created_at: float) -> tuple[Thread, Job]:
    thread = Thread(f"t{n}", ThreadKey("bench", "w", "c", str(n)), f"u{n}", "bench", created_at)
    job = Job(
        id=f"j{n:05d}",
        thread_id=thread.id,
        user_id=f"u{n}",
        kind=TurnKind.IMAGINE,
        prompt=f"a lighthouse at dusk #{n}",
        reference_shas=(),
        aspect_ratio="1:1",
        parent_turn_id=None,
        follow_latest=False,
        destination={"channel": "c"},
        provider="nexconn",
        model=MODEL,
        created_at=created_at,
    )
    return thread, job


def _turn(job: Job, image: Image) -> Turn:
    return Turn(
        id=f"turn-{job.id}",
        thread_id=job.thread_id,
        parent_id=None,
        user_id=job.user_id,
        kind=TurnKind.IMAGINE,
        prompt=job.prompt,
        reference_shas=(),
        result_sha=image.sha256,
        text="",
        aspect_ratio=job.aspect_ratio,
        provider=job.provider,
        model=MODEL,
        provider_state=None,
        usage=Usage(),
        created_at=now(),
        duration_s=5.0,
    )


async def measure(store: SqlStore, jobs: int = JOBS) -> Samples:
    samples = Samples()
    rng = random.Random(1)
    change = samples.changes.setdefault
    base = now()
    for n in range(jobs):
        thread, job = _job(n, base + n * 1e-3)
        await store.create_thread(thread)
        await _timed(samples.admissions, store.add_job(job, max_queued=10))
    limits = Limits(concurrency=CAP)

    waiting = jobs

    async def claim(slots: int) -> tuple[list[Job], float]:
        nonlocal waiting
        request = ClaimRequest(limits, frozenset({"bench"}), max_run=slots, lease=LEASE)
        start = time.perf_counter()
        got = await store.claim_jobs(WORKER, request)
        await store.cancel_requests(WORKER)
        took = time.perf_counter() - start
        samples.claims.append((waiting, took))
        waiting -= len(got)
        return got, took

    cost: dict[str, float] = {}
    depth: dict[str, int] = {}

    async def begin(got: list[Job], took: float) -> None:
        for job in got:
            depth[job.id] = waiting + len(got)
            cost[job.id] = took / len(got)
            start = store.start_job(job.id, WORKER, None)
            cost[job.id] += await _cost(change("start_job", []), start)
            held.append(job)

    held: deque[Job] = deque()
    await begin(*await claim(CAP))
    finished = 0
    while held:
        job = held.popleft()
        image = Image.of(rng.randbytes(1000))
        make = store.make_job(job.id, WORKER, _turn(job, image), [image])
        cost[job.id] += await _cost(change("make_job", []), make)
        deliver = store.deliver_job(job.id, WORKER, "bench", f"m-{job.id}")
        cost[job.id] += await _cost(change("deliver_job", []), deliver)
        samples.per_job.append((depth.pop(job.id), cost.pop(job.id)))
        got, took = await claim(1)
        if got:
            await begin(got, took)
        finished += 1
        if finished % CAP == 0 and held:
            took = await _cost(samples.renewals, store.renew_leases(WORKER, LEASE))
            for other in held:
                cost[other.id] += took / len(held)
    return samples


async def _cost(box: list[float], call: Awaitable[bool | dict[str, bool]]) -> float:
    result = await _timed(box, call)
    if result is False or result == {}:
        raise RuntimeError("the store refused a state change the worker was entitled to")
    return box[-1]


def _band(pairs: list[tuple[int, float]], low: int, high: int) -> str:
    values = [v for waiting, v in pairs if low < waiting <= high] or [0.0]
    label = f"≤ {high}" if low == 0 else f"> {low}"
    return f"{label} waiting p50 {ms(percentile(values, 50))}, p99 {ms(percentile(values, 99))}"


def _row(engine: str, samples: Samples, jobs: int) -> Row:
    per_job = [cost for _, cost in samples.per_job]
    p99 = percentile(per_job, 99)
    changes = ", ".join(
        f"{name} p50 {ms(percentile(v, 50))}" for name, v in samples.changes.items()
    )
    complete = len(per_job) == jobs
    return Row(
        _row_name(engine),
        "p99 < 5 ms",
        f"p50 {ms(percentile(per_job, 50))}, p99 {ms(p99)}, max {ms(max(per_job))} "
        f"({len(per_job)} jobs); by queue depth "
        + "; ".join(_band(samples.per_job, low, high) for low, high in BANDS),
        verdict(p99 < GOAL and complete),
        f"`SqlStore` in-process, {jobs} jobs queued, {CAP} held; claim pass "
        + "; ".join(_band(samples.claims, low, high) for low, high in BANDS)
        + f"; {changes}; "
        f"renew_leases p50 {ms(percentile(samples.renewals, 50))}; admission (`add_job`) p99 "
        f"{ms(percentile(samples.admissions, 99))}",
    )


async def run(options: Options) -> list[Row]:
    rows: list[Row] = []
    with tempfile.TemporaryDirectory(prefix="imagine-bench-") as folder:
        rows.append(await _engine("SQLite", f"sqlite:///{folder}/claims.db"))
    try:
        with postgres_server() as server:
            async with fresh_database(server) as url:
                rows.append(await _engine("PostgreSQL", url))
    except PostgresUnavailable as missing:
        rows.append(Row(_row_name("PostgreSQL"), "p99 < 5 ms", "—", Verdict.PENDING, str(missing)))
    return rows


def _row_name(engine: str) -> str:
    return f"claim overhead per job (claim + lease renewals + state changes), {engine}"


async def _engine(engine: str, url: str, jobs: int = JOBS) -> Row:
    store = await open_store(url)
    try:
        return _row(engine, await measure(store, jobs), jobs)
    finally:
        await store.close()
