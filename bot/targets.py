"""Where a request lands in a thread's tree of turns, and whether it still can.

An edit names a turn (a reply to that image) or a thread (its latest image); a reroll or a
retry names a turn or a failed job. Before anything is recorded the core needs to know the
turn to start from, the model and size the thread goes on with, who asks where (for team
control), and that no image the provider will be sent was removed by retention.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from bot.errors import ImageExpired, UnknownTurn
from bot.models import Turn
from bot.policy import Requester
from bot.requests import EditRequest
from bot.store import Store

ModelChoice = Callable[[str, str | None], tuple[str, str | None]]
"""(a thread's model, size) → what it goes on with (`ImagineBot.continued_model`)."""


@dataclass(frozen=True, slots=True)
class Target:
    """Where an edit starts: a finished turn, or (turn_id None) a thread's pending image,
    with the thread's model and size; `follow_latest` builds on whatever is latest when the
    job runs (quick replies stack)."""

    thread_id: str
    turn_id: str | None
    aspect_ratio: str
    model: str
    size: str | None
    follow_latest: bool


class Threads:
    def __init__(
        self,
        store: Store,
        *,
        history_turns: int,
        retention_days: Callable[[], int],
        continued_model: ModelChoice,
    ) -> None:
        self.store = store
        self.history_turns = history_turns
        self._retention_days = retention_days
        self._continued_model = continued_model

    async def turn(self, turn_id: str) -> Turn:
        """A turn that still exists, or `UnknownTurn`."""
        turn = await self.store.get_turn(turn_id)
        if turn is None or turn.deleted:
            raise UnknownTurn(detail=f"turn {turn_id}")
        return turn

    async def requester(
        self, thread_id: str, user_id: str, roles: frozenset[str], parent_channel: str = ""
    ) -> Requester:
        """Who continues a thread, and where: the thread's workspace and channel."""
        thread = await self.store.get_thread(thread_id)
        if thread is None:
            raise UnknownTurn(detail=f"thread {thread_id}")
        key = thread.key
        return Requester(
            key.platform, key.workspace, key.channel, user_id, roles, parent_channel=parent_channel
        )

    async def check_images(self, parent_id: str | None, references: Sequence[str] = ()) -> None:
        """Raise `ImageExpired` when a job from `parent_id` with `references` would need an
        image retention removed: the references, and the images of the parent's path that
        the provider is sent (capped at the history length)."""
        shas = list(references)
        if parent_id is not None:
            for turn in await self.store.turn_path(parent_id, self.history_turns):
                shas += [turn.result_sha, *turn.reference_shas]
        missing = await self.store.missing_images(shas)
        if missing:
            raise ImageExpired(self._retention_days(), detail=f"purged: {sorted(missing)}")

    async def edit_target(self, request: EditRequest) -> Target:
        """What to edit, and whether to follow the thread's latest turn when the job starts.

        A reply to the latest image follows the thread, so quick replies build on each
        other; a reply to an older image is a branch from it. A reply to a thread whose
        first image is still being made waits for it (the thread runs one job at a time).
        """
        if request.turn_id is not None:
            turn = await self.turn(request.turn_id)
            latest = await self.store.latest_turn(turn.thread_id)
            model, size = self._continued_model(turn.model, turn.size)
            follow = request.follow and latest is not None and latest.id == turn.id
            return Target(turn.thread_id, turn.id, turn.aspect_ratio, model, size, follow)
        if request.thread_key is not None:
            thread = await self.store.thread_by_key(request.thread_key)
            if thread is not None:
                latest = await self.store.latest_turn(thread.id)
                if latest is not None:
                    model, size = self._continued_model(latest.model, latest.size)
                    return Target(thread.id, latest.id, latest.aspect_ratio, model, size, True)
                pending = await self.store.active_job_for_thread(thread.id)
                if pending is not None:
                    model, size = self._continued_model(pending.model, pending.size)
                    return Target(thread.id, None, pending.aspect_ratio, model, size, True)
        raise UnknownTurn(detail=f"no turn for {request}")
