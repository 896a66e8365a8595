"""`imagine-bot usage`: the ledger for operators, as a table, CSV or JSON.

Pure functions: the command reads `Store.usage_lines` and hands the lines here. Dates are
calendar days in `IMAGINE_QUOTA_TZ`, the zone in which quotas count, so the numbers match
what `/usage` and the limits say; `--until` includes its whole day.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Sequence
from datetime import date, datetime, timedelta
from zoneinfo import ZoneInfo

from bot.policy import Period, month_of
from bot.usage import Totals, UsageLine

COLUMNS = ("platform", "workspace", "user", "images", "cost_usd")
FORMATS = ("table", "csv", "json")


class BadDate(ValueError):
    """An option that is not a calendar date; the message names it (one line)."""


def parse_day(option: str, value: str) -> date:
    """`2024-03-01` → that date; anything else is `BadDate` naming `option`."""
    try:
        return datetime.strptime(value, "%Y-%m-%d").date()
    except ValueError:
        raise BadDate(f"{option} must be a date like 2024-03-01, not {value!r}") from None


def _midnight(day: date, tz: ZoneInfo) -> float:
    return datetime(day.year, day.month, day.day, tzinfo=tz).timestamp()


def usage_period(since: date | None, until: date | None, tz: ZoneInfo, at: float) -> Period:
    """[since's midnight, the midnight after until) in `tz`.

    Neither: this month. Only `since`: up to the end of today. Only `until`: from the first
    of its month. `BadDate` when `since` is after `until`."""
    if since is None and until is None:
        return month_of(at, tz)
    today = datetime.fromtimestamp(at, tz).date()
    last = until or max(today, since or today)
    first = since or last.replace(day=1)
    if first > last:
        raise BadDate(f"--since {first} is after --until {last}")
    return Period(_midnight(first, tz), _midnight(last + timedelta(days=1), tz))


def period_text(period: Period, tz: ZoneInfo) -> str:
    """`2024-03-01 to 2024-03-31`: the days the period covers, both included."""
    first = datetime.fromtimestamp(period.start, tz).date()
    last = datetime.fromtimestamp(period.end, tz).date() - timedelta(days=1)
    return f"{first} to {last}"


def ordered(lines: Sequence[UsageLine]) -> list[UsageLine]:
    """Grouped by workspace, its biggest users first, so a table reads workspace by workspace."""
    return sorted(lines, key=lambda x: (x.platform, x.workspace, -x.images, -x.cost_usd, x.user))


def as_json(lines: Sequence[UsageLine]) -> str:
    """A list with one object per workspace and user; US$ to 4 decimals."""
    return json.dumps(
        [
            {
                "platform": line.platform,
                "workspace": line.workspace,
                "user": line.user,
                "images": line.images,
                "cost_usd": round(line.cost_usd, 4),
            }
            for line in ordered(lines)
        ],
        indent=2,
    )


def as_csv(lines: Sequence[UsageLine]) -> str:
    """A header row and one row per workspace and user; US$ to 4 decimals."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(COLUMNS)
    for line in ordered(lines):
        writer.writerow(
            [line.platform, line.workspace, line.user, line.images, f"{line.cost_usd:.4f}"]
        )
    return out.getvalue().rstrip("\n")


def as_table(lines: Sequence[UsageLine], period: Period, tz: ZoneInfo) -> str:
    """Aligned columns (US$ to cents) under a line naming the period, and a total row."""
    where = f"{period_text(period, tz)} (days begin at midnight {tz.key})"
    if not lines:
        return f"No images in the ledger from {where}."
    rows = [list(COLUMNS)]
    rows += [
        [line.platform, line.workspace, line.user, str(line.images), f"{line.cost_usd:.2f}"]
        for line in ordered(lines)
    ]
    total = Totals.of(lines)
    rows.append(["total", "", "", str(total.images), f"{total.cost_usd:.2f}"])
    widths = [max(len(row[i]) for row in rows) for i in range(len(COLUMNS))]

    def fmt(row: list[str]) -> str:
        cells = [
            cell.rjust(width) if i >= 3 else cell.ljust(width)
            for i, (cell, width) in enumerate(zip(row, widths, strict=True))
        ]
        return "  ".join(cells).rstrip()

    body = [fmt(row) for row in rows]
    rule = "-" * max(len(row) for row in body)
    return "\n".join([f"Images and estimated US$ from {where}:", *body[:-1], rule, body[-1]])


def render(fmt: str, lines: Sequence[UsageLine], period: Period, tz: ZoneInfo) -> str:
    if fmt == "json":
        return as_json(lines)
    if fmt == "csv":
        return as_csv(lines)
    return as_table(lines, period, tz)
