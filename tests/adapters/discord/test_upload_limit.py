"""An answer over Discord's upload limit is posted re-encoded, never lost at upload."""

from __future__ import annotations

import io
import random

from PIL import Image as PILImage

from tests.fakes.discord_server import FakeDiscord, User

from .conftest import RunningBot, TimedNexconn, imagine, turn_of


def noise_png(size: tuple[int, int]) -> bytes:
    """A PNG that does not compress: random pixels, about 3 bytes each."""
    rng = random.Random(7)
    image = PILImage.frombytes("RGB", size, rng.randbytes(size[0] * size[1] * 3))
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


async def test_an_image_over_the_upload_limit_is_posted_smaller_and_kept_whole(
    bot: RunningBot, fake: FakeDiscord, nexconn: TimedNexconn, alice: User
) -> None:
    nexconn.image = noise_png((2000, 1900))  # ~11 MiB: over the interaction's 10 MiB
    limit = 10 * 1024 * 1024
    assert len(nexconn.image) > limit

    payload, delivered = await imagine(fake, alice, "television static")

    [upload] = delivered.files
    assert len(upload.data) <= limit
    assert upload.filename.endswith(".webp")
    posted = PILImage.open(io.BytesIO(upload.data))
    posted.load()  # a whole image, not a cut one
    assert posted.format == "WEBP"
    [embed] = delivered.json["embeds"]
    assert "to fit Discord's 10 MB upload limit" in embed["description"] + str(embed["fields"])
    assert embed["image"]["url"] == f"attachment://{upload.filename}"
    message = fake.original_message(payload["token"])
    assert message is not None
    turn = await turn_of(bot, message)
    kept = await bot.store.get_image(turn.result_sha)
    assert kept is not None and kept.data == nexconn.image  # edits start from the original


async def test_an_image_under_the_limit_is_posted_as_made(
    bot: RunningBot, fake: FakeDiscord, nexconn: TimedNexconn, alice: User
) -> None:
    _, delivered = await imagine(fake, alice, "a small fox")
    [upload] = delivered.files
    assert upload.data == nexconn.image
    [embed] = delivered.json["embeds"]
    assert "upload limit" not in embed["description"] + str(embed["fields"])
