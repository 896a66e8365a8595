"""An offline provider: draws a real PNG from the prompt, so the bot works with no key.

It is the default on a fresh machine. A new image is a gradient whose colours come from the
prompt with the prompt written on it, at the pixel size of the requested aspect ratio. An
edit starts from the previous image, tints it towards a colour named in the instruction
("make the cup blue") or one derived from it, and adds the instruction as a caption, so every
turn visibly builds on the last. All drawing runs in a worker thread, and an input image
whose header declares more than `MAX_IMAGE_PIXELS` is refused before it is decoded.
"""

from __future__ import annotations

import asyncio
import hashlib
import io
import textwrap

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


def _caption(canvas: PILImage.Image, text: str, *, top: bool) -> None:
    width, height = canvas.size
    font = _font(max(18, width // 28))
    lines = textwrap.wrap(text, width=max(16, width // 22))[:4]
    if not lines:
        return
    line_height = max(22, width // 24)
    box_height = line_height * len(lines) + 24
    y0 = 0 if top else height - box_height
    overlay = PILImage.new("RGBA", canvas.size, (0, 0, 0, 0))
    draw = ImageDraw.Draw(overlay)
    draw.rectangle((0, y0, width, y0 + box_height), fill=(0, 0, 0, 140))
    for i, line in enumerate(lines):
        draw.text((16, y0 + 12 + i * line_height), line, fill=(255, 255, 255, 255), font=font)
    canvas.alpha_composite(overlay)


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


def _render(request: ImageRequest) -> bytes:
    size = ASPECT_SIZES.get(request.aspect_ratio, ASPECT_SIZES[DEFAULT_ASPECT_RATIO])
    base = request.history[-1].result if request.history else None
    if base is None and request.references:
        base = request.references[0]
    if base is not None:
        with _open_checked(base.data) as previous:
            canvas = ImageOps.fit(previous.convert("RGBA"), size)
        tint = PILImage.new("RGBA", size, (*_tint_for(request.prompt), 255))
        canvas = PILImage.blend(canvas, tint, 0.35)
        _caption(canvas, f"» {request.prompt}", top=False)
    else:
        canvas = _new_canvas(request.prompt, size)
        _caption(canvas, request.prompt, top=True)
    out = io.BytesIO()
    canvas.convert("RGB").save(out, format="PNG", optimize=False)
    return out.getvalue()


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
        data = await asyncio.to_thread(_render, request)
        image = await Image.from_bytes(data, "image/png")
        return ImageResult(
            images=(image,),
            text="",
            usage=Usage(output_tokens=TOKENS_PER_IMAGE, total_tokens=TOKENS_PER_IMAGE),
        )

    async def aclose(self) -> None:
        return None
