"""Several providers in order of preference, each behind a circuit breaker.

`IMAGINE_PROVIDER=nexconn,gmi`: a job goes to the first provider that is up and sells its
model. When that provider is down or rate-limiting *after its own retries* (the failures in
`FAILOVER_ERRORS`), the job moves to the next one; a safety block, a refusal or an input
error would only repeat elsewhere, so it ends the job as before.

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
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace

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

FAILOVER_ERRORS: tuple[type[ImagineError], ...] = (
    ProviderUnavailable,
    RateLimited,
    ProviderTimeout,
    InvalidProviderResponse,
    BadApiKey,
    ProviderAccountBlocked,
)
"""Failures that say "this provider, now" rather than "this request"."""

ID_SEPARATOR = "|"


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


class Breaker:
    """One provider's circuit breaker (`clock` is injectable for virtual-time tests)."""

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

    def begin(self) -> None:
        """A request starts; when the breaker is open, it is the trial."""
        if self.state.failures:
            self.state = replace(self.state, trial_running=True)

    def succeeded(self) -> None:
        self.state = BreakerState()

    def failed(self) -> None:
        failures = self.state.failures + 1
        cooldown = min(self.policy.cooldown * 2 ** (failures - 1), self.policy.max_cooldown)
        self.state = BreakerState(failures, self.clock() + cooldown, False)

    def released(self) -> None:
        """A request ended without a verdict on the provider (cancelled, or a failure that
        was the request's own): a trial it held may run again."""
        if self.state.trial_running:
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
            try:
                return await self._call(provider, request, call)
            except FAILOVER_ERRORS as error:
                last = error
        assert last is not None
        raise last

    async def _call(
        self, provider: Provider, request: ImageRequest, call: ProviderCall
    ) -> ImageResult:
        breaker = self.breakers[provider.name]
        breaker.begin()
        verdict = False
        try:
            result = await provider.generate(request, self._tagged(provider, call))
            breaker.succeeded()
            verdict = True
        except FAILOVER_ERRORS:
            breaker.failed()
            verdict = True
            raise
        finally:
            if not verdict:
                breaker.released()
        return replace(result, provider=result.provider or provider.name)

    async def _resume(self, request: ImageRequest, call: ProviderCall) -> ImageResult:
        name, _, request_id = (call.resume_id or "").partition(ID_SEPARATOR)
        provider = next((p for p in self.providers if p.name == name), None)
        if provider is None or not request_id:
            raise ProviderUnavailable(detail=f"cannot resume {call.resume_id!r} on {self.name}")
        return await self._call(provider, request, replace(call, resume_id=request_id))

    @staticmethod
    def _tagged(provider: Provider, call: ProviderCall) -> ProviderCall:
        """Store `name|id`, so a resumed job goes back to the provider that has it."""
        if call.resume_id is not None:
            return call

        async def submitted(request_id: str) -> None:
            await call.on_submitted(f"{provider.name}{ID_SEPARATOR}{request_id}")

        return replace(call, on_submitted=submitted)

    async def aclose(self) -> None:
        for provider in self.providers:
            await provider.aclose()
