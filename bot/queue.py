"""Which jobs a worker takes next: the scheduling rules as pure functions.

The jobs table is the queue, shared by every process on the database. A store reads a
`QueueView` inside its claim transaction (under the lock that serialises claims) and asks
`plan_claims` which rows this worker may take; the same view gives every waiting job its
place in line (`positions`). Rules, each proven by `tests/test_scheduler.py` and the storage
contract suite:

- at most `concurrency` jobs are at the provider at once, counted over all workers;
- a user has at most `per_user_running` jobs at the provider and `per_user_queued` waiting;
- one job at a time per thread, in submission order, so two quick replies build on each other;
- fair order: round-robin between users (least recently served first), FIFO within a user;
- a job whose owner's lease lapsed is taken over: one at the provider counts against the
  caps again, one already made or failed is only delivered or reported (no cap: it costs
  the provider nothing).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Collection, Iterable, Mapping
from dataclasses import dataclass, field

from bot.models import JobStatus


@dataclass(frozen=True, slots=True)
class Limits:
    concurrency: int = 4
    per_user_running: int = 2
    per_user_queued: int = 10


@dataclass(frozen=True, slots=True)
class QueueEntry:
    """One unsettled job as the rules see it (the user has not seen its outcome yet)."""

    id: str
    user_id: str
    thread_id: str
    platform: str
    status: JobStatus
    created_at: float
    owner: str | None = None
    lease_until: float | None = None

    def held(self, at: float) -> bool:
        """A live worker holds it: its lease has not lapsed."""
        return self.owner is not None and self.lease_until is not None and self.lease_until > at

    @property
    def order(self) -> tuple[float, str]:
        return (self.created_at, self.id)


@dataclass(frozen=True, slots=True)
class QueueView:
    """Every unsettled job, and when each user with waiting work was last served.

    `last_served` counts only starts since the user last went idle (a user whose previous
    job ended before their current wait began starts afresh, like one never served).
    """

    entries: tuple[QueueEntry, ...]
    last_served: Mapping[str, float] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class ClaimRequest:
    """What one worker asks of the queue in one claim transaction."""

    limits: Limits
    platforms: frozenset[str]
    """Platforms this worker can deliver to (it has their adapters)."""
    local_ids: frozenset[str] = frozenset()
    """Jobs submitted through this worker: claimable whatever their platform."""
    max_run: int = 0
    """Free slots: how many jobs it may start or resume at the provider now."""
    max_handover: int = 50
    """How many made or failed jobs of lapsed workers it may take to deliver or report."""
    lease: float = 30.0


def last_served(
    starts: Iterable[tuple[str, float, float | None]], oldest_wait: Mapping[str, float]
) -> dict[str, float]:
    """From (user, started_at, finished_at) rows: each waiting user's latest start that
    overlapped their current wait (running then, or finished after it began)."""
    served: dict[str, float] = {}
    for user, started, finished in starts:
        since = oldest_wait.get(user)
        if since is None or (finished is not None and finished < since):
            continue
        if started > served.get(user, float("-inf")):
            served[user] = started
    return served


def _user_order(queued: Mapping[str, list[QueueEntry]], served: Mapping[str, float]) -> list[str]:
    """Least recently served first; never served (or idle since) first of all, then by
    who has waited longest."""
    return sorted(
        queued,
        key=lambda user: (served.get(user, float("-inf")), queued[user][0].order),
    )


def _queued_by_user(entries: Iterable[QueueEntry]) -> dict[str, list[QueueEntry]]:
    by_user: dict[str, list[QueueEntry]] = {}
    for entry in sorted(entries, key=lambda e: e.order):
        if entry.status is JobStatus.QUEUED:
            by_user.setdefault(entry.user_id, []).append(entry)
    return by_user


def positions(view: QueueView) -> dict[str, int]:
    """1-based place of every queued job in the round-robin order it will start in."""
    queued = _queued_by_user(view.entries)
    users = _user_order(queued, view.last_served)
    order: list[str] = []
    depth = 0
    while len(order) < sum(len(jobs) for jobs in queued.values()):
        for user in users:
            if depth < len(queued[user]):
                order.append(queued[user][depth].id)
        depth += 1
    return {job_id: index + 1 for index, job_id in enumerate(order)}


def plan_claims(view: QueueView, request: ClaimRequest, at: float) -> list[str]:
    """Ids of the jobs this worker takes now, in the order it should start them."""
    mine = _claimable_filter(request.platforms, request.local_ids)
    free = [e for e in view.entries if not e.held(at)]
    handovers = [
        e.id
        for e in sorted(free, key=lambda e: e.order)
        if e.status not in (JobStatus.QUEUED, JobStatus.RUNNING) and mine(e)
    ][: request.max_handover]

    at_provider = [e for e in view.entries if e.status is JobStatus.RUNNING and e.held(at)]
    running = len(at_provider)
    per_user = Counter(e.user_id for e in at_provider)
    limits = request.limits
    starts: list[str] = []

    def room(user: str) -> bool:
        return (
            len(starts) < request.max_run
            and running < limits.concurrency
            and per_user[user] < limits.per_user_running
        )

    # Jobs at the provider whose worker died go first: they started long ago.
    for entry in sorted(free, key=lambda e: e.order):
        if entry.status is JobStatus.RUNNING and mine(entry) and room(entry.user_id):
            starts.append(entry.id)
            running += 1
            per_user[entry.user_id] += 1

    busy_threads = {e.thread_id for e in view.entries if e.status is JobStatus.RUNNING}
    heads = _thread_heads(view.entries)
    queued = _queued_by_user(view.entries)
    served = dict(view.last_served)
    tick = 0
    progressed = True
    while progressed and running < limits.concurrency and len(starts) < request.max_run:
        progressed = False
        for user in _user_order(queued, served):
            if not room(user):
                continue
            pick = next(
                (
                    e
                    for e in queued[user]
                    if e.thread_id not in busy_threads and heads[e.thread_id] == e.order
                ),
                None,
            )
            if pick is None or not mine(pick):
                continue
            queued[user].remove(pick)
            if not queued[user]:
                del queued[user]
            starts.append(pick.id)
            busy_threads.add(pick.thread_id)
            running += 1
            per_user[user] += 1
            tick += 1
            served[user] = at + tick * 1e-6
            progressed = True
            break  # re-sort: the user just served goes to the back of the round
    return handovers + starts


def _thread_heads(entries: Iterable[QueueEntry]) -> dict[str, tuple[float, str]]:
    """Each thread's earliest job still waiting or at the provider: the only one that may
    start (one job at a time per thread, in submission order)."""
    heads: dict[str, tuple[float, str]] = {}
    for entry in entries:
        if entry.status in (JobStatus.QUEUED, JobStatus.RUNNING):
            current = heads.get(entry.thread_id)
            if current is None or entry.order < current:
                heads[entry.thread_id] = entry.order
    return heads


def _claimable_filter(
    platforms: Collection[str], local_ids: Collection[str]
) -> Callable[[QueueEntry], bool]:
    def mine(entry: QueueEntry) -> bool:
        return entry.platform in platforms or entry.id in local_ids

    return mine
