"""An offline provider: draws a real PNG from the prompt, so the bot works with no key.

It is the default on a fresh machine. A new image is a gradient whose colours come from the
prompt with the prompt written on it, at the pixel size of the requested aspect ratio. An
edit tints the picture towards a colour named in the instruction ("make the cup blue") or
one derived from it, so every turn visibly builds on the last, and shows the instruction large
on an opaque band at the bottom, with the first prompt and the earlier edits listed small at
the top.

An edit never draws over the previous image (its captions would pile up and smear): each
turn is redrawn from a clean picture, the first prompt's gradient or an image with no demo
captions (an upload, another provider's answer), plus the latest edits' tints. The recipe
for that travels in the turn's `provider_state`, so a thread longer than the history cap
redraws the same way. All drawing runs in a worker thread, deterministically, and an input
image whose header declares more than `MAX_IMAGE_PIXELS` is refused before it is decoded.
"""

from __future__ import annotations

import asyncio
import hashlib
import io
from dataclasses import dataclass
from typing import Any

from PIL import Image as PILImage
from PIL import ImageDraw, ImageFont, ImageOps

from bot.errors import MAX_IMAGE_PIXELS, ImageTooManyPixels
from bot.models import ASPECT_SIZES, DEFAULT_ASPECT_RATIO, Image, ImageRequest, ImageResult, Usage
from bot.providers.base import Capabilities, ProviderCall

COLOUR_WORDS: dict[str, tuple[int, int, int]] = {
    "red": (220, 50, 47),
    "orange": (243, 146, 51),
    "yellow": (240, 210, 60),
    "green": (80, 180, 90),
    "blue": (45, 110, 220),
    "purple": (140, 80, 200),
    "pink": (235, 120, 180),
    "black": (20, 20, 20),
    "white": (245, 245, 245),
    "gray": (128, 128, 128),
    "grey": (128, 128, 128),
    "brown": (130, 85, 50),
    "gold": (212, 175, 55),
    "watercolor": (170, 200, 230),
    "sepia": (160, 120, 80),
}

TOKENS_PER_IMAGE = 1290
TINT = 0.35
"""How far each edit moves the picture towards its colour."""
MAX_LISTED_EDITS = 4
"""Earlier edits listed by name in the top band; older ones are counted."""
MAX_STEPS = MAX_LISTED_EDITS + 1
"""Edits a thread's recipe remembers: the latest and the listed ones."""
TINTED_STEPS = 3
"""Edits whose tint is replayed on the clean picture, so it never fades to a flat colour."""
BAND_COLOUR = (24, 24, 28)
STATE_VERSION = 1


def _colour(seed: str, salt: str) -> tuple[int, int, int]:
    digest = hashlib.sha256(f"{salt}:{seed}".encode()).digest()
    return (60 + digest[0] % 180, 60 + digest[1] % 180, 60 + digest[2] % 180)


def _tint_for(instruction: str) -> tuple[int, int, int]:
    words = instruction.lower().replace(",", " ").split()
    for word in words:
        if word in COLOUR_WORDS:
            return COLOUR_WORDS[word]
    return _colour(instruction, "tint")


def _font(size: int) -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    try:
        return ImageFont.load_default(size=size)
    except (TypeError, OSError):  # Pillow without FreeType
        return ImageFont.load_default()


Font = ImageFont.ImageFont | ImageFont.FreeTypeFont


def _fit_line(text: str, font: Font, max_width: float) -> str:
    """`text` cut with an ellipsis so it fits on one line of `max_width` pixels."""
    if font.getlength(text) <= max_width:
        return text
    while text and font.getlength(text + "…") > max_width:
        text = text[:-1]
    return text.rstrip() + "…"


def _wrap(text: str, font: Font, max_width: float, max_lines: int) -> list[str]:
    """Wrap on measured widths; the last line ends in an ellipsis when text is left over."""
    lines: list[str] = []
    words = text.split()
    while words and len(lines) < max_lines:
        line = words.pop(0)
        while words and font.getlength(f"{line} {words[0]}") <= max_width:
            line = f"{line} {words.pop(0)}"
        lines.append(_fit_line(line, font, max_width))
    if words and lines:
        lines[-1] = _fit_line(f"{lines[-1]} {' '.join(words)}", font, max_width)
        if not lines[-1].endswith("…"):
            lines[-1] = _fit_line(lines[-1] + "…", font, font.getlength(lines[-1]))
    return lines


def _title_band(canvas: PILImage.Image, title: str | None, earlier: list[str], total: int) -> None:
    """The top band: the thread's first prompt, then the earlier edits as a small numbered
    list (the most recent few; older ones counted). Drawn once, on a clean picture."""
    width, _ = canvas.size
    pad = max(12, width // 64)
    big, small = _font(max(18, width // 34)), _font(max(16, width // 48))
    big_step, small_step = max(22, width // 28), max(20, width // 38)
    rows: list[tuple[str, Font, int]] = []
    if title:
        rows += [(line, big, big_step) for line in _wrap(title, big, width - 2 * pad, 2)]
    shown = earlier[-MAX_LISTED_EDITS:]
    first = total - len(shown)  # the number of the first edit listed, minus one
    if first > 0:
        rows.append((f"… {first} earlier edit{'s' if first != 1 else ''}", small, small_step))
    for i, edit in enumerate(shown, start=first + 1):
        rows.append((_fit_line(f"{i}. {edit}", small, width - 2 * pad), small, small_step))
    if not rows:
        return
    height = sum(row_height for _, _, row_height in rows) + 2 * pad
    overlay = PILImage.new("RGBA", canvas.size, (0, 0, 0, 0))
    draw = ImageDraw.Draw(overlay)
    draw.rectangle((0, 0, width, height), fill=(0, 0, 0, 150))
    y = pad
    for text, font, row_height in rows:
        colour = (255, 255, 255, 255) if font is big else (225, 225, 225, 255)
        draw.text((pad, y), text, fill=colour, font=font)
        y += row_height
    canvas.alpha_composite(overlay)


def _instruction_band(canvas: PILImage.Image, instruction: str) -> None:
    """The bottom band: the latest instruction, large, on an opaque band, so it reads the
    same whatever the picture (or any earlier caption) was."""
    width, height = canvas.size
    pad = max(12, width // 64)
    font = _font(max(20, width // 26))
    step = max(26, width // 22)
    lines = _wrap(f"» {instruction}", font, width - 2 * pad, 3)
    if not lines:
        return
    top = height - (step * len(lines) + 2 * pad)
    draw = ImageDraw.Draw(canvas)
    draw.rectangle((0, top, width, height), fill=(*BAND_COLOUR, 255))
    for i, line in enumerate(lines):
        draw.text((pad, top + pad + i * step), line, fill=(255, 255, 255, 255), font=font)


def _new_canvas(prompt: str, size: tuple[int, int]) -> PILImage.Image:
    start, end = _colour(prompt, "a"), _colour(prompt, "b")
    gradient = PILImage.linear_gradient("L").resize(size)
    canvas = ImageOps.colorize(gradient, black=start, white=end).convert("RGBA")
    draw = ImageDraw.Draw(canvas)
    digest = hashlib.sha256(prompt.encode()).digest()
    for i in range(6):  # a few shapes, placed by the prompt, so different prompts differ
        x = digest[i * 4] / 255 * size[0]
        y = digest[i * 4 + 1] / 255 * size[1]
        r = 30 + digest[i * 4 + 2] / 255 * min(size) / 4
        draw.ellipse((x - r, y - r, x + r, y + r), fill=(*_colour(prompt, str(i)), 200))
    return canvas


def _open_checked(data: bytes) -> PILImage.Image:
    """Open an input image, refusing a decompression bomb from its header alone."""
    try:
        image = PILImage.open(io.BytesIO(data))
    except PILImage.DecompressionBombError as exc:
        raise ImageTooManyPixels(detail=f"demo input: {exc}") from None
    width, height = image.size
    if width * height > MAX_IMAGE_PIXELS:
        image.close()
        raise ImageTooManyPixels(width, height, detail=f"demo input {width}×{height}")
    return image


@dataclass(frozen=True, slots=True)
class _Recipe:
    """How to draw a thread's image from scratch: a clean picture to start from (the first
    prompt's gradient, or an image that carries no demo captions), then every edit's tint.

    `base` is the sha of that clean image, None when the picture is the title's gradient.
    `steps` are the latest edits (the newest last, at most `MAX_STEPS`), `total` how many
    there were in all."""

    title: str | None
    base: str | None
    steps: tuple[str, ...]
    total: int

    def state(self) -> dict[str, Any]:
        return {
            "demo": STATE_VERSION,
            "title": self.title,
            "base": self.base,
            "steps": list(self.steps),
            "total": self.total,
        }

    @classmethod
    def from_state(cls, state: object) -> _Recipe | None:
        if not isinstance(state, dict) or state.get("demo") != STATE_VERSION:
            return None
        title, base, steps, total = (state.get(k) for k in ("title", "base", "steps", "total"))
        if not (title is None or isinstance(title, str)) or not (
            base is None or isinstance(base, str)
        ):
            return None
        if not isinstance(steps, list) or not all(isinstance(s, str) for s in steps):
            return None
        if not isinstance(total, int) or total < len(steps):
            return None
        return cls(title, base, tuple(steps), total)

    def then(self, instruction: str) -> _Recipe:
        steps = (*self.steps, instruction)[-MAX_STEPS:]
        return _Recipe(self.title, self.base, steps, self.total + 1)


def _recipe(request: ImageRequest) -> tuple[_Recipe, dict[str, Image]]:
    """This request's recipe, and the images its base may be found among."""
    history = request.history
    images = {image.sha256: image for image in request.references}
    for turn in history:
        images[turn.result.sha256] = turn.result
        images.update((image.sha256, image) for image in turn.references)
    if not history:
        if request.references:  # an edit of an uploaded image
            return _Recipe(None, request.references[0].sha256, (request.prompt,), 1), images
        return _Recipe(request.prompt, None, (), 0), images
    parent = history[-1]
    if parent.provider == DemoProvider.name:
        known = _Recipe.from_state(parent.provider_state)
        if known is not None:
            return known.then(request.prompt), images
    # No recipe (another provider's image, or a demo turn from before recipes were kept):
    # start from the newest image no demo caption was drawn on, and replay the edits since.
    recipe: _Recipe | None = None
    for turn in history:
        if turn.provider != DemoProvider.name:
            recipe = _Recipe(None, turn.result.sha256, (), 0)
        elif recipe is not None:
            recipe = recipe.then(turn.prompt)
        elif turn.references:
            recipe = _Recipe(None, turn.references[0].sha256, (turn.prompt,), 1)
        else:
            recipe = _Recipe(turn.prompt, None, (), 0)
    assert recipe is not None
    return recipe.then(request.prompt), images


def _picture(recipe: _Recipe, images: dict[str, Image], size: tuple[int, int]) -> PILImage.Image:
    """The clean picture: the base, then each edit's tint in turn. No captions."""
    base = images.get(recipe.base) if recipe.base is not None else None
    if base is not None:
        with _open_checked(base.data) as opened:
            canvas = ImageOps.fit(opened.convert("RGBA"), size)
    else:  # the title's gradient, or (the base fell out of the history) one from its sha
        canvas = _new_canvas(recipe.title or recipe.base or "", size)
    for step in recipe.steps[-TINTED_STEPS:]:
        tint = PILImage.new("RGBA", size, (*_tint_for(step), 255))
        canvas = PILImage.blend(canvas, tint, TINT)
    return canvas


def _render(request: ImageRequest) -> tuple[bytes, dict[str, Any]]:
    size = ASPECT_SIZES.get(request.aspect_ratio, ASPECT_SIZES[DEFAULT_ASPECT_RATIO])
    recipe, images = _recipe(request)
    canvas = _picture(recipe, images, size)
    if recipe.total:
        _title_band(canvas, recipe.title, list(recipe.steps[:-1]), recipe.total - 1)
        _instruction_band(canvas, recipe.steps[-1])
    else:
        _title_band(canvas, recipe.title, [], 0)
    out = io.BytesIO()
    canvas.convert("RGB").save(out, format="PNG", optimize=False)
    return out.getvalue(), recipe.state()


class DemoProvider:
    """Offline stand-in for Gemini 2.5 Flash Image; `latency` simulates a slow provider."""

    name = "demo"
    capabilities = Capabilities(max_reference_images=3)

    def __init__(self, latency: float = 0.0) -> None:
        self.latency = latency
        self.calls = 0

    async def generate(
        self, request: ImageRequest, call: ProviderCall = ProviderCall()
    ) -> ImageResult:
        self.calls += 1
        if self.latency:
            await asyncio.sleep(self.latency)
        data, state = await asyncio.to_thread(_render, request)
        image = await Image.from_bytes(data, "image/png")
        return ImageResult(
            images=(image,),
            text="",
            provider_state=state,
            usage=Usage(output_tokens=TOKENS_PER_IMAGE, total_tokens=TOKENS_PER_IMAGE),
        )

    async def aclose(self) -> None:
        return None
