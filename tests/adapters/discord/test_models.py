"""`/imagine model: … size: …`: the options follow `IMAGINE_MODELS`, the provider gets the
chosen model and size, the caption names them, an edit continues on them, and a size the
model lacks is refused inside the acknowledgement."""

from __future__ import annotations

import json
from typing import Any

import pytest

from bot.catalog import SizeNotSupported
from bot.providers.nexconn import NexconnProvider
from tests.fakes.discord_server import FakeDiscord, User
from tests.fakes.nexconn_server import CHAT
from tests.fakes.scripted_json_server import b64, png

from .conftest import (
    TimedNexconn,
    imagine,
    is_callback,
    is_channel_post,
    run_bot,
    turn_of,
)
from .discord_spec import check_command

PRO = "gemini-3-pro-image-preview"
FLASH = "gemini-2.5-flash-image"
FLASH_31 = "gemini-3.1-flash-image-preview"


def synced_imagine(fake: FakeDiscord) -> dict[str, Any]:
    [sync] = fake.find(
        lambda c: (
            c.method == "PUT"
            and c.path == f"/applications/{fake.app_id}/guilds/{fake.guild_id}/commands"
        )
    )
    [command] = [c for c in sync.json if c["name"] == "imagine"]
    check_command(command)
    return command


def fields_of(call_json: dict[str, Any]) -> dict[str, str]:
    [embed] = call_json["embeds"]
    return {field["name"]: field["value"] for field in embed["fields"]}


@pytest.mark.parametrize(
    ("env", "models", "sizes"),
    [
        ({}, None, False),
        (
            {"IMAGINE_MODELS": f"{PRO},{FLASH_31}"},
            [
                ("Gemini 2.5 Flash Image", FLASH),
                ("Gemini 3 Pro Image", PRO),
                ("Gemini 3.1 Flash Image", FLASH_31),
            ],
            True,
        ),
        ({"IMAGINE_MODEL": PRO}, None, True),
    ],
    ids=["one model without sizes", "three models", "one model with sizes"],
)
async def test_model_and_size_options_follow_imagine_models(
    fake: FakeDiscord,
    db_url: str,
    provider: NexconnProvider,
    env: dict[str, str],
    models: list[tuple[str, str]] | None,
    sizes: bool,
) -> None:
    bot = await run_bot(fake, db_url, provider, **env)
    try:
        options = {option["name"]: option for option in synced_imagine(fake)["options"]}
        if models is None:
            assert "model" not in options
        else:
            assert options["model"]["type"] == 3 and not options["model"].get("required")
            assert [(c["name"], c["value"]) for c in options["model"]["choices"]] == models
        if sizes:
            assert [c["value"] for c in options["size"]["choices"]] == ["1K", "2K", "4K"]
            assert not options["size"].get("required")
        else:
            assert "size" not in options
        # the options every /imagine has are still there, in their order
        assert list(options)[:5] == ["prompt", "aspect_ratio", "image", "image2", "image3"]
    finally:
        await bot.stop()


async def test_pro_at_2k_is_made_captioned_and_continued_by_a_reply(
    fake: FakeDiscord,
    db_url: str,
    provider: NexconnProvider,
    nexconn: TimedNexconn,
    alice: User,
) -> None:
    bot = await run_bot(fake, db_url, provider, IMAGINE_MODELS=PRO)
    try:
        payload, delivered = await imagine(
            fake, alice, "a neon sign that says OPEN", model=PRO, size="2K"
        )
        [request] = nexconn.requests
        assert request.json["model"] == "gemini-3.0-pro-image-preview"  # Nexconn's id for it
        assert request.json["image_config"]["image_size"] == "2K"
        assert fields_of(delivered.json)["Model"] == "Gemini 3 Pro Image · 2K · via Nexconn"
        message = fake.original_message(payload["token"])
        assert message is not None
        turn = await turn_of(bot, message)
        assert (turn.model, turn.size) == (PRO, "2K")
        first_image = nexconn.image

        # a reply edits it on the same model and size, with the thread's history
        nexconn.image = png((10, 20, 30))
        start = len(fake.calls)
        reply = fake.user_message(alice, "make it night", reply_to=message)
        await fake.dispatch("MESSAGE_CREATE", reply)
        answer = await fake.wait_for(
            lambda c: is_channel_post(fake.channel_id)(c) and bool(c.files), start=start
        )
        edit = nexconn.requests[-1]
        assert edit.path == CHAT
        assert edit.json["model"] == "gemini-3.0-pro-image-preview"
        assert edit.json["image_config"]["image_size"] == "2K"
        assert b64(first_image) in json.dumps(edit.json)
        assert answer.files[0].data == nexconn.image
        assert fields_of(answer.json)["Model"] == "Gemini 3 Pro Image · 2K · via Nexconn"
    finally:
        await bot.stop()


async def test_a_size_the_model_lacks_is_refused_privately_without_a_provider_call(
    fake: FakeDiscord,
    db_url: str,
    provider: NexconnProvider,
    nexconn: TimedNexconn,
    alice: User,
) -> None:
    bot = await run_bot(fake, db_url, provider, IMAGINE_MODELS=PRO)
    try:
        payload = fake.slash(alice, "a tiny sketch", model=FLASH, size="4K")
        start = len(fake.calls)
        await fake.dispatch("INTERACTION_CREATE", payload)
        callback = await fake.wait_for(is_callback(payload["token"]), start=start)
        assert callback.json["type"] == 4
        assert callback.json["data"]["flags"] == 64
        sentence = (
            "Gemini 2.5 Flash Image can't make 4K images; it offers only its standard size (1K)."
        )
        assert callback.json["data"]["content"] == sentence
        assert SizeNotSupported(FLASH, "4K").user_message == sentence
        await bot.core.idle()
        assert nexconn.requests == []
    finally:
        await bot.stop()
