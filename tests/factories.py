"""Values tests build often: a plain queued job."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from bot.models import Job, TurnKind


def queued_job(job_id: str, thread_id: str, user: str = "alice", **values: Any) -> Job:
    """A new image's job, waiting: only what the queue and the ledger look at is chosen;
    `values` override any field (`created_at`, `cost_usd`, `status`, …)."""
    job = Job(
        id=job_id,
        thread_id=thread_id,
        user_id=user,
        kind=TurnKind.IMAGINE,
        prompt="p",
        reference_shas=(),
        aspect_ratio="1:1",
        parent_turn_id=None,
        follow_latest=False,
        destination=None,
        provider="demo",
        model="gemini-2.5-flash-image",
    )
    return replace(job, **values)
