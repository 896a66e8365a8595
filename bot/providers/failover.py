"""Several providers in order of preference, each behind a circuit breaker.

`IMAGINE_PROVIDER=nexconn,gmi`: a job goes to the first provider that is up and sells its
model. When that provider is down or rate-limiting *after its own retries* (the failures in
`FAILOVER_ERRORS`), the job moves to the next one; a safety block, a refusal or an input
error would only repeat elsewhere, so it ends the job as before.

Nothing is ever paid for twice on purpose: a request that may already be generating at the
first provider is not sent to the next. That is a request an asynchronous provider accepted
(GMI reported its request id: a later poll error ends the job, GMI keeps it), and a request
that was sent and then timed out or lost its connection (`ImagineError.maybe_billed`). An
answer that came back unreadable is not failed over either. Failover is for failures that
say the request was not taken: 5xx and 429 answers after the provider's own retries,
connection failures before sending, a refused key.

A provider that failed is skipped for a cool-down that doubles while it keeps failing
(`Breaker`); when the cool-down ends, one job is let through as a trial, and its success
closes the breaker. If every provider is cooling down, the one whose cool-down ends first is
tried anyway: refusing a user because of old failures helps no one.

The conversation moves with the job: providers build their requests from the
provider-neutral history (prompts and images) when a turn's continuation state came from
another provider. An asynchronous provider's request id is stored as `name|id`, so a job
resumed after a restart polls the provider it was submitted to.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass, replace
from enum import StrEnum

from bot import metrics
from bot.catalog import model_info
from bot.errors import (
    BadApiKey,
    ImagineError,
    InvalidProviderResponse,
    ProviderAccountBlocked,
    ProviderTimeout,
    ProviderUnavailable,
    RateLimited,
)
from bot.models import ImageRequest, ImageResult
from bot.providers.base import Capabilities, Provider, ProviderCall

log = logging.getLogger(__name__)

PROVIDER_FAILURES: tuple[type[ImagineError], ...] = (
    ProviderUnavailable,
    RateLimited,
    ProviderTimeout,
    InvalidProviderResponse,
    BadApiKey,
    ProviderAccountBlocked,
)
"""Failures that say "this provider, now" rather than "this request": they open its breaker."""

NOT_MOVABLE: tuple[type[ImagineError], ...] = (InvalidProviderResponse,)
"""Provider failures after which the request still does not move on: an unreadable answer
came from a request the provider took (and may bill)."""

ID_SEPARATOR = "|"


def split_request_id(
    stored: str, provider: str | None = None, known: Collection[str] = ()
) -> tuple[str | None, str]:
    """(provider, id) of a stored provider request id: `gmi|r1` names its provider (one of
    `known`); any other id — stored before failover was configured, or one that merely
    contains the separator — belongs to the job's own `provider` when that is one name."""
    owner, separator, request_id = stored.partition(ID_SEPARATOR)
    if separator and owner in known:
        return owner, request_id
    single = provider if provider and "," not in provider else None
    return single, stored


@dataclass(frozen=True, slots=True)
class BreakerPolicy:
    """Cool-down after the first failure, doubled per further failure, up to `max_cooldown`."""

    cooldown: float = 30.0
    max_cooldown: float = 600.0


@dataclass(frozen=True, slots=True)
class BreakerState:
    failures: int = 0
    """Consecutive failures; 0: closed."""
    open_until: float = 0.0
    trial_running: bool = False


class Ticket(StrEnum):
    """How a request passed the breaker: while closed, or as the one trial when open."""

    CLOSED = "closed"
    TRIAL = "trial"


class Breaker:
    """One provider's circuit breaker (`clock` is injectable for virtual-time tests).

    Only the first failure while closed opens it, and only a failed trial doubles the
    cool-down: eight requests in flight that fail together are one outage, not eight."""

    def __init__(
        self, policy: BreakerPolicy = BreakerPolicy(), clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.policy = policy
        self.clock = clock
        self.state = BreakerState()

    @property
    def closed(self) -> bool:
        return self.state.failures == 0

    def available(self) -> bool:
        """Closed, or cooled down with no trial running yet."""
        state = self.state
        if state.failures == 0:
            return True
        return self.clock() >= state.open_until and not state.trial_running

    def begin(self) -> Ticket:
        """A request starts; when the breaker is open and no trial runs, it is the trial
        (others let through while every provider cools down count as closed requests)."""
        if self.state.failures and not self.state.trial_running:
            self.state = replace(self.state, trial_running=True)
            return Ticket.TRIAL
        return Ticket.CLOSED

    def succeeded(self) -> None:
        self.state = BreakerState()

    def failed(self, ticket: Ticket) -> None:
        failures = self.state.failures
        if ticket is Ticket.CLOSED and failures:
            return  # opened already by another request of the same outage
        failures += 1
        cooldown = min(self.policy.cooldown * 2 ** (failures - 1), self.policy.max_cooldown)
        self.state = BreakerState(failures, self.clock() + cooldown, False)

    def released(self, ticket: Ticket) -> None:
        """A request ended without a verdict on the provider (cancelled, or a failure that
        was the request's own): the trial it held, if it was the trial, may run again."""
        if ticket is Ticket.TRIAL and self.state.trial_running:
            self.state = replace(self.state, trial_running=False)


class FailoverProvider:
    """`Provider` over several providers, in order of preference."""

    capabilities: Capabilities

    def __init__(
        self,
        providers: Sequence[Provider],
        policy: BreakerPolicy = BreakerPolicy(),
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if not providers:
            raise ValueError("FailoverProvider needs at least one provider")
        self.providers = tuple(providers)
        self.name = ",".join(p.name for p in self.providers)
        self.breakers = {p.name: Breaker(policy, clock) for p in self.providers}
        # the strictest limit: a job may land on any of them
        self.capabilities = Capabilities(
            max_reference_images=min(p.capabilities.max_reference_images for p in self.providers)
        )

    def sells(self, model: str) -> bool:
        return any(model_info(model).provider_id(p.name) for p in self.providers)

    def order(self, model: str) -> list[Provider]:
        """Who to try, in order: available providers that sell the model, else (all cooling
        down) the one whose cool-down ends first."""
        selling = [p for p in self.providers if model_info(model).provider_id(p.name)]
        ready = [p for p in selling if self.breakers[p.name].available()]
        if ready:
            return ready
        return sorted(selling, key=lambda p: self.breakers[p.name].state.open_until)[:1]

    async def generate(
        self, request: ImageRequest, call: ProviderCall = ProviderCall()
    ) -> ImageResult:
        if call.resume_id is not None:
            return await self._resume(request, call)
        candidates = self.order(request.model)
        if not candidates:
            raise ProviderUnavailable(detail=f"no configured provider sells {request.model}")
        last: ImagineError | None = None
        for index, provider in enumerate(candidates):
            if index:
                metrics.failed_over(candidates[index - 1].name, provider.name)
                log.warning(
                    "failing over from %s to %s: %s",
                    candidates[index - 1].name,
                    provider.name,
                    last,
                )
            submitted: list[str] = []
            try:
                return await self._call(provider, request, call, submitted)
            except PROVIDER_FAILURES as error:
                if submitted or error.maybe_billed or isinstance(error, NOT_MOVABLE):
                    raise  # the provider has the request: sending it elsewhere pays twice
                last = error
        assert last is not None
        raise last

    async def _call(
        self,
        provider: Provider,
        request: ImageRequest,
        call: ProviderCall,
        submitted: list[str] | None = None,
    ) -> ImageResult:
        breaker = self.breakers[provider.name]
        ticket = breaker.begin()
        verdict = False
        try:
            result = await provider.generate(request, self._tagged(provider, call, submitted))
            breaker.succeeded()
            verdict = True
        except PROVIDER_FAILURES:
            breaker.failed(ticket)
            verdict = True
            raise
        finally:
            if not verdict:
                breaker.released(ticket)
        return replace(result, provider=result.provider or provider.name)

    async def _resume(self, request: ImageRequest, call: ProviderCall) -> ImageResult:
        owner, request_id = split_request_id(
            call.resume_id or "", call.resume_provider, [p.name for p in self.providers]
        )
        provider = next((p for p in self.providers if p.name == owner), None)
        if provider is None or not request_id:
            raise ProviderUnavailable(detail=f"cannot resume {call.resume_id!r} on {self.name}")
        return await self._call(provider, request, replace(call, resume_id=request_id))

    @staticmethod
    def _tagged(
        provider: Provider, call: ProviderCall, submitted: list[str] | None = None
    ) -> ProviderCall:
        """Store `name|id`, so a resumed job goes back to the provider that has it — also
        when a resumed provider submits again — and note that the provider took it."""

        async def on_submitted(request_id: str) -> None:
            if submitted is not None:
                submitted.append(request_id)
            await call.on_submitted(f"{provider.name}{ID_SEPARATOR}{request_id}")

        return replace(call, on_submitted=on_submitted)

    async def aclose(self) -> None:
        for provider in self.providers:
            await provider.aclose()
