"""With LOG_FORMAT=json every line about a job names it: one job can be followed in a search."""

from __future__ import annotations

import asyncio
import io
import json
import logging

from bot.core import ImagineBot, ImagineRequest
from bot.errors import RateLimited
from bot.logs import JobFields, JsonFormatter
from bot.models import ThreadKey, new_id
from bot.store import Store
from tests.fakes.collecting_sink import CollectingSink
from tests.fakes.recording_provider import RecordingProvider


async def test_every_line_about_a_job_carries_its_fields(sqlite_store: Store) -> None:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.addFilter(JobFields())
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    root.addHandler(handler)
    level = root.level
    root.setLevel(logging.INFO)
    provider = RecordingProvider()
    core = ImagineBot(sqlite_store, provider, model="m")
    try:
        provider.fail_next(RateLimited(5))  # the runner logs the failure, naming the job
        sink = CollectingSink()
        key = ThreadKey("test", "team", "channel", new_id())
        job = await core.imagine(ImagineRequest(key, "alice", "a fox"), sink)
        await asyncio.wait_for(core.idle(), 10)
        logging.getLogger("elsewhere").info("not about a job")
    finally:
        await core.shutdown(0)
        root.removeHandler(handler)
        root.setLevel(level)

    lines = [json.loads(line) for line in stream.getvalue().splitlines()]
    about = [line for line in lines if job.id in line["message"]]
    assert about, lines
    for line in about:
        assert line["job_id"] == job.id
        assert line["thread_id"] == job.thread_id
        assert line["platform"] == "test"
        assert line["provider"] == job.provider
    [other] = [line for line in lines if line["message"] == "not about a job"]
    assert "job_id" not in other
