"""A small bar chart of images per day, for an admin's `/usage` (people would rather look
than read). Drawn with Pillow off the event loop; no font files needed."""

from __future__ import annotations

import asyncio
import io
from collections.abc import Sequence
from datetime import date, timedelta

from PIL import Image as PILImage
from PIL import ImageDraw, ImageFont

from bot.models import Image

WIDTH, HEIGHT = 640, 240
MARGIN_LEFT, MARGIN_RIGHT, MARGIN_TOP, MARGIN_BOTTOM = 44, 12, 30, 28
BACKGROUND = (255, 255, 255)
BAR = (88, 101, 242)
TODAY = (235, 69, 158)
AXIS = (120, 120, 120)
TEXT = (40, 40, 40)


def _whole_month(per_day: Sequence[tuple[date, int]]) -> list[tuple[date, int | None]]:
    """The month's days so far, then its days still to come (None: drawn empty), so bars
    keep one width all month."""
    days: list[tuple[date, int | None]] = list(per_day)
    if not days:
        return days
    last = days[-1][0]
    following = last + timedelta(days=1)
    while following.month == last.month:
        days.append((following, None))
        following += timedelta(days=1)
    return days


def draw_usage_chart(per_day: Sequence[tuple[date, int]], title: str) -> bytes:
    """PNG bytes: one bar per day of the month, today's (the last given) in another
    colour, days to come empty, the largest count on the axis, every fifth day labelled."""
    today = len(per_day) - 1
    month = _whole_month(per_day)
    image = PILImage.new("RGB", (WIDTH, HEIGHT), BACKGROUND)
    draw = ImageDraw.Draw(image)
    font = ImageFont.load_default()
    draw.text((MARGIN_LEFT, 8), title, fill=TEXT, font=font)
    left, top = MARGIN_LEFT, MARGIN_TOP
    right, bottom = WIDTH - MARGIN_RIGHT, HEIGHT - MARGIN_BOTTOM
    draw.line([(left, top), (left, bottom), (right, bottom)], fill=AXIS)
    peak = max((count or 0 for _, count in month), default=0)
    draw.text((4, top - 4), str(peak), fill=TEXT, font=font)
    draw.text((4, bottom - 10), "0", fill=TEXT, font=font)
    if month:
        slot = (right - left) / len(month)
        for index, (day, count) in enumerate(month):
            x0 = left + index * slot + max(1.0, slot * 0.15)
            x1 = left + (index + 1) * slot - max(1.0, slot * 0.15)
            if count and peak:
                y0 = bottom - (bottom - top) * count / peak
                colour = TODAY if index == today else BAR
                draw.rectangle([x0, y0, x1, bottom - 1], fill=colour)
            if day.day == 1 or day.day % 5 == 0:
                draw.text((x0, bottom + 6), str(day.day), fill=TEXT, font=font)
    out = io.BytesIO()
    image.save(out, "PNG", optimize=True)
    return out.getvalue()


async def usage_chart(per_day: Sequence[tuple[date, int]], title: str) -> Image:
    """`draw_usage_chart` on a worker thread, as an `Image` ready to attach."""
    data = await asyncio.to_thread(draw_usage_chart, list(per_day), title)
    return await Image.from_bytes(data, "image/png")
