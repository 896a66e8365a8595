"""Images built to hurt: a decompression bomb, a cut-off file, an oversized but honest one."""

from __future__ import annotations

import io
import struct
import zlib

from PIL import Image as PILImage


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def bomb_png(width: int = 20000, height: int = 20000) -> bytes:
    """A valid 1-bit PNG of `width`×`height` black pixels: tens of KB on the wire, hundreds
    of MB once decoded (Pillow keeps "1" images at a byte per pixel)."""
    row = b"\0" * (1 + (width + 7) // 8)  # filter byte + packed bits
    packer = zlib.compressobj(9)
    idat = b"".join(packer.compress(row) for _ in range(height)) + packer.flush()
    header = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + _chunk(b"IHDR", header)
        + _chunk(b"IDAT", idat)
        + _chunk(b"IEND", b"")
    )


def png(size: tuple[int, int] = (64, 64), colour: tuple[int, int, int] = (200, 30, 30)) -> bytes:
    out = io.BytesIO()
    PILImage.new("RGB", size, colour).save(out, format="PNG")
    return out.getvalue()


def noisy_png(size: tuple[int, int] = (64, 64)) -> bytes:
    """A PNG whose pixel data does not compress away, so cutting it loses pixels."""
    image = PILImage.frombytes(
        "RGB", size, bytes((i * 37) % 251 for i in range(3 * size[0] * size[1]))
    )
    out = io.BytesIO()
    image.save(out, format="PNG")
    return out.getvalue()


def cut_png() -> bytes:
    """The first half of a real PNG: the magic bytes and header are right, the pixels are not."""
    whole = noisy_png()
    return whole[: len(whole) // 2]
