"""`imagine-bot usage` as an operator runs it: a real process reading a ledger that real
work wrote — a console session, a core serving two chat workspaces, and jobs of past months
(completed through the store's job API) — in every format, filtered and bounded."""

from __future__ import annotations

import asyncio
import csv
import io
import json
from calendar import monthrange
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from bot.core import ImagineBot, ImagineRequest
from bot.errors import SafetyBlocked
from bot.models import ThreadKey, new_id
from bot.team import TeamSettings
from storage import open_store
from storage.sql import SqlStore
from tests.conftest import run_cli
from tests.fakes.collecting_sink import CollectingSink
from tests.fakes.recording_provider import RecordingProvider
from tests.storage.test_store_contract import WORKER, claim, image, job, thread, turn

MODEL = "gemini-2.5-flash-image"
OPERATOR = {"LOGNAME": "operator", "USER": "operator"}  # the console user's id


def _at(text: str) -> float:
    return datetime.fromisoformat(text).timestamp()


PAST = [
    # (workspace, user, accepted at): the last is still 31 March in Los Angeles
    ("guild-2", "dave", _at("2024-02-29T23:30:00+00:00")),
    ("guild-1", "alice", _at("2024-03-15T12:00:00+00:00")),
    ("guild-1", "erin", _at("2024-04-01T05:00:00+00:00")),
]


async def _past_job(store: SqlStore, n: int, workspace: str, user: str, at: float) -> None:
    """A job accepted at `at` for US$0.05 and made, through the store's job API."""
    await store.create_thread(thread(100 + n, workspace=workspace, created_at=at))
    job_id = f"past-{n}"
    accepted = replace(job(job_id, f"thread-{100 + n}", created_at=at), user_id=user, cost_usd=0.05)
    await store.add_job(accepted)
    assert await claim(store, job_id) == [job_id]
    assert await store.start_job(job_id, WORKER, None)
    made = turn(f"turn-past-{n}", f"thread-{100 + n}", image(job_id), created_at=at)
    assert await store.make_job(job_id, WORKER, made, [image(job_id)])
    assert await store.deliver_job(job_id, WORKER, "discord", None)


async def _seed(url: str) -> None:
    """This month: alice 2 and bob 1 in Discord server guild-1 (bob's second fails: the
    safety filter), carol 1 in Slack team T1, at US$0.05 an image; and the past jobs."""
    store = await open_store(url)
    provider = RecordingProvider()
    core = ImagineBot(
        store, provider, model=MODEL, team=TeamSettings(price_per_image=0.05, default_model=MODEL)
    )
    sink = CollectingSink()
    for platform in ("discord", "slack"):
        core.register_platform(platform, lambda _job: sink)
    await core.start()
    try:
        for platform, workspace, user in [
            ("discord", "guild-1", "alice"),
            ("discord", "guild-1", "alice"),
            ("discord", "guild-1", "bob"),
            ("slack", "T1", "carol"),
        ]:
            key = ThreadKey(platform, workspace, "channel-1", new_id())
            await core.imagine(ImagineRequest(key, user, "a red fox"), sink)
            await asyncio.wait_for(core.idle(), 10)
        provider.fail_next(SafetyBlocked())
        key = ThreadKey("discord", "guild-1", "channel-1", new_id())
        await core.imagine(ImagineRequest(key, "bob", "a red fox"), sink)
        await asyncio.wait_for(core.idle(), 10)
        assert len(sink.deliveries) == 4 and len(sink.errors) == 1
    finally:
        await core.shutdown(0)
    try:
        for n, (workspace, user, at) in enumerate(PAST):
            await _past_job(store, n, workspace, user, at)
    finally:
        await store.close()


@pytest.fixture(scope="module")
def ledger(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder whose database holds the ledger above, plus one console image at
    IMAGINE_PRICE_PER_IMAGE=0.25 made by the real console process."""
    folder = tmp_path_factory.mktemp("ledger")
    made = run_cli(
        folder,
        "console",
        stdin="/imagine a lighthouse\n",
        IMAGINE_PRICE_PER_IMAGE="0.25",
        **OPERATOR,
    )
    assert made.returncode == 0 and "✓ " in made.stdout, made.stderr
    asyncio.run(_seed(f"sqlite:///{folder}/state/bot.db"))
    return folder


def usage(folder: Path, *args: str, **settings: str) -> str:
    result = run_cli(folder, "usage", *args, **settings)
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    return result.stdout


def row(platform: str, workspace: str, user: str, images: int, cost: float) -> dict[str, Any]:
    return {
        "platform": platform,
        "workspace": workspace,
        "user": user,
        "images": images,
        "cost_usd": cost,
    }


THIS_MONTH = [
    row("console", "local", "operator", 1, 0.25),
    row("discord", "guild-1", "alice", 2, 0.1),
    row("discord", "guild-1", "bob", 1, 0.05),
    row("slack", "T1", "carol", 1, 0.05),
]


def test_json_is_this_month_per_workspace_and_user(ledger: Path) -> None:
    # costs were fixed when each job was accepted: today's price changes nothing
    out = usage(ledger, "--format", "json", IMAGINE_PRICE_PER_IMAGE="9")
    assert json.loads(out) == THIS_MONTH  # bob's failed image is not counted


def test_csv_has_a_header_and_the_same_rows(ledger: Path) -> None:
    rows = list(csv.reader(io.StringIO(usage(ledger, "--format", "csv"))))
    assert rows == [
        ["platform", "workspace", "user", "images", "cost_usd"],
        ["console", "local", "operator", "1", "0.2500"],
        ["discord", "guild-1", "alice", "2", "0.1000"],
        ["discord", "guild-1", "bob", "1", "0.0500"],
        ["slack", "T1", "carol", "1", "0.0500"],
    ]


def test_table_is_aligned_with_a_total(ledger: Path) -> None:
    today = datetime.now(UTC)
    last = monthrange(today.year, today.month)[1]
    month = f"{today:%Y-%m}"
    assert usage(ledger) == (
        f"Images and estimated US$ from {month}-01 to {month}-{last:02} "
        "(days begin at midnight UTC):\n"
        "platform  workspace  user      images  cost_usd\n"
        "console   local      operator       1      0.25\n"
        "discord   guild-1    alice          2      0.10\n"
        "discord   guild-1    bob            1      0.05\n"
        "slack     T1         carol          1      0.05\n"
        "-----------------------------------------------\n"
        "total                               5      0.45\n"
    )


def test_one_workspace(ledger: Path) -> None:
    rows = json.loads(usage(ledger, "--workspace", "guild-1", "--format", "json"))
    assert rows == THIS_MONTH[1:3]
    assert usage(ledger, "--workspace", "guild-1").splitlines()[-1].split() == [
        "total",
        "3",
        "0.15",
    ]


def _users(rows: list[dict[str, Any]]) -> list[tuple[str, str, int, float]]:
    return [(row["workspace"], row["user"], row["images"], row["cost_usd"]) for row in rows]


def test_since_and_until_are_whole_days_in_the_quota_zone(ledger: Path) -> None:
    march = ["--since", "2024-03-01", "--until", "2024-03-31", "--format", "json"]
    assert _users(json.loads(usage(ledger, *march))) == [("guild-1", "alice", 1, 0.05)]
    # --until alone starts at the first of its month; erin's image (05:00 UTC on 1 April)
    # was made on 31 March in Los Angeles, dave's (23:30 UTC on 29 February) still in February
    in_la = usage(
        ledger, "--until", "2024-03-31", "--format", "json", IMAGINE_QUOTA_TZ="America/Los_Angeles"
    )
    assert _users(json.loads(in_la)) == [
        ("guild-1", "alice", 1, 0.05),
        ("guild-1", "erin", 1, 0.05),
    ]
    # --until includes its whole day, up to the next midnight
    leap_day = ["--since", "2024-02-29", "--until", "2024-02-29", "--format", "json"]
    assert _users(json.loads(usage(ledger, *leap_day))) == [("guild-2", "dave", 1, 0.05)]
    # --since alone runs to today: everything
    everything = json.loads(usage(ledger, "--since", "2024-01-01", "--format", "json"))
    assert sum(row["images"] for row in everything) == 5 + 3


def test_an_empty_period_in_every_format(ledger: Path) -> None:
    period = ["--since", "2023-01-01", "--until", "2023-01-31"]
    assert usage(ledger, *period) == (
        "No images in the ledger from 2023-01-01 to 2023-01-31 (days begin at midnight UTC).\n"
    )
    assert json.loads(usage(ledger, *period, "--format", "json")) == []
    assert usage(ledger, *period, "--format", "csv") == "platform,workspace,user,images,cost_usd\n"


def test_a_fresh_database_has_an_empty_ledger(tmp_path: Path) -> None:
    assert run_cli(tmp_path, "console", stdin="/quit\n").returncode == 0  # makes the database
    assert usage(tmp_path, "--format", "json") == "[]\n"


def test_a_database_that_does_not_exist_is_not_created(tmp_path: Path) -> None:
    result = run_cli(tmp_path, "usage", DATABASE_URL=f"sqlite:///{tmp_path}/typo.db")
    assert result.returncode == 2
    assert result.stderr == (
        f"imagine-bot usage: no database at {tmp_path}/typo.db (DATABASE_URL); nothing to report\n"
    )
    assert not (tmp_path / "typo.db").exists()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ["--since", "2024-13-01"],
            "imagine-bot usage: --since must be a date like 2024-03-01, not '2024-13-01'",
        ),
        (
            ["--until", "yesterday"],
            "imagine-bot usage: --until must be a date like 2024-03-01, not 'yesterday'",
        ),
        (
            ["--since", "2024-05-01", "--until", "2024-04-30"],
            "imagine-bot usage: --since 2024-05-01 is after --until 2024-04-30",
        ),
    ],
)
def test_a_bad_date_is_one_line_naming_the_option(
    tmp_path: Path, args: list[str], message: str
) -> None:
    result = run_cli(tmp_path, "usage", *args)
    assert result.returncode == 2
    assert result.stderr == message + "\n"
    assert result.stdout == ""
    assert not (tmp_path / "state").exists()  # refused before opening any database


def test_help_documents_every_option(tmp_path: Path) -> None:
    result = run_cli(tmp_path, "usage", "--help")
    assert result.returncode == 0
    text = " ".join(result.stdout.split())
    for option in ("--since YYYY-MM-DD", "--until YYYY-MM-DD", "--workspace ID", "--format"):
        assert option in text
    assert "{table,csv,json}" in text
    assert "included up to the next midnight" in text
    assert "IMAGINE_QUOTA_TZ" in text
    assert "usage" in run_cli(tmp_path, "--help").stdout
