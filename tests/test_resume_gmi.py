"""A restart mid-job at GMI: the next process polls the stored request id, never resubmits."""

from __future__ import annotations

import asyncio
from pathlib import Path

from bot.core import ImagineBot, ImagineRequest
from bot.models import JobStatus, ThreadKey
from bot.providers.gmi import GmiProvider, PollPolicy
from storage import open_store
from tests.fakes.collecting_sink import CollectingSink
from tests.fakes.gmi_server import API_KEY, FakeGmi

QUICK = PollPolicy(first_interval=0.02, factor=1.0, max_interval=0.02, jitter=0.0, deadline=30)


async def test_a_restart_resumes_polling_the_same_gmi_request(tmp_path: Path) -> None:
    now = [0.0]
    fake = await FakeGmi(clock=lambda: now[0]).start()
    fake.script(ready_at=100.0)  # processing until the fake's clock reaches 100
    url = f"sqlite:///{tmp_path}/bot.db"
    key = ThreadKey("test", "team", "channel", "thread-1")
    try:
        store = await open_store(url)
        provider = GmiProvider(API_KEY, fake.base_url, poll=QUICK)
        first = ImagineBot(store, provider, model="gemini-2.5-flash-image")
        job = await first.imagine(ImagineRequest(key, "alice", "a panda"), CollectingSink())
        for _ in range(200):  # until the request id is stored and polling has begun
            stored = await store.get_job(job.id)
            if stored and stored.provider_request_id and fake.polls:
                break
            await asyncio.sleep(0.02)
        assert stored is not None and stored.provider_request_id
        assert await first.shutdown(grace=0) == [job.id]  # the process stops mid-poll
        await provider.aclose()
        await store.close()

        now[0] = 200.0  # meanwhile GMI finished the image
        store = await open_store(url)
        provider = GmiProvider(API_KEY, fake.base_url, poll=QUICK)
        second = ImagineBot(store, provider, model="gemini-2.5-flash-image")
        sink = CollectingSink()
        second.register_platform("test", lambda _job: sink)
        assert await second.resume_unfinished() == 1
        await asyncio.wait_for(second.idle(), 10)

        assert len(fake.submits) == 1  # never submitted twice
        assert fake.polls[-1].path.endswith(stored.provider_request_id)
        assert [d.job.id for d in sink.deliveries] == [job.id]
        assert sink.deliveries[0].image.data in fake.media.values()
        done = await store.get_job(job.id)
        assert done is not None and done.status is JobStatus.DELIVERED and done.settled
        await second.shutdown(0)
        await provider.aclose()
        await store.close()
    finally:
        await fake.close()
