"""The sink's pacing and ordering, against the fake Slack Web API."""

from __future__ import annotations

import asyncio

from slack_sdk.web.async_client import AsyncWebClient

from adapters.slack.convert import Destination
from adapters.slack.sink import SlackSink
from bot.core import Phase, Progress
from bot.errors import Cancelled, ProviderUnavailable
from bot.models import Job, TurnKind
from tests.fakes.slack_server import FakeSlack


def job() -> Job:
    return Job(
        id="job1",
        thread_id="th1",
        user_id="U1",
        kind=TurnKind.IMAGINE,
        prompt="a cat",
        reference_shas=(),
        aspect_ratio="1:1",
        parent_turn_id=None,
        follow_latest=False,
        destination=None,
        provider="demo",
        model="m",
    )


async def sink_on(slack: FakeSlack, *, status_is_root: bool = True) -> SlackSink:
    client = AsyncWebClient(token=slack.bot_token, base_url=slack.api_base)
    posted = await client.chat_postMessage(channel="C1", text="root")
    root = str(posted["ts"])
    status = root if status_is_root else None
    destination = Destination("C1", root, root, status, "U1", "T1")
    return SlackSink(client, None, destination, min_interval=1.0)  # type: ignore[arg-type]


async def test_progress_is_paced_and_never_goes_backwards(slack: FakeSlack) -> None:
    sink = await sink_on(slack)
    j = job()
    await sink.progress(Progress(j, Phase.GENERATING, elapsed=1.0))
    for tick in range(2, 6):  # the same phase, faster than once a second: dropped
        await sink.progress(Progress(j, Phase.GENERATING, elapsed=float(tick)))
    await sink.progress(Progress(j, Phase.QUEUED, position=1))  # late and stale: dropped
    assert len(slack.api("chat.update")) == 1
    await asyncio.sleep(1.05)
    await sink.progress(Progress(j, Phase.GENERATING, elapsed=7.0))
    assert len(slack.api("chat.update")) == 2
    assert "7 s" in slack.roots()[0].text


async def test_failure_on_the_root_is_also_said_in_the_thread(slack: FakeSlack) -> None:
    sink = await sink_on(slack)
    await sink.fail(job(), ProviderUnavailable(detail="secret detail"))
    root = slack.roots()[0]
    (reply,) = slack.replies(root.ts)
    assert "unavailable" in root.text and "unavailable" in reply.text
    assert "secret detail" not in root.text + reply.text
    await sink.progress(Progress(job(), Phase.GENERATING, elapsed=9.0))  # after the end: ignored
    assert "unavailable" in root.text


async def test_cancel_only_updates_the_status(slack: FakeSlack) -> None:
    sink = await sink_on(slack)
    await sink.fail(job(), Cancelled())
    root = slack.roots()[0]
    assert "Cancelled." in root.text and slack.replies(root.ts) == []


async def test_retry_goes_in_the_thread_when_the_status_message_cannot_be_updated(
    slack: FakeSlack,
) -> None:
    client = AsyncWebClient(token=slack.bot_token, base_url=slack.api_base)
    root = str((await client.chat_postMessage(channel="C1", text="root"))["ts"])
    gone = Destination("C1", root, root, "9999.000001", "U1", "T1")  # deleted meanwhile
    sink = SlackSink(client, None, gone, min_interval=1.0)  # type: ignore[arg-type]
    await sink.fail(job(), ProviderUnavailable())
    (reply,) = slack.replies(root)
    assert reply.text == f":warning: {ProviderUnavailable().user_message}"
    [actions] = [block for block in reply.blocks if block["type"] == "actions"]
    [button] = actions["elements"]
    assert (button["action_id"], button["value"]) == ("imagine:retry", "job1")
