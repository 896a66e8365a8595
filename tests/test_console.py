"""The console as a user runs it: `python -m bot console`, lines on stdin, PNGs on disk."""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

from PIL import Image as PILImage

from tests.conftest import bot_env, run_cli


def saved_paths(stdout: str) -> list[Path]:
    return [Path(line.split()[1]) for line in stdout.splitlines() if line.startswith("✓ ")]


def test_scripted_session_then_a_second_run_continues(tmp_path: Path) -> None:
    first = run_cli(
        tmp_path,
        "console",
        stdin="/imagine a panda making latte art --ar 16:9\nmake the cup blue\n/quit\n",
    )
    assert first.returncode == 0, first.stderr
    made = saved_paths(first.stdout)
    assert len(made) == 2
    for path in made:
        with PILImage.open(path) as image:
            assert image.format == "PNG"
            assert image.size == (1344, 768)  # 16:9, kept by the edit
    assert made[0].read_bytes() != made[1].read_bytes()
    assert (tmp_path / "state" / "bot.db").exists()  # the folder was created

    second = run_cli(
        tmp_path,
        "console",
        stdin="now in watercolor\n/threads\n/new\na red fox\n",
        IMAGINE_DEFAULT_ASPECT_RATIO="3:4",
    )
    assert second.returncode == 0, second.stderr
    assert "continuing thread “a panda making latte art”" in second.stdout
    edited, fox = saved_paths(second.stdout)
    assert edited.name.split("-")[0] == made[0].name.split("-")[0]  # same thread
    with PILImage.open(edited) as image:
        assert image.size == (1344, 768)
    with PILImage.open(fox) as image:
        assert image.size == (864, 1184)  # IMAGINE_DEFAULT_ASPECT_RATIO=3:4
    assert "a panda making latte art" in second.stdout.split("/thread N")[0]


def test_pick_an_old_thread_and_bad_input_gets_a_clear_line(tmp_path: Path) -> None:
    run_cli(tmp_path, "console", stdin="/imagine first thread\n/imagine second thread\n")
    result = run_cli(
        tmp_path,
        "console",
        stdin="/threads\n/thread 2\nadd a moon\n/imagine   \n/imagine cat --ar 7:5\n/bogus\n",
    )
    assert result.returncode == 0, result.stderr
    assert "continuing “first thread”: type an edit" in result.stdout
    assert len(saved_paths(result.stdout)) == 1
    assert "✗ Tell me what to draw: the prompt is empty." in result.stdout
    assert "✗ “7:5” isn't a supported aspect ratio." in result.stdout
    assert "unknown command /bogus; /help lists them" in result.stdout
    assert "Traceback" not in result.stdout + result.stderr


def test_invalid_setting_stops_with_one_line_naming_it(tmp_path: Path) -> None:
    result = run_cli(tmp_path, "console", IMAGINE_PROVIDER="midjourney")
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "IMAGINE_PROVIDER" in lines[0]


def test_run_without_platform_credentials_says_what_is_missing(tmp_path: Path) -> None:
    result = run_cli(tmp_path, "run")
    assert result.returncode == 2
    assert "DISCORD_TOKEN" in result.stderr and "SLACK_BOT_TOKEN" in result.stderr


def test_sigterm_exits_cleanly_and_the_next_start_finishes_the_job(tmp_path: Path) -> None:
    """SIGTERM mid-job: exit 0 after the grace period; the next run delivers the image."""
    process = subprocess.Popen(
        [sys.executable, "-m", "bot", "console"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=bot_env(tmp_path, IMAGINE_DEMO_LATENCY="30", IMAGINE_SHUTDOWN_GRACE="0.2"),
        cwd=tmp_path,
    )
    assert process.stdin is not None and process.stdout is not None
    process.stdin.write("/imagine a slow sunrise\n")
    process.stdin.flush()
    for _ in range(50):  # wait until the job is running
        if "generating" in process.stdout.readline():
            break
    process.send_signal(signal.SIGTERM)
    _, stderr = process.communicate(timeout=20)
    assert process.returncode == 0, stderr
    assert "Traceback" not in stderr
    assert not list((tmp_path / "out").iterdir())  # checked at start, but no image yet

    again = run_cli(tmp_path, "console")
    assert again.returncode == 0, again.stderr
    assert "resuming 1 unfinished image(s) from last time" in again.stdout
    assert len(saved_paths(again.stdout)) == 1
