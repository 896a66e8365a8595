"""`python -m bench`: run the benchmarks, print the table, optionally write BENCHMARKS.md.

Each benchmark is one module with `async def run(options) -> list[Row]`, run in its own
interpreter (`--child NAME`, rows as JSON on stdout) so none inherits another's heap. A
benchmark whose modules cannot be imported (an adapter or fake not there yet) or that fails
gives `pending` rows saying so.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import importlib
import json
import os
import shlex
import subprocess
import sys
import time
import traceback
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path

from bench.common import Options, Row, Verdict, machine

ROOT = Path(__file__).resolve().parent.parent
REPORT = ROOT / "BENCHMARKS.md"
START, END = "<!-- bench:results:start -->", "<!-- bench:results:end -->"

BENCHMARKS: dict[str, tuple[str, tuple[str, ...]]] = {
    # name: (module, figures it reports — shown as pending if the module cannot run)
    "platforms": (
        "bench.platforms",
        (
            "ack latency (Discord defer, Slack HTTP ack)",
            "makespan, loop lag, RSS of the real bot process",
        ),
    ),
    "load": ("bench.load", ("makespan, loop lag, RSS of the core alone",)),
    "e2e": ("bench.e2e", ("end-to-end of one job ÷ raw provider call",)),
    "gmi": ("bench.gmi_polling", ("GMI polls and detection delay",)),
    "store": ("bench.store_lookup", ("store: turn lookup by message id",)),
    "fairness": ("bench.fairness", ("fairness: a second user's start delay",)),
    "replicas": (
        "bench.replicas",
        (
            "makespan and provider concurrency, two processes on PostgreSQL",
            "kill -9 of one of two processes: takeover time",
        ),
    ),
    "claims": ("bench.claims", ("claim overhead per job, SQLite and PostgreSQL",)),
    "failover": ("bench.failover", ("one failover: extra latency once the breaker is open",)),
    "edits": ("bench.edit_bytes", ("edit bytes depth 8 ÷ depth 1", "depth-8 edit at 50 Mbit/s")),
}


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("--jobs", type=int, default=200, help="jobs in the load runs (200)")
    parser.add_argument("--latency", type=float, default=5.0, help="provider latency, s (5)")
    parser.add_argument("--image-mb", type=float, default=1.5, help="image size, MB (1.5)")
    parser.add_argument("--cap", type=int, default=16, help="IMAGINE_CONCURRENCY (16)")
    parser.add_argument(
        "--only",
        action="append",
        choices=list(BENCHMARKS),
        metavar="NAME",
        help=f"run only these (repeatable): {', '.join(BENCHMARKS)}",
    )
    parser.add_argument(
        "--write", action="store_true", help="write the table into BENCHMARKS.md (full runs only)"
    )
    parser.add_argument("--child", choices=list(BENCHMARKS), help=argparse.SUPPRESS)
    return parser


def _run_child(name: str, options: Options) -> list[Row]:
    """Run one benchmark in a fresh interpreter, so none inherits another's heap or threads."""
    _, figures = BENCHMARKS[name]
    command = [sys.executable, "-m", "bench.run", "--child", name, *_option_args(options)]
    done = subprocess.run(command, cwd=ROOT, stdout=subprocess.PIPE, text=True, check=False)
    try:
        return [_row(item) for item in json.loads(done.stdout.strip().splitlines()[-1])]
    except (ValueError, TypeError, KeyError, IndexError):
        reason = f"failed: exit status {done.returncode} (see the output above)"
        return [Row(figure, "—", "—", Verdict.PENDING, reason) for figure in figures]


async def _child(name: str, options: Options) -> list[Row]:
    module_name, figures = BENCHMARKS[name]
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        reason = f"not run: cannot import {exc.name or exc}"
        return [Row(figure, "—", "—", Verdict.PENDING, reason) for figure in figures]
    try:
        rows: list[Row] = await module.run(options)
    except Exception as exc:
        traceback.print_exc()
        first_line = str(exc).splitlines()[0] if str(exc) else ""
        reason = f"failed: {type(exc).__name__}: {first_line}"
        return [Row(figure, "—", "—", Verdict.PENDING, reason) for figure in figures]
    return rows


def _option_args(options: Options) -> list[str]:
    return [
        f"--jobs={options.jobs}",
        f"--latency={options.latency}",
        f"--image-mb={options.image_mb}",
        f"--cap={options.cap}",
    ]


def _row(item: dict[str, str]) -> Row:
    return Row(
        item["figure"], item["goal"], item["measured"], Verdict(item["verdict"]), item["note"]
    )


def table(rows: Sequence[Row]) -> str:
    lines = ["| figure | goal | measured | verdict | how / why |", "|---|---|---|---|---|"]
    for row in rows:
        cells = (row.figure, row.goal, row.measured, row.verdict.value, row.note)
        lines.append("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")
    return "\n".join(lines)


def render(rows: Sequence[Row], command: str, seconds: float, load: float) -> str:
    date = datetime.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z")
    return "\n".join(
        [
            START,
            f"- **Machine:** {machine()}",
            f"- **Date:** {date}; load average before the run {load:.2f}",
            f"- **Command:** `{command}` (took {seconds:.0f} s)",
            "",
            table(rows),
            END,
        ]
    )


def write_report(block: str) -> None:
    text = REPORT.read_text() if REPORT.exists() else f"# Benchmarks\n\n{START}\n{END}\n"
    if START not in text or END not in text:
        text = text.rstrip() + f"\n\n{START}\n{END}\n"
    head, rest = text.split(START, 1)
    _, tail = rest.split(END, 1)
    REPORT.write_text(head + block + tail)


def _run_all(args: argparse.Namespace, options: Options) -> int:
    names = args.only or list(BENCHMARKS)
    load = os.getloadavg()[0]
    if load > 0.5:
        print(f"warning: load average {load:.2f}; other work skews the timings", file=sys.stderr)
    started = time.monotonic()
    rows: list[Row] = []
    for name in names:
        print(f"[bench] {name} …", file=sys.stderr, flush=True)
        begun = time.monotonic()
        rows += _run_child(name, options)
        print(f"[bench] {name} done in {time.monotonic() - begun:.0f} s", file=sys.stderr)
    seconds = time.monotonic() - started
    python = Path(sys.executable)
    if python.is_relative_to(ROOT):
        python = python.relative_to(ROOT)
    command = f"{python} -m bench " + shlex.join(sys.argv[1:])
    block = render(rows, command.strip(), seconds, load)
    print(block)
    if args.write:
        write_report(block)
        print(f"[bench] wrote {REPORT.relative_to(ROOT)}", file=sys.stderr)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    options = Options(jobs=args.jobs, latency=args.latency, image_mb=args.image_mb, cap=args.cap)
    if args.child:
        rows = asyncio.run(_child(args.child, options))
        print(json.dumps([asdict(row) for row in rows]))
        return 0
    if args.write and args.only:
        print("--write records a full run: leave out --only", file=sys.stderr)
        return 2
    return _run_all(args, options)


if __name__ == "__main__":
    raise SystemExit(main())
