"""The console at a real terminal (a pty): a prompt, line editing and history, and Ctrl+C."""

from __future__ import annotations

import os
import pty
import select
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import bot_env, run_cli
from tests.test_console import saved_paths

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="needs a pty")


class Terminal:
    """`python -m bot console` with a pty for its stdin, stdout and stderr."""

    def __init__(self, tmp_path: Path, **settings: str) -> None:
        self.master, slave = pty.openpty()
        self.process = subprocess.Popen(
            [sys.executable, "-m", "bot", "console"],
            stdin=slave,
            stdout=slave,
            stderr=slave,
            env=bot_env(tmp_path, TERM="xterm", **settings),
            cwd=tmp_path,
        )
        os.close(slave)
        self.screen = ""

    def type(self, keys: str) -> None:
        os.write(self.master, keys.encode())

    def wait_for(self, text: str, timeout: float = 20) -> str:
        end = time.monotonic() + timeout
        while text not in self.screen and time.monotonic() < end:
            self._read(0.1)
        assert text in self.screen, f"never saw {text!r} in:\n{self.screen}"
        return self.screen

    def _read(self, wait: float) -> None:
        ready, _, _ = select.select([self.master], [], [], wait)
        if ready:
            try:
                self.screen += os.read(self.master, 4096).decode(errors="replace")
            except OSError:  # the other end closed
                time.sleep(wait)

    def finish(self, timeout: float = 20) -> int:
        code = self.process.wait(timeout)
        self._read(0.2)
        os.close(self.master)
        return code

    def lines(self) -> list[str]:
        return [line.strip() for line in self.screen.replace("\r", "").split("\n")]


def test_line_editing_history_and_the_prompt_on_its_own_line(tmp_path: Path) -> None:
    term = Terminal(tmp_path)
    term.wait_for("> ")
    # a typo fixed with the arrow keys: "a red fx" → ← ← "o" …, then Enter
    term.type("/imagine a red fx\x1b[D")
    term.type("o\r")
    term.wait_for("✓ ")
    term.wait_for("> ", timeout=5)
    term.type("/threads\r")
    term.wait_for("/thread N continues one")
    term.type("\x1b[A\x1b[A\r")  # ↑↑ recalls the /imagine line from history
    term.wait_for("✓ ", timeout=20)
    while len(saved_paths("\n".join(term.lines()))) < 2:
        term._read(0.1)
    term.type("/threads\r")
    term.wait_for("/thread N continues one")
    term.type("/quit\r")
    assert term.finish() == 0
    lines = term.lines()
    listed = [line for line in lines if "  a red f" in line and ". 20" in line]
    # the edited line, then the same line from history: two threads titled "a red fox"
    assert [line.rsplit("  ", 1)[1] for line in listed[-2:]] == ["a red fox", "a red fox"]
    for line in lines:  # every result starts its own line: never "> ✓ …"
        assert not line.startswith(">") or ("✓" not in line and "…" not in line), line
    assert len(saved_paths("\n".join(lines))) == 2


def test_ctrl_c_finishes_the_image_then_a_second_leaves_and_it_resumes(tmp_path: Path) -> None:
    term = Terminal(tmp_path, IMAGINE_DEMO_LATENCY="30", IMAGINE_SHUTDOWN_GRACE="60")
    term.wait_for("> ")
    term.type("/imagine a slow sunrise\r")
    term.wait_for("generating")
    term.process.send_signal(signal.SIGINT)
    term.wait_for("finishing the current image… (Ctrl+C again to leave now)")
    started = time.monotonic()
    term.process.send_signal(signal.SIGINT)
    assert term.finish() == 130
    assert time.monotonic() - started < 10  # at once, not after the 60 s grace
    assert "the unfinished image resumes the next time you start" in term.screen
    assert "Traceback" not in term.screen
    assert "finishing the current image… (Ctrl+C again to leave now)" in term.lines()
    assert not list((tmp_path / "out").iterdir())

    again = run_cli(tmp_path, "console")
    assert again.returncode == 0, again.stderr
    assert "resuming 1 unfinished image(s) from last time" in again.stdout
    assert len(saved_paths(again.stdout)) == 1


def test_one_ctrl_c_lets_the_image_finish(tmp_path: Path) -> None:
    term = Terminal(tmp_path, IMAGINE_DEMO_LATENCY="1.5")
    term.wait_for("> ")
    term.type("/imagine a quick sunrise\r")
    term.wait_for("generating")
    term.process.send_signal(signal.SIGINT)
    term.wait_for("Ctrl+C again to leave now")
    assert term.finish() == 0
    assert len(saved_paths("\n".join(term.lines()))) == 1


def test_ctrl_c_at_an_idle_prompt_leaves_at_once(tmp_path: Path) -> None:
    term = Terminal(tmp_path)
    term.wait_for("> ")
    term.process.send_signal(signal.SIGINT)
    assert term.finish() == 0
    assert "finishing the current image" not in term.screen
