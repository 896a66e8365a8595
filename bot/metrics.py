"""Prometheus metrics: every metric object of the bot, in one registry of our own.

The core, the runner, the provider plumbing and the adapters record into these objects;
`bot.health` serves them (`GET /metrics`, rendered by `prometheus_client.generate_latest`).
Labels stay low-cardinality: never a user, thread, job or channel id.

metric                                  type       labels             what
imagine_jobs_total                      counter    outcome            jobs ended here: done
                                                                      (delivered), cancelled,
                                                                      or the failure code
imagine_job_duration_seconds            histogram  outcome            acceptance to end: done,
                                                                      failed or cancelled
imagine_provider_call_duration_seconds  histogram  provider, outcome  one generation (ok or the
                                                                      failure code), retries in
imagine_provider_retries_total          counter    reason             rate_limited, server_error,
                                                                      timeout, connection
imagine_queue_depth                     gauge      -                  jobs waiting in the shared
                                                                      queue, read at scrape time
imagine_jobs_running                    gauge      -                  this process's jobs at the
                                                                      provider now
imagine_ack_latency_seconds             histogram  platform           event to acknowledgement
imagine_images_total                    counter    provider           images made
imagine_estimated_cost_usd_total        counter    provider           images × price per image
"""

from __future__ import annotations

import asyncio
import time
from types import TracebackType

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from bot.errors import ImagineError

REGISTRY = CollectorRegistry(auto_describe=True)

JOBS = Counter(
    "imagine_jobs",
    "Jobs that ended in this process, by outcome: done, cancelled or the failure code.",
    ["outcome"],
    registry=REGISTRY,
)
JOB_DURATION = Histogram(
    "imagine_job_duration_seconds",
    "Seconds from a job's acceptance to its end (done, failed or cancelled).",
    ["outcome"],
    buckets=(1, 2.5, 5, 10, 15, 20, 30, 45, 60, 90, 120, 180, 300, 600),
    registry=REGISTRY,
)
PROVIDER_CALL_DURATION = Histogram(
    "imagine_provider_call_duration_seconds",
    "Seconds one generation spent at the provider, every retry included.",
    ["provider", "outcome"],
    buckets=(0.5, 1, 2.5, 5, 10, 15, 20, 30, 45, 60, 90, 120, 180),
    registry=REGISTRY,
)
PROVIDER_RETRIES = Counter(
    "imagine_provider_retries",
    "Provider HTTP requests sent again, by reason.",
    ["reason"],
    registry=REGISTRY,
)
QUEUE_DEPTH = Gauge(
    "imagine_queue_depth",
    "Jobs waiting in the shared queue (every process on the database), read at scrape time.",
    registry=REGISTRY,
)
JOBS_RUNNING = Gauge(
    "imagine_jobs_running",
    "Jobs this process has at the provider now.",
    registry=REGISTRY,
)
ACK_LATENCY = Histogram(
    "imagine_ack_latency_seconds",
    "Seconds from a chat event to its acknowledgement, per platform.",
    ["platform"],
    buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 1.5, 2, 2.5, 3, 5),
    registry=REGISTRY,
)
IMAGES = Counter(
    "imagine_images",
    "Images made, by provider.",
    ["provider"],
    registry=REGISTRY,
)
COST = Counter(
    "imagine_estimated_cost_usd",
    "Estimated US$ spent: each image made at its job's price (IMAGINE_PRICE_PER_IMAGE).",
    ["provider"],
    registry=REGISTRY,
)
FAILOVERS = Counter(
    "imagine_provider_failovers",
    "Jobs moved from one provider to the next after the first was down or rate-limited.",
    ["from_provider", "to_provider"],
    registry=REGISTRY,
)
POLICY_REFUSALS = Counter(
    "imagine_policy_refusals",
    "Requests team control refused before anything was queued, by rule.",
    ["rule"],
    registry=REGISTRY,
)


def job_ended(outcome: str, kind: str, created_at: float | None) -> None:
    """A job's end: `outcome` is `done`, `cancelled` or a failure code; `kind` is `done`,
    `failed` or `cancelled` (the duration histogram's coarser label)."""
    JOBS.labels(outcome=outcome or "unknown").inc()
    if created_at:
        JOB_DURATION.labels(outcome=kind).observe(max(0.0, time.time() - created_at))


def images_made(provider: str, count: int, cost_usd: float) -> None:
    """`count` images made for one job whose estimated price is `cost_usd`."""
    if count <= 0:
        return
    IMAGES.labels(provider=provider).inc(count)
    COST.labels(provider=provider).inc(max(0.0, cost_usd))


def failed_over(from_provider: str, to_provider: str) -> None:
    FAILOVERS.labels(from_provider=from_provider, to_provider=to_provider).inc()


def refused(rule: str) -> None:
    """A request team control refused: `imagine_jobs_total{outcome="refused"}` and the rule."""
    JOBS.labels(outcome="refused").inc()
    POLICY_REFUSALS.labels(rule=rule).inc()


def acked(platform: str, seconds: float) -> None:
    ACK_LATENCY.labels(platform=platform).observe(max(0.0, seconds))


def retried(reason: str) -> None:
    PROVIDER_RETRIES.labels(reason=reason).inc()


class provider_call:  # used like a function: `async with provider_call(name):`
    """Times one generation at the provider and counts it as running meanwhile; the outcome
    label is `ok`, the failure code, `timeout` or `cancelled`. Put it outside the job's
    `asyncio.timeout`, so a deadline is seen as `timeout`."""

    def __init__(self, provider: str) -> None:
        self.provider = provider
        self.started = 0.0

    async def __aenter__(self) -> None:
        JOBS_RUNNING.inc()
        self.started = time.monotonic()

    async def __aexit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        JOBS_RUNNING.dec()
        if error is None:
            outcome = "ok"
        elif isinstance(error, ImagineError):
            outcome = error.code
        elif isinstance(error, TimeoutError):
            outcome = "timeout"
        elif isinstance(error, asyncio.CancelledError):
            outcome = "cancelled"
        else:
            outcome = "internal"
        PROVIDER_CALL_DURATION.labels(provider=self.provider, outcome=outcome).observe(
            time.monotonic() - self.started
        )
