"""No secret reaches a user, the jobs table or the log, whatever a provider quotes back."""

from __future__ import annotations

import asyncio
import io
import logging
from collections.abc import Iterator

import pytest

from bot.core import ImagineBot, ImagineRequest
from bot.logs import SecretFilter
from bot.models import ThreadKey, new_id
from bot.providers.http import RetryPolicy
from bot.providers.nexconn import NexconnProvider
from bot.redact import MASK, redact
from bot.store import Store
from tests.fakes.collecting_sink import CollectingSink
from tests.fakes.nexconn_server import FakeNexconn, error_body
from tests.fakes.scripted_json_server import Reply

KEY = "nx-live-4f9a8b7c6d5e"


@pytest.fixture
def log() -> Iterator[io.StringIO]:
    """The process log as `imagine-bot run` writes it: every line through the filter."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.addFilter(SecretFilter([KEY]))
    root = logging.getLogger()
    root.addHandler(handler)
    try:
        yield stream
    finally:
        root.removeHandler(handler)


@pytest.mark.parametrize(
    "echo",
    [
        f"header Authorization: Bearer {KEY} is not valid for this model",
        f"request {{'api_key': '{KEY}', 'model': 'x'}} rejected",
        f"unknown key {KEY}",  # bare: masked because it is the configured key
    ],
)
async def test_a_provider_error_quoting_the_key_shows_it_nowhere(
    echo: str, sqlite_store: Store, log: io.StringIO
) -> None:
    fake = FakeNexconn(KEY)
    await fake.start()
    provider = NexconnProvider(KEY, fake.base_url, policy=RetryPolicy(attempts=1))
    core = ImagineBot(sqlite_store, provider, model="gemini-2.5-flash-image")
    sink = CollectingSink()
    try:
        fake.script(Reply(400, error_body(echo)))
        key = ThreadKey("test", "team", "channel", new_id())
        job = await core.imagine(ImagineRequest(key, "alice", "a fox"), sink)
        await asyncio.wait_for(core.idle(), 10)
    finally:
        await core.shutdown(0)
        await provider.aclose()
        await fake.close()

    [shown] = sink.errors
    assert shown.startswith("The image provider rejected this request")
    assert KEY not in shown and MASK in shown
    stored = await sqlite_store.get_job(job.id)
    assert stored is not None and stored.error is not None
    assert KEY not in stored.error and MASK in stored.error
    assert "job" in log.getvalue() and KEY not in log.getvalue()


@pytest.mark.parametrize(
    ("text", "masked"),
    [
        ("Bearer abcdefgh12345678", f"Bearer {MASK}"),
        ("slack said no to xoxb-1234-5678-abcdefgh", f"slack said no to {MASK}"),
        (
            "GET https://x/api?key=AIzaSyA1234567890abcdefghijklmnop&alt=json",
            f"GET https://x/api?key={MASK}&alt=json",
        ),
        (
            "PATCH /api/v10/webhooks/123456/aW50ZXJhY3Rpb246MTIzNDU2Nzg5/messages/@original",
            f"PATCH /api/v10/webhooks/123456/{MASK}/messages/@original",
        ),
        ("total_tokens=1524, max_token=2048", "total_tokens=1524, max_token=2048"),
        ("a panda making latte art", "a panda making latte art"),
    ],
)
def test_credential_shaped_text_is_masked_and_ordinary_text_is_not(text: str, masked: str) -> None:
    assert redact(text) == masked
