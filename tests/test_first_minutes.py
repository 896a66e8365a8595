"""The first five minutes, as a new user meets them: through the real CLI, never a traceback.

A folder that cannot be written is made so with a regular file in its place (or under
`/dev/null`), which stops root too: the suite runs as root in CI, where chmod does not.
"""

from __future__ import annotations

import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from bot.config import _ALIASES
from tests.conftest import bot_env, run_cli

REPO = Path(__file__).resolve().parent.parent
README = REPO / "README.md"


def one_line(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 2, (result.stdout, result.stderr)
    assert "Traceback" not in result.stdout + result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    return lines[0]


# --- database ------------------------------------------------------------------------------


@pytest.mark.parametrize("command", ["console", "run"])
def test_database_folder_that_cannot_be_created_is_one_line(tmp_path: Path, command: str) -> None:
    (tmp_path / "taken").write_text("a file where the folder should be")
    result = run_cli(
        tmp_path,
        command,
        stdin="/quit\n",
        DATABASE_URL=f"sqlite:///{tmp_path}/taken/state/bot.db",
        DISCORD_TOKEN="not-used-the-store-fails-first",
        DISCORD_API_BASE="http://127.0.0.1:9/api/v10",
    )
    line = one_line(result)
    assert f"{tmp_path}/taken/state" in line
    assert "DATABASE_URL" in line


def test_database_under_a_file_is_one_line(tmp_path: Path) -> None:
    result = run_cli(tmp_path, "console", DATABASE_URL="sqlite:////dev/null/x/bot.db")
    line = one_line(result)
    assert "/dev/null/x" in line and "Not a directory" in line


def test_database_folder_that_is_a_file_is_one_line(tmp_path: Path) -> None:
    (tmp_path / "data").write_text("")
    result = run_cli(tmp_path, "console", DATABASE_URL="sqlite:///data/bot.db")
    line = one_line(result)
    assert f"{tmp_path}/data" in line and "not a folder" in line


def test_database_path_that_is_a_folder_is_one_line(tmp_path: Path) -> None:
    (tmp_path / "state" / "bot.db").mkdir(parents=True)
    result = run_cli(tmp_path, "console")
    line = one_line(result)
    assert f"{tmp_path}/state/bot.db" in line and "is a folder" in line


def test_unreachable_postgresql_is_one_line(tmp_path: Path) -> None:
    import socket

    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    result = run_cli(
        tmp_path, "console", DATABASE_URL=f"postgresql://someone:hunter2@127.0.0.1:{port}/imagine"
    )
    line = one_line(result)
    assert f"PostgreSQL at 127.0.0.1:{port}" in line
    assert "DATABASE_URL" in line
    assert "hunter2" not in result.stderr + result.stdout


def test_postgresql_login_refused_is_one_line(tmp_path: Path, postgres_server_url: str) -> None:
    from sqlalchemy.engine import make_url

    url = make_url(postgres_server_url).set(username="nobody_here", password="wrong-secret")
    result = run_cli(tmp_path, "console", DATABASE_URL=url.render_as_string(hide_password=False))
    line = one_line(result)
    assert "PostgreSQL at" in line and "nobody_here" in line
    assert "wrong-secret" not in result.stderr + result.stdout


# --- output folder -------------------------------------------------------------------------


def test_output_folder_that_cannot_be_written_is_one_line(tmp_path: Path) -> None:
    result = run_cli(
        tmp_path, "console", stdin="/imagine a fox\n", IMAGINE_OUTPUT_DIR="/dev/null/out"
    )
    line = one_line(result)
    assert "/dev/null/out" in line and "IMAGINE_OUTPUT_DIR" in line


def test_output_folder_that_is_a_file_is_one_line(tmp_path: Path) -> None:
    (tmp_path / "pictures").write_text("")
    result = run_cli(tmp_path, "console", "--output-dir", "pictures", stdin="/imagine a fox\n")
    line = one_line(result)
    assert f"{tmp_path}/pictures" in line and "not a folder" in line


def test_output_folder_lost_mid_session_names_the_path(tmp_path: Path) -> None:
    out = tmp_path / "out"
    process = subprocess.Popen(
        [sys.executable, "-m", "bot", "console"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=bot_env(tmp_path),
        cwd=tmp_path,
    )
    assert process.stdin is not None and process.stdout is not None
    try:
        process.stdin.write("/imagine a lighthouse\n")
        process.stdin.flush()
        for _ in range(50):
            if process.stdout.readline().startswith("✓"):
                break
        for made in out.iterdir():
            made.unlink()
        out.rmdir()
        out.write_text("the folder is gone")  # a file in its place: fails for root too
        process.stdin.write("make it red\n/quit\n")
        process.stdin.flush()
        stdout, stderr = process.communicate(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == 0, stderr
    failure = [line for line in stdout.splitlines() if line.startswith("✗")]
    assert len(failure) == 1, stdout
    assert str(out) in failure[0] and "IMAGINE_OUTPUT_DIR" in failure[0]
    assert "try again" not in failure[0]
    assert "Traceback" not in stdout + stderr


# --- version -------------------------------------------------------------------------------


def test_version_is_the_installed_distribution(tmp_path: Path) -> None:
    from importlib.metadata import version

    result = run_cli(tmp_path, "--version")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == f"imagine-bot {version('imagine-bot')}"


# --- README and .env.example ---------------------------------------------------------------

NEEDS_THE_VENV = {"imagine-bot", "pip", "pip3", "pytest", "ruff", "mypy", "python", "python3"}


def readme_commands() -> list[str]:
    """Every shell command in README.md's code blocks (console sessions: the first line)."""
    commands: list[str] = []
    for lang, body in re.findall(r"^```(\w*)\n(.*?)^```", README.read_text(), re.S | re.M):
        if lang not in ("", "sh", "bash", "shell", "console") or re.search("[─│┌└▲▼]", body):
            continue  # not shell (dotenv, YAML, a diagram)
        for line in body.splitlines():
            line = re.sub(r"(^|\s)#.*", "", line).strip()
            if not line or line.startswith((">", "✓", "✗", "…", "http")):
                continue
            commands += [part.strip() for part in re.split(r"&&|\|\||;|\|", line)]
    return [command for command in commands if command]


def program(command: str) -> tuple[str, list[str]]:
    try:
        words = shlex.split(command)
    except ValueError:
        words = command.split()
    while words and (words[0] in ("export", "sudo") or re.match(r"^\w+=", words[0])):
        words.pop(0)
    return (words[0], words[1:]) if words else ("", [])


def test_readme_commands_run_as_written_after_the_first_one() -> None:
    """The first command installs into .venv without activating it: every later command that
    needs the venv calls it by its path (`.venv/bin/…`), and every imagine-bot subcommand
    shown exists."""
    commands = readme_commands()
    assert commands[0].startswith("python3 -m venv .venv"), commands[0]
    bare, subcommands = [], set()
    for command in commands:
        name, args = program(command)
        if name in ("python3", "python") and args[:2] == ["-m", "venv"]:
            continue
        if name in NEEDS_THE_VENV:
            bare.append(command)
        if name == ".venv/bin/imagine-bot" and args and not args[0].startswith("-"):
            subcommands.add(args[0])
        if name == ".venv/bin/python" and args[:2] == ["-m", "bot"] and len(args) > 2:
            subcommands.add(args[2])
    assert not bare, f"README commands that fail without an activated venv: {bare}"
    assert {"console", "run"} <= subcommands
    for sub in sorted(subcommands):
        shown = subprocess.run(
            [sys.executable, "-m", "bot", sub, "--help"], capture_output=True, text=True
        )
        assert shown.returncode == 0, f"README shows `imagine-bot {sub}`: {shown.stderr}"


def test_readme_prose_shows_commands_to_type_with_their_venv_path() -> None:
    spans = re.findall(r"`([^`\n]+)`", README.read_text())
    bare = [
        span
        for span in spans
        if span.startswith(("python -m", "pip ", "imagine-bot --", "imagine-bot <"))
    ]
    assert not bare, f"README shows commands that fail without an activated venv: {bare}"


def env_file(path: Path) -> dict[str, str]:
    """What `docker run --env-file` sets: KEY=VALUE lines as they are, comments skipped."""
    found: dict[str, str] = {}
    for line in path.read_text().splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            key, _, value = line.partition("=")
            found[key.strip()] = value
    return found


def test_env_file_from_the_example_keeps_the_containers_database(tmp_path: Path) -> None:
    example = env_file(REPO / ".env.example")
    assert "DATABASE_URL" not in example  # the image's sqlite:////data/… wins
    image_default = f"sqlite:///{tmp_path}/volume/imagine-bot.db"  # stands in for /data
    settings = {**example, "DATABASE_URL": image_default, "IMAGINE_OUTPUT_DIR": str(tmp_path)}
    result = run_cli(tmp_path, "console", stdin="/quit\n", **settings)
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "volume" / "imagine-bot.db").exists()
    assert not (tmp_path / "data").exists()


def test_dockerfile_keeps_relative_sqlite_paths_in_the_volume() -> None:
    dockerfile = (REPO / "Dockerfile").read_text()
    assert "DATABASE_URL=sqlite:////data/imagine-bot.db" in dockerfile
    assert re.search(r"^WORKDIR /app$", dockerfile, re.M)
    assert "ln -s /data /app/data" in dockerfile
    assert "--stop-timeout" in dockerfile


def test_every_setting_is_documented_in_the_readme_and_the_example() -> None:
    """A variable the bot reads but neither file mentions is one nobody can find."""
    readme = (REPO / "README.md").read_text()
    example = (REPO / ".env.example").read_text()
    names = {alias for alias in _ALIASES.values() if alias.isupper()} | {"GEMINI_API_KEY"}
    assert {n for n in names if n not in readme} == set()
    assert {n for n in names if n not in example} == set()
