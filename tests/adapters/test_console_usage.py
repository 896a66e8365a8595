"""Team control in the console, as a user runs it: `python -m bot console` with lines on
stdin. `/usage` shows the numbers and writes this month's chart; a request over a limit is
refused with its sentence and draws nothing."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime
from pathlib import Path

import pytest
from PIL import Image as PILImage

from tests.conftest import run_cli

OPERATOR = {"LOGNAME": "operator", "USER": "operator"}  # the console user's id
IN = r"in (\d+ h( \d+ min)?|\d+ min)"


def made(stdout: str) -> list[str]:
    return [line for line in stdout.splitlines() if line.startswith("✓ ")]


def test_usage_shows_todays_image_and_writes_the_chart(tmp_path: Path) -> None:
    result = run_cli(
        tmp_path,
        "console",
        stdin="/help\n/imagine a lighthouse at dusk\n/usage\n",
        IMAGINE_USER_DAILY_LIMIT="3",
        IMAGINE_PRICE_PER_IMAGE="0.05",
        **OPERATOR,
    )
    assert result.returncode == 0, result.stderr
    assert "  /usage                          images made today and this month" in result.stdout
    assert len(made(result.stdout)) == 1
    lines = result.stdout.split(made(result.stdout)[0] + "\n", 1)[1].splitlines()
    chart = tmp_path / "out" / f"usage-{datetime.now(UTC):%Y-%m}.png"
    assert lines[0] == "Your images: 1 image today ($0.05), 1 this month ($0.05)."
    assert re.fullmatch(rf"Your daily limit: 2 left of 3 images; it resets {IN}\.", lines[1])
    assert lines[2:] == [
        "This console today: no limit.",
        "Monthly budget: no limit.",
        "",
        # the console is the operator's own terminal: they see the whole workspace
        "This console: 1 image today ($0.05), 1 image this month ($0.05 estimated).",
        "Top users this month:",
        "1. operator — 1 image, $0.05",
        "Days begin at midnight UTC.",
        f"chart: {chart}",
    ]
    with PILImage.open(chart) as image:
        assert image.format == "PNG" and image.size == (640, 240)


@pytest.mark.parametrize(
    ("limit", "refusal"),
    [
        (
            {"IMAGINE_USER_DAILY_LIMIT": "1"},
            rf"✗ You've made 1 of your 1 image today; more at 00:00 UTC, {IN}\.",
        ),
        (
            {"IMAGINE_WORKSPACE_DAILY_LIMIT": "1"},
            rf"✗ This console has made 1 of its 1 image today; more at 00:00 UTC, {IN}\.",
        ),
        (
            {"IMAGINE_MONTHLY_BUDGET": "0.05", "IMAGINE_PRICE_PER_IMAGE": "0.05"},
            r"✗ This console has used an estimated \$0\.05 of its \$0\.05 monthly budget; "
            r"more on 1 \w+ at 00:00 UTC, in (\d+ days?|\d+ h( \d+ min)?|\d+ min)\.",
        ),
    ],
    ids=["user-daily", "workspace-daily", "monthly-budget"],
)
def test_over_a_limit_a_new_image_and_an_edit_are_refused_and_draw_nothing(
    tmp_path: Path, limit: dict[str, str], refusal: str
) -> None:
    result = run_cli(
        tmp_path,
        "console",
        stdin="/imagine a lighthouse\n/imagine a second lighthouse\nmake it red\n/threads\n",
        **limit,
        **OPERATOR,
    )
    assert result.returncode == 0, result.stderr
    assert len(made(result.stdout)) == 1
    refused = [line for line in result.stdout.splitlines() if line.startswith("✗ ")]
    assert len(refused) == 2, result.stdout  # the new image, then the edit
    for line in refused:
        assert re.fullmatch(refusal, line), line
    assert len(list((tmp_path / "out").iterdir())) == 1  # the first image only
    listed = [line for line in result.stdout.splitlines() if re.match(r"[ *] +\d+\. ", line)]
    assert len(listed) == 1  # a refused /imagine leaves no thread behind
    assert "Traceback" not in result.stdout + result.stderr

    ledger = run_cli(tmp_path, "usage", "--format", "json")
    assert [row["images"] for row in json.loads(ledger.stdout)] == [1]
