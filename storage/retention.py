"""Which stored images may lose their bytes: the retention rule, in plain Python.

`SqlStore.purge_images` loads the few columns it needs and asks a `RetentionPlan`; keeping
the rule here makes it readable and testable without a database.

The rule. Let `before` be the retention cutoff (`now - IMAGINE_RETENTION_DAYS days`, or None
when images are kept forever) and H `IMAGINE_HISTORY_TURNS`.

- A turn is *live* when it is not deleted and was made at or after `before`.
- The *reach* of a turn T is the last H + 1 turns of its path root → T: T and its H nearest
  ancestors, deleted ones included (they are still the ancestors it was made from). An edit
  of T sends the provider T's path capped at H turns; a reroll of T sends T's references and
  its parent's path capped at H, which reaches one turn further back. Both stay in the reach.
- An image is *needed* when it is the result or a reference of a turn in the reach of a live
  turn, or when a job may still use it: a job not settled yet (its references, the reach of
  its parent turn, the turn it made, and, when it follows the thread, the reach of the
  thread's latest turn that is not deleted), or a failed or cancelled job made at or after
  `before` (Retry runs it again: its references and the reach of its parent turn).
- A purge removes the bytes of its candidates that are not needed: with `before`, every
  image first stored before it; after a delete, the images of the deleted turn's reach.

Images are shared (deduplicated by sha256), so one needed use keeps an image for all.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class TurnUse:
    id: str
    parent_id: str | None
    thread_id: str
    shas: tuple[str, ...]
    """The result image, then the references."""
    created_at: float
    deleted: bool


@dataclass(frozen=True, slots=True)
class JobUse:
    thread_id: str
    reference_shas: tuple[str, ...]
    parent_turn_id: str | None
    turn_id: str | None
    follow_latest: bool
    """Set only for an unsettled job that resolves its parent when it starts."""


class RetentionPlan:
    def __init__(self, turns: Iterable[TurnUse], history_turns: int) -> None:
        self.turns = {turn.id: turn for turn in turns}
        self.reach = max(1, history_turns) + 1

    def path(self, turn_id: str | None) -> Iterator[TurnUse]:
        """The reach of `turn_id`: itself and its ancestors, nearest first."""
        seen: set[str] = set()
        while turn_id is not None and turn_id not in seen and len(seen) < self.reach:
            seen.add(turn_id)
            turn = self.turns.get(turn_id)
            if turn is None:
                return
            yield turn
            turn_id = turn.parent_id

    def path_shas(self, turn_id: str | None) -> set[str]:
        return {sha for turn in self.path(turn_id) for sha in turn.shas}

    def live(self, turn: TurnUse, before: float | None) -> bool:
        return not turn.deleted and (before is None or turn.created_at >= before)

    def latest(self, thread_id: str) -> str | None:
        best: TurnUse | None = None
        for turn in self.turns.values():
            if turn.thread_id != thread_id or turn.deleted:
                continue
            if best is None or (turn.created_at, turn.id) > (best.created_at, best.id):
                best = turn
        return None if best is None else best.id

    def needed(self, before: float | None, jobs: Sequence[JobUse] = ()) -> set[str]:
        """Every image the rule above keeps."""
        keep: set[str] = set()
        for turn in self.turns.values():
            if self.live(turn, before):
                keep |= self.path_shas(turn.id)
        for job in jobs:
            keep.update(job.reference_shas)
            keep |= self.path_shas(job.parent_turn_id)
            keep |= self.path_shas(job.turn_id)
            if job.follow_latest:
                keep |= self.path_shas(self.latest(job.thread_id))
        return keep
