"""Runs jobs fairly under limits, and nothing else.

Rules, each tested in `tests/test_scheduler.py`:
- at most `concurrency` jobs run at once (sized to the provider's rate limit);
- a user has at most `per_user_running` running and `per_user_queued` waiting jobs; more is
  refused with `UserQueueFull` at submission, never dropped silently;
- one job at a time per thread, in submission order, so two quick replies build on each other;
- fair order: round-robin between users, FIFO within a user — ten jobs from one person do
  not hold back a colleague's first;
- `cancel` works while queued or running; `drain` stops taking work, gives running jobs a
  grace period and then cancels them, leaving their records for the next start.

The scheduler knows jobs only as ids, users and threads; what a job does is its `run`.
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter, deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from bot.errors import ShuttingDown, UserQueueFull

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Limits:
    concurrency: int = 4
    per_user_running: int = 2
    per_user_queued: int = 10


@dataclass(eq=False)
class Work:
    job_id: str
    user_id: str
    thread_id: str
    run: Callable[[], Awaitable[None]] = field(repr=False)


class Scheduler:
    def __init__(self, limits: Limits = Limits()) -> None:
        self.limits = limits
        self._queues: dict[str, deque[Work]] = {}
        self._last_served: dict[str, int] = {}  # user → dispatch number of their last start
        self._dispatched = 0
        self._thread_queue: dict[str, deque[str]] = {}  # thread → queued job ids, in order
        self._running: dict[str, asyncio.Task[None]] = {}
        self._running_users: Counter[str] = Counter()
        self._busy_threads: set[str] = set()
        self._accepting = True
        self._idle = asyncio.Event()
        self._idle.set()

    # --- queries ----------------------------------------------------------------------------

    def is_running(self, job_id: str) -> bool:
        return job_id in self._running

    def is_queued(self, job_id: str) -> bool:
        return any(w.job_id == job_id for q in self._queues.values() for w in q)

    def user_load(self, user_id: str) -> tuple[int, int]:
        """(running, queued) jobs of a user."""
        return self._running_users[user_id], len(self._queues.get(user_id, ()))

    def positions(self) -> dict[str, int]:
        """1-based place of every queued job in the round-robin order it will start in."""
        order: list[str] = []
        users = self._user_order()
        cursors = dict.fromkeys(users, 0)
        remaining = sum(len(self._queues[u]) for u in users)
        while remaining:
            for user in users:
                queue = self._queues[user]
                i = cursors[user]
                if i < len(queue):
                    order.append(queue[i].job_id)
                    cursors[user] = i + 1
                    remaining -= 1
        return {job_id: index + 1 for index, job_id in enumerate(order)}

    # --- commands ---------------------------------------------------------------------------

    def check_admission(self, user_id: str) -> None:
        """Raise if a new job of this user would be refused (call before recording it)."""
        if not self._accepting:
            raise ShuttingDown()
        running, queued = self.user_load(user_id)
        if queued >= self.limits.per_user_queued:
            raise UserQueueFull(running + queued)

    def submit(self, work: Work, *, admitted: bool = False) -> None:
        """Queue a job; `admitted` skips the per-user cap (jobs resumed after a restart)."""
        if not admitted:
            self.check_admission(work.user_id)
        self._queues.setdefault(work.user_id, deque()).append(work)
        self._thread_queue.setdefault(work.thread_id, deque()).append(work.job_id)
        self._idle.clear()
        self._dispatch()

    def cancel(self, job_id: str) -> bool:
        """Remove a queued job or cancel a running one; False if unknown or finished."""
        task = self._running.get(job_id)
        if task is not None:
            task.cancel()
            return True
        for user, queue in self._queues.items():
            for work in queue:
                if work.job_id == job_id:
                    queue.remove(work)
                    self._forget_queued(user, work)
                    self._dispatch()
                    return True
        return False

    async def join(self) -> None:
        """Wait until nothing is queued or running (tests, the console)."""
        await self._idle.wait()

    async def drain(self, grace: float) -> list[str]:
        """Stop taking work, let running jobs finish for `grace` s, cancel the rest.

        Returns the ids of jobs that did not finish (queued ones and cancelled running
        ones); their records stay unfinished so the next start resumes them.
        """
        self._accepting = False
        left = [w.job_id for q in self._queues.values() for w in q]
        self._queues.clear()
        self._thread_queue.clear()
        tasks = list(self._running.values())
        if tasks:
            _, pending = await asyncio.wait(tasks, timeout=grace)
            for task in pending:
                left.append(task.get_name())
                task.cancel()
            if pending:
                await asyncio.wait(pending, timeout=5)
        self._idle.set()
        return left

    # --- internals --------------------------------------------------------------------------

    def _forget_queued(self, user: str, work: Work) -> None:
        thread_queue = self._thread_queue.get(work.thread_id)
        if thread_queue is not None:
            thread_queue.remove(work.job_id)
            if not thread_queue:
                del self._thread_queue[work.thread_id]
        if not self._queues[user]:
            del self._queues[user]
        self._check_idle()

    def _eligible(self, work: Work) -> bool:
        if work.thread_id in self._busy_threads:
            return False
        head = self._thread_queue.get(work.thread_id)
        return head is not None and len(head) > 0 and head[0] == work.job_id

    def _user_order(self) -> list[str]:
        """Users with waiting work, least recently served first: that is the round-robin.

        A user never served (or idle since) comes first, so a colleague's first job does not
        wait behind someone's tenth. Ties keep arrival order (dicts keep insertion order).
        """
        return sorted(self._queues, key=lambda user: self._last_served.get(user, 0))

    def _next(self) -> Work | None:
        for user in self._user_order():
            if self._running_users[user] >= self.limits.per_user_running:
                continue
            for work in self._queues[user]:
                if self._eligible(work):
                    self._queues[user].remove(work)
                    if not self._queues[user]:
                        del self._queues[user]
                    self._dispatched += 1
                    self._last_served[user] = self._dispatched
                    thread_queue = self._thread_queue[work.thread_id]
                    thread_queue.popleft()
                    if not thread_queue:
                        del self._thread_queue[work.thread_id]
                    return work
        return None

    def _dispatch(self) -> None:
        if not self._accepting:
            return
        while len(self._running) < self.limits.concurrency:
            work = self._next()
            if work is None:
                break
            self._running_users[work.user_id] += 1
            self._busy_threads.add(work.thread_id)
            task = asyncio.get_running_loop().create_task(self._run(work), name=work.job_id)
            self._running[work.job_id] = task
        self._check_idle()

    async def _run(self, work: Work) -> None:
        try:
            await work.run()
        except asyncio.CancelledError:
            raise
        except Exception:  # the job's own code reports its errors; this is a last guard
            log.exception("job %s crashed", work.job_id)
        finally:
            del self._running[work.job_id]
            self._running_users[work.user_id] -= 1
            if not self._running_users[work.user_id]:
                del self._running_users[work.user_id]
                if work.user_id not in self._queues:
                    self._last_served.pop(work.user_id, None)  # idle users start afresh
            self._busy_threads.discard(work.thread_id)
            self._dispatch()

    def _check_idle(self) -> None:
        if not self._running and not self._queues:
            self._idle.set()
