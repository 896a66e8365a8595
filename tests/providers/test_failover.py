"""Failover between real providers on loopback fakes: Nexconn first, Gemini second.

The breaker's clock is virtual, so cool-downs are stepped, not waited for.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from bot import metrics
from bot.core import EditRequest, ImagineBot, ImagineRequest
from bot.errors import (
    ImagineError,
    ProviderTimeout,
    ProviderUnavailable,
    RateLimited,
    SafetyBlocked,
)
from bot.models import ImageRequest, ImageResult, ThreadKey
from bot.providers.base import Capabilities, ProviderCall
from bot.providers.failover import (
    Breaker,
    BreakerPolicy,
    FailoverProvider,
    Ticket,
    split_request_id,
)
from bot.providers.gemini import GeminiProvider
from bot.providers.nexconn import NexconnProvider
from bot.store import Store
from tests.fakes.collecting_sink import CollectingSink
from tests.fakes.gemini_server import FakeGemini
from tests.fakes.nexconn_server import FakeNexconn, error_body
from tests.fakes.recording_provider import RecordingProvider
from tests.fakes.scripted_json_server import Reply
from tests.providers.support import FAST, Sleeps

NX_KEY, GM_KEY = "nx-key", "gm-key"
REQUEST = ImageRequest(prompt="a fox", aspect_ratio="1:1", model="gemini-2.5-flash-image")
DOWN = Reply(503, error_body("upstream unavailable", "server_error"))


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
async def nexconn() -> AsyncIterator[FakeNexconn]:
    fake = FakeNexconn(NX_KEY)
    await fake.start()
    yield fake
    await fake.close()


@pytest.fixture
async def gemini() -> AsyncIterator[FakeGemini]:
    fake = FakeGemini(GM_KEY)
    await fake.start()
    yield fake
    await fake.close()


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
async def provider(
    nexconn: FakeNexconn, gemini: FakeGemini, clock: Clock
) -> AsyncIterator[FailoverProvider]:
    first = NexconnProvider(NX_KEY, nexconn.base_url, policy=FAST, timeout=5.0, sleep=Sleeps())
    second = GeminiProvider(GM_KEY, gemini.base_url, policy=FAST, timeout=5.0, sleep=Sleeps())
    failover = FailoverProvider(
        [first, second], BreakerPolicy(cooldown=30, max_cooldown=120), clock
    )
    yield failover
    await failover.aclose()


def failovers(source: str, target: str) -> float:
    labels = {"from_provider": source, "to_provider": target}
    return metrics.REGISTRY.get_sample_value("imagine_provider_failovers_total", labels) or 0.0


async def test_a_provider_that_is_down_hands_the_job_to_the_next(
    provider: FailoverProvider, nexconn: FakeNexconn, gemini: FakeGemini
) -> None:
    before = failovers("nexconn", "gemini")
    nexconn.script(DOWN, DOWN, DOWN)  # every retry of the first provider fails
    result = await provider.generate(REQUEST)
    assert result.provider == "gemini"
    assert result.image.data == gemini.image
    assert len(nexconn.requests) == 3 and len(gemini.requests) == 1
    assert failovers("nexconn", "gemini") == before + 1


async def test_the_open_breaker_skips_the_failed_provider_then_tries_it_once(
    provider: FailoverProvider, nexconn: FakeNexconn, gemini: FakeGemini, clock: Clock
) -> None:
    nexconn.script(DOWN, DOWN, DOWN)
    await provider.generate(REQUEST)
    assert len(nexconn.requests) == 3

    clock.now += 29  # still cooling down: straight to the second, no extra latency
    result = await provider.generate(REQUEST)
    assert result.provider == "gemini" and len(nexconn.requests) == 3

    clock.now += 2  # cool-down over: one trial request, which succeeds and closes it
    result = await provider.generate(REQUEST)
    assert result.provider == "nexconn" and len(nexconn.requests) == 4
    assert provider.breakers["nexconn"].closed


async def test_the_cool_down_grows_while_the_provider_keeps_failing(
    provider: FailoverProvider, nexconn: FakeNexconn, clock: Clock
) -> None:
    nexconn.script(*[DOWN] * 6)
    await provider.generate(REQUEST)  # first failure: 30 s
    clock.now += 31
    await provider.generate(REQUEST)  # the trial fails: 60 s
    assert len(nexconn.requests) == 6
    clock.now += 59
    assert (await provider.generate(REQUEST)).provider == "gemini"
    assert len(nexconn.requests) == 6  # skipped: still cooling down


async def test_a_safety_block_does_not_fail_over(
    provider: FailoverProvider, nexconn: FakeNexconn, gemini: FakeGemini
) -> None:
    body = error_body(
        "Your request was rejected by the safety system", code="content_policy_violation"
    )
    nexconn.script(Reply(400, body))
    with pytest.raises(SafetyBlocked):
        await provider.generate(REQUEST)
    assert gemini.requests == []
    assert provider.breakers["nexconn"].closed  # the request's fault, not the provider's


async def test_when_every_provider_is_down_the_user_hears_it_once(
    provider: FailoverProvider, nexconn: FakeNexconn, gemini: FakeGemini, clock: Clock
) -> None:
    nexconn.script(*[DOWN] * 3)
    gemini.script(
        *[Reply(503, {"error": {"code": 503, "message": "overloaded", "status": "UNAVAILABLE"}})]
        * 3
    )
    with pytest.raises(ProviderUnavailable):
        await provider.generate(REQUEST)
    # both cooling down: the one whose cool-down ends first is still tried
    clock.now += 5
    result = await provider.generate(REQUEST)
    assert result.provider == "nexconn"


async def test_models_go_only_to_providers_that_sell_them(
    provider: FailoverProvider, nexconn: FakeNexconn, gemini: FakeGemini
) -> None:
    pro = ImageRequest(prompt="a fox", aspect_ratio="1:1", model="gemini-3-pro-image-preview")
    assert provider.sells("gemini-3-pro-image-preview")
    await provider.generate(pro)
    assert nexconn.requests[-1].json["model"] == "gemini-3.0-pro-image-preview"


class AsyncQueueProvider:
    """An asynchronous provider at the port seam: it reports a request id, and resumes one;
    `fail_after_submit` makes its poll fail once the request is in."""

    capabilities = Capabilities()

    def __init__(self, name: str, fail_after_submit: ImagineError | None = None) -> None:
        self.name = name
        self.resumed: list[str] = []
        self.submitted = 0
        self.fail_after_submit = fail_after_submit

    async def generate(
        self, request: ImageRequest, call: ProviderCall = ProviderCall()
    ) -> ImageResult:
        if call.resume_id is not None:
            self.resumed.append(call.resume_id)
            await call.on_submitted("req-again")  # "unknown error, try again": resubmitted
        else:
            self.submitted += 1
            await call.on_submitted("req-42")
            if self.fail_after_submit is not None:
                raise self.fail_after_submit
        return ImageResult(images=())

    async def aclose(self) -> None:
        return None


async def test_a_resumed_job_goes_back_to_the_provider_that_has_its_request() -> None:
    first, second = AsyncQueueProvider("gmi"), AsyncQueueProvider("other")
    failover = FailoverProvider([first, second])
    stored: list[str] = []

    async def on_submitted(request_id: str) -> None:
        stored.append(request_id)

    await failover.generate(REQUEST, ProviderCall(on_submitted=on_submitted))
    assert stored == ["gmi|req-42"]
    await failover.generate(
        REQUEST, ProviderCall(resume_id="other|req-7", on_submitted=on_submitted)
    )
    assert second.resumed == ["req-7"] and first.resumed == []
    # a provider that submits again while resuming keeps its tag, for the next restart
    assert stored[-1] == "other|req-again"


async def test_an_id_stored_before_failover_resumes_on_the_jobs_own_provider() -> None:
    first, second = AsyncQueueProvider("nexconn"), AsyncQueueProvider("gmi")
    failover = FailoverProvider([first, second])
    await failover.generate(REQUEST, ProviderCall(resume_id="r-legacy", resume_provider="gmi"))
    assert second.resumed == ["r-legacy"] and first.resumed == []


async def test_a_request_the_provider_took_is_never_sent_to_the_next() -> None:
    # GMI accepted the job, then a poll failed: GMI still makes (and bills) the image
    first = AsyncQueueProvider("gmi", fail_after_submit=RateLimited(120))
    second = AsyncQueueProvider("other")
    failover = FailoverProvider([first, second])
    with pytest.raises(RateLimited):
        await failover.generate(REQUEST)
    assert second.submitted == 0
    assert not failover.breakers["gmi"].closed  # it still counts against the provider


async def test_a_post_that_timed_out_after_sending_is_not_sent_to_the_next(
    nexconn: FakeNexconn, gemini: FakeGemini, clock: Clock
) -> None:
    nexconn.script(Reply(200, {}, delay=2.0))  # the request is in; the answer never comes
    first = NexconnProvider(NX_KEY, nexconn.base_url, policy=FAST, timeout=0.3, sleep=Sleeps())
    second = GeminiProvider(GM_KEY, gemini.base_url, policy=FAST, timeout=5.0, sleep=Sleeps())
    failover = FailoverProvider([first, second], clock=clock)
    try:
        with pytest.raises(ProviderTimeout) as timed_out:
            await failover.generate(REQUEST)
    finally:
        await failover.aclose()
    assert timed_out.value.maybe_billed
    assert len(nexconn.requests) == 1 and gemini.requests == []


def test_failures_of_one_outage_open_the_breaker_once() -> None:
    clock = Clock()
    breaker = Breaker(BreakerPolicy(cooldown=10, max_cooldown=600), clock)
    tickets = [breaker.begin() for _ in range(8)]  # eight requests in flight
    for ticket in tickets:
        breaker.failed(ticket)
    assert breaker.state.failures == 1 and breaker.state.open_until == clock.now + 10


def test_ids_that_merely_contain_the_separator_stay_whole() -> None:
    assert split_request_id("gmi|r1", "gmi,nexconn", ["gmi", "nexconn"]) == ("gmi", "r1")
    assert split_request_id("a|b", "gmi", ["gmi"]) == ("gmi", "a|b")
    assert split_request_id("r-legacy", "gmi", ["gmi", "nexconn"]) == ("gmi", "r-legacy")


def test_while_every_provider_cools_down_there_is_still_one_trial() -> None:
    clock = Clock()
    breaker = Breaker(BreakerPolicy(cooldown=10), clock)
    breaker.failed(breaker.begin())
    tickets = [breaker.begin() for _ in range(4)]  # forced through: all providers are down
    assert tickets.count(Ticket.TRIAL) == 1
    for ticket in tickets:
        breaker.failed(ticket)
    assert breaker.state.failures == 2  # one failed trial, not four


def test_only_the_trial_releases_the_trial() -> None:
    clock = Clock()
    breaker = Breaker(BreakerPolicy(cooldown=10), clock)
    old = breaker.begin()  # started while closed, still running
    breaker.failed(breaker.begin())
    clock.now += 10
    trial = breaker.begin()
    breaker.released(old)  # the old request ends with a safety block: no verdict
    assert not breaker.available()  # the trial is still the only one
    breaker.released(trial)
    assert breaker.available()


def test_breaker_states() -> None:
    clock = Clock()
    breaker = Breaker(BreakerPolicy(cooldown=10, max_cooldown=25), clock)
    assert breaker.available()
    breaker.failed(breaker.begin())
    assert not breaker.available()
    clock.now += 10
    assert breaker.available()
    trial = breaker.begin()
    assert not breaker.available()  # only one trial at a time
    breaker.failed(trial)
    assert breaker.state.open_until == clock.now + 20
    clock.now += 20
    breaker.failed(breaker.begin())
    assert breaker.state.open_until == clock.now + 25  # capped
    breaker.succeeded()
    assert breaker.closed and breaker.available()


class Named(RecordingProvider):
    def __init__(self, name: str) -> None:
        super().__init__()
        self.name = name


async def test_through_the_core_the_turn_and_the_ledger_name_the_provider_that_made_it(
    sqlite_store: Store,
) -> None:
    first, second = Named("nexconn"), Named("gemini")
    core = ImagineBot(sqlite_store, FailoverProvider([first, second]), model=REQUEST.model)
    sink = CollectingSink()
    first.fail_next(ProviderUnavailable())
    job = await core.imagine(
        ImagineRequest(ThreadKey("test", "team", "channel", "t1"), "alice", "a fox"), sink
    )
    await asyncio.wait_for(core.idle(), 10)
    made = sink.deliveries[-1].turn
    assert made.provider == "gemini"
    stored = await sqlite_store.get_job(job.id)
    assert stored is not None and stored.provider == "gemini"
    # the thread goes on where the provider is up: the open breaker skips the first
    await core.edit(EditRequest("alice", "make it blue", turn_id=made.id), sink)
    await asyncio.wait_for(core.idle(), 10)
    assert len(first.requests) == 1 and len(second.requests) == 2
    assert second.requests[-1].history[-1].result.data == second.results[0].image.data
    await core.shutdown(0)
