"""Large answers are decoded in worker processes, with the same results and errors."""

from __future__ import annotations

import base64
import hashlib
import io
import json
import os
from collections.abc import Iterator

import pytest
from PIL import Image as PILImage

from bot.errors import InvalidProviderResponse
from bot.providers import offload
from bot.providers.http import b64encode, decode_image, parse_json


def big_png() -> bytes:
    """An incompressible PNG well above the worker threshold."""
    noise = PILImage.frombytes("RGB", (400, 400), os.urandom(400 * 400 * 3))
    out = io.BytesIO()
    noise.save(out, format="PNG")
    assert len(out.getvalue()) > offload.LARGE
    return out.getvalue()


@pytest.fixture(params=["processes", "threads"])
def mode(request: pytest.FixtureRequest) -> Iterator[str]:
    offload.shutdown()
    offload._disabled = request.param == "threads"
    yield request.param
    offload.shutdown()
    offload._disabled = False


async def test_a_large_image_round_trips(mode: str) -> None:
    data = big_png()
    image = await decode_image("data:image/png;base64," + base64.b64encode(data).decode())
    assert image.data == data
    assert image.mime == "image/png"
    assert image.sha256 == hashlib.sha256(data).hexdigest()
    assert base64.b64decode(await b64encode(image)) == data
    assert (offload._pool is not None) is (mode == "processes")


async def test_a_large_answer_parses_and_bad_ones_are_refused(mode: str) -> None:
    body = json.dumps({"data": [{"b64_json": "A" * (offload.LARGE + 8)}]}).encode()
    assert len((await parse_json(body))["data"][0]["b64_json"]) == offload.LARGE + 8
    with pytest.raises(InvalidProviderResponse):
        await parse_json(body[:-3])  # cut short: malformed JSON
    with pytest.raises(InvalidProviderResponse):
        await decode_image("!" * (offload.LARGE + 8))  # not base64
    with pytest.raises(InvalidProviderResponse):
        await decode_image(base64.b64encode(b"<html>" * 60_000).decode())  # not an image
