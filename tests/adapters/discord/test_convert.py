"""The adapter's pure rules: custom ids, destinations, token lifetime, texts within limits."""

from __future__ import annotations

import pytest

from adapters.discord.convert import (
    CUSTOM_ID_LIMIT,
    EMBED_TOTAL_LIMIT,
    MESSAGE_LIMIT,
    Destination,
    ParsedId,
    caption_embed,
    custom_id,
    failure_text,
    invite_url,
    modal_value,
    parse_custom_id,
    progress_text,
    strip_mention,
    thread_key,
)
from bot.core import Phase, Progress
from bot.errors import InternalError, SafetyBlocked
from bot.models import Job, ThreadKey, Turn, TurnKind, Usage, new_id

LONG = "a panda making latte art, " * 200


def job(prompt: str = "a panda") -> Job:
    return Job(
        id=new_id(),
        thread_id=new_id(),
        user_id="42",
        kind=TurnKind.IMAGINE,
        prompt=prompt,
        reference_shas=(),
        aspect_ratio="1:1",
        parent_turn_id=None,
        follow_latest=False,
        destination=None,
        provider="demo",
        model="gemini-2.5-flash-image",
    )


def turn(prompt: str = "a panda", text: str = "") -> Turn:
    return Turn(
        id=new_id(),
        thread_id=new_id(),
        parent_id=None,
        user_id="42",
        kind=TurnKind.EDIT,
        prompt=prompt,
        reference_shas=(),
        result_sha="0" * 64,
        text=text,
        aspect_ratio="16:9",
        provider="demo",
        model="gemini-2.5-flash-image",
        provider_state=None,
        usage=Usage(),
        created_at=0.0,
        duration_s=3.21,
    )


def test_custom_ids_carry_action_and_id_and_fit_discord() -> None:
    turn_id = new_id()
    value = custom_id("reroll", turn_id)
    assert value == f"imagine:reroll:{turn_id}"
    assert parse_custom_id(value) == ParsedId("reroll", turn_id)
    assert parse_custom_id("imagine:new-modal:123:456") == ParsedId("new-modal", "123:456")
    assert parse_custom_id("someone-elses-button") is None
    assert len(custom_id("new-modal", f"{2**63}:{2**63}")) <= CUSTOM_ID_LIMIT
    with pytest.raises(ValueError):
        custom_id("reroll", "x" * 200)


def test_destination_round_trips_through_json_with_string_ids() -> None:
    dest = Destination(
        channel_id=2**62,
        user_id=7,
        guild_id=9,
        application_id=11,
        token="tok",
        token_created_at=1000.5,
        reply_to=13,
    )
    data = dest.to_json()
    assert data["channel_id"] == str(2**62)
    assert Destination.from_json(data) == dest
    assert Destination.from_json({"channel_id": "1", "user_id": "2"}) == Destination(1, 2)
    for bad in (None, [], {"channel_id": "1"}, {"channel_id": "x", "user_id": "2"}):
        with pytest.raises(ValueError):
            Destination.from_json(bad)


def test_interaction_tokens_are_used_for_14_of_their_15_minutes() -> None:
    dest = Destination(1, 2, application_id=3, token="t", token_created_at=1000.0)
    assert dest.token_usable(1000.0 + 13 * 60)
    assert not dest.token_usable(1000.0 + 14 * 60 + 1)
    assert not Destination(1, 2, reply_to=5).token_usable(1000.0)


def test_thread_keys_name_guild_or_dm() -> None:
    assert thread_key(5, 6, 7) == ThreadKey("discord", "5", "6", "7")
    assert thread_key(None, 6, 7) == ThreadKey("discord", "@dm", "6", "7")


def test_progress_texts_per_phase_stay_under_the_message_limit() -> None:
    assert progress_text(Progress(job(), Phase.QUEUED, position=3)).startswith(
        "⏳ Queued (position 3)"
    )
    running = progress_text(Progress(job(), Phase.GENERATING, elapsed=12.7))
    assert running.startswith("🎨 Generating… 12 s")
    assert progress_text(Progress(job(), Phase.UPLOADING)).startswith("📤 Uploading")
    assert len(progress_text(Progress(job(LONG), Phase.GENERATING))) <= MESSAGE_LIMIT


def test_failures_show_the_sentence_never_the_detail() -> None:
    error = InternalError(detail="Traceback (most recent call last): secret-key-123")
    text = failure_text(error, job(LONG), mention=42)
    assert text.startswith("<@42> ⚠️ Something went wrong on my side.")
    assert "Traceback" not in text and "secret-key-123" not in text
    assert len(text) <= MESSAGE_LIMIT
    assert SafetyBlocked().user_message in failure_text(SafetyBlocked(), None)


def test_caption_embed_fits_discords_embed_limits() -> None:
    embed = caption_embed(turn(LONG[:2000], text=LONG), "imagine-x.png", notes=(LONG,))
    assert len(embed) <= EMBED_TOTAL_LIMIT
    assert all(len(field.value or "") <= 1024 for field in embed.fields)
    assert embed.image.url == "attachment://imagine-x.png"
    values = {field.name: field.value for field in embed.fields}
    assert values["Model"] == "Gemini 2.5 Flash Image · via the offline demo"
    assert values["Aspect ratio"] == "16:9"
    assert values["Time"] == "3.2 s"
    assert values["Requested by"] == "<@42>"


def test_modal_values_are_read_from_rows_and_labels() -> None:
    rows = [{"type": 1, "components": [{"type": 4, "custom_id": "instruction", "value": "blue"}]}]
    labels = [{"type": 18, "component": {"type": 4, "custom_id": "instruction", "value": "red"}}]
    assert modal_value(rows) == "blue"
    assert modal_value(labels) == "red"
    assert modal_value([]) == ""


def test_a_mention_of_the_bot_is_not_part_of_the_instruction() -> None:
    assert strip_mention("<@123> make it blue", 123) == "make it blue"
    assert strip_mention("make <@!123> it blue", 123) == "make   it blue"


def test_invite_url_asks_for_exactly_the_scopes_and_permissions_used() -> None:
    url = invite_url(1234)
    assert url.startswith("https://discord.com/oauth2/authorize?client_id=1234")
    assert "scope=bot+applications.commands" in url
    assert "permissions=274878024704" in url


def test_a_destination_without_the_bot_survives_its_json_and_old_json_has_the_bot() -> None:
    absent = Destination(channel_id=5, user_id=6, application_id=7, token="t", bot_absent=True)
    data = absent.to_json()
    assert data["bot_absent"] is True and data["channel_id"] == "5"
    assert Destination.from_json(data) == absent
    present = Destination(channel_id=5, user_id=6)
    assert "bot_absent" not in present.to_json()  # what older jobs stored
    assert Destination.from_json({"channel_id": "5", "user_id": "6"}).bot_absent is False
