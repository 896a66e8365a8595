"""The admin's bar chart: a PNG that decodes, today's bar marked, the month's rest empty."""

from __future__ import annotations

import io
from datetime import date

from PIL import Image as PILImage

from bot.chart import BAR, HEIGHT, TODAY, WIDTH, usage_chart


async def test_the_chart_draws_the_whole_month_and_marks_today() -> None:
    chart = await usage_chart(
        [(date(2026, 12, 1), 4), (date(2026, 12, 2), 0), (date(2026, 12, 3), 8)], "t"
    )
    assert chart.mime == "image/png"
    picture = PILImage.open(io.BytesIO(chart.data)).convert("RGB")
    assert picture.size == (WIDTH, HEIGHT)
    colours = {picture.getpixel((x, HEIGHT - 40)) for x in range(WIDTH)}
    assert BAR in colours and TODAY in colours
    # 31 slots: the bars of the first three days fill only the first tenth of the axis
    right_half = {picture.getpixel((x, HEIGHT - 40)) for x in range(WIDTH // 2, WIDTH - 20)}
    assert BAR not in right_half and TODAY not in right_half


async def test_an_empty_month_still_draws() -> None:
    chart = await usage_chart([], "nothing yet")
    assert PILImage.open(io.BytesIO(chart.data)).size == (WIDTH, HEIGHT)
