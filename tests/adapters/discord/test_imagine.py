"""`/imagine`: defer first, progress, the image with buttons, and every way it can go wrong."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta

from bot.errors import ImageTooLarge, NotAnImage, SafetyBlocked
from bot.models import Job, Thread, ThreadKey, TurnKind, new_id, now
from bot.providers.demo import DemoProvider
from bot.providers.nexconn import NexconnProvider
from bot.scheduler import Limits
from storage import open_store
from tests.fakes.discord_server import FakeDiscord, User
from tests.fakes.nexconn_server import CHAT, GENERATIONS, error_body
from tests.fakes.scripted_json_server import Reply, b64, png

from .conftest import (
    MODEL,
    RunningBot,
    TimedNexconn,
    custom_ids,
    imagine,
    is_callback,
    is_channel_post,
    is_original_edit,
    run_bot,
    turn_of,
)


def content(call: object) -> str:
    body = getattr(call, "json", None) or {}
    return str(body.get("content") or "")


async def test_imagine_defers_before_the_provider_and_posts_its_image_with_buttons(
    bot: RunningBot, fake: FakeDiscord, nexconn: TimedNexconn, alice: User
) -> None:
    payload, delivered = await imagine(fake, alice, "a panda making latte art", aspect_ratio="16:9")

    [defer] = fake.find(is_callback(payload["token"]))
    assert defer.json == {"type": 5}
    assert defer.query == {"with_response": "1"}
    [request] = nexconn.requests
    assert request.path == GENERATIONS
    assert request.json["image_config"] == {"aspect_ratio": "16:9"}
    assert defer.at < nexconn.arrivals[0]

    [upload] = delivered.files
    assert upload.data == nexconn.image
    assert upload.filename.endswith(".png")
    message = fake.original_message(payload["token"])
    assert message is not None
    turn = await turn_of(bot, message)
    stored = await bot.store.get_image(turn.result_sha)
    assert stored is not None and stored.data == upload.data
    assert custom_ids(message) == [
        f"imagine:reroll:{turn.id}",
        f"imagine:edit:{turn.id}",
        f"imagine:delete:{turn.id}",
    ]
    assert delivered.json["content"] is None  # the progress line is gone
    [embed] = delivered.json["embeds"]
    assert "a panda making latte art" in embed["description"]
    fields = {field["name"]: field["value"] for field in embed["fields"]}
    assert fields["Model"] == "Gemini 2.5 Flash Image · via Nexconn"
    assert fields["Aspect ratio"] == "16:9"
    assert fields["Time"].endswith(" s")
    assert embed["image"]["url"] == f"attachment://{upload.filename}"

    progress = [c for c in fake.find(is_original_edit(payload["token"])) if not c.files]
    assert any("Generating" in content(c) for c in progress)
    [cancel] = {cid for c in progress for cid in custom_ids(c.json)}
    job = await bot.store.get_job(cancel.removeprefix("imagine:cancel:"))
    assert job is not None and job.thread_id == turn.thread_id


async def test_reference_images_are_downloaded_after_the_defer_and_sent_to_the_model(
    bot: RunningBot, fake: FakeDiscord, nexconn: TimedNexconn, alice: User
) -> None:
    photo = png((10, 200, 10))
    attachment = fake.attachment("cat.png", photo, "image/png")
    _, delivered = await imagine(fake, alice, "the cat as an astronaut", images=[attachment])
    [request] = nexconn.requests
    assert request.path == CHAT
    assert b64(photo) in str(request.json)
    assert delivered.files[0].data == nexconn.image


async def test_a_slow_provider_and_a_long_queue_still_get_the_defer_at_once(
    fake: FakeDiscord, db_url: str, alice: User
) -> None:
    provider = DemoProvider(latency=10)
    bot = await run_bot(fake, db_url, provider, limits=Limits(concurrency=1))
    try:
        payloads = [fake.slash(alice, f"slow picture {i}") for i in range(3)]
        sent = time.monotonic()
        for payload in payloads:
            await fake.dispatch("INTERACTION_CREATE", payload)
        for payload in payloads:
            defer = await fake.wait_for(is_callback(payload["token"]))
            assert defer.json["type"] == 5
            assert defer.at - sent < 3.0  # Discord's deadline; the provider needs 10 s

        # the three handlers run concurrently, so any of them may be the last one queued
        tokens = [payload["token"] for payload in payloads]
        queued = await fake.wait_for(
            lambda c: any(is_original_edit(t)(c) for t in tokens) and "position 2" in content(c)
        )
        assert content(queued).startswith("⏳ Queued (position 2)")
        last = next(t for t in tokens if is_original_edit(t)(queued))
        message = fake.original_message(last)
        assert message is not None
        [cancel] = custom_ids(message)
        start = len(fake.calls)
        await fake.dispatch("INTERACTION_CREATE", fake.button(alice, message, cancel))
        cancelled = await fake.wait_for(
            lambda c: is_original_edit(last)(c) and "Cancelled." in content(c), start=start
        )
        assert cancelled.json["components"] == []
        assert provider.calls == 1  # only the first job started; nothing waited for it
    finally:
        await bot.stop()


async def test_a_provider_failure_is_explained_and_the_next_command_works(
    bot: RunningBot, fake: FakeDiscord, nexconn: TimedNexconn, alice: User
) -> None:
    nexconn.script(
        Reply(400, error_body("Blocked by content policy XYZ-77", code="content_policy_violation"))
    )
    payload = fake.slash(alice, "something the filter dislikes")
    await fake.dispatch("INTERACTION_CREATE", payload)
    failed = await fake.wait_for(
        lambda c: is_original_edit(payload["token"])(c) and "⚠️" in content(c)
    )
    assert SafetyBlocked().user_message in content(failed)
    assert "XYZ-77" not in content(failed)
    assert failed.json["components"] == []

    _, delivered = await imagine(fake, alice, "a harmless kitten")
    assert delivered.files[0].data == nexconn.image


async def test_when_discord_refuses_the_response_edit_the_image_still_arrives(
    bot: RunningBot, fake: FakeDiscord, nexconn: TimedNexconn, alice: User
) -> None:
    fake.failing_original_edits = 1_000  # every edit of the deferred response fails
    payload = fake.slash(alice, "a stubborn panda")
    await fake.dispatch("INTERACTION_CREATE", payload)
    posted = await fake.wait_for(lambda c: is_channel_post(fake.channel_id)(c) and bool(c.files))
    assert posted.json["content"] == f"<@{alice.id}> your image is ready."
    assert posted.files[0].data == nexconn.image
    turn = await turn_of(bot, posted.answer)
    assert custom_ids(posted.answer)[0] == f"imagine:reroll:{turn.id}"


async def test_bad_attachments_get_their_own_sentence_privately_before_any_download(
    bot: RunningBot, fake: FakeDiscord, nexconn: TimedNexconn, alice: User
) -> None:
    cases = [
        (
            fake.attachment("notes.pdf", b"%PDF-1.7 not a picture", "application/pdf"),
            NotAnImage("notes.pdf").user_message,
        ),
        (
            fake.attachment("huge.png", png(), "image/png", size=9 * 1024 * 1024),
            ImageTooLarge(9 * 1024 * 1024).user_message,
        ),
    ]
    for attachment, sentence in cases:
        payload = fake.slash(alice, "use this", images=[attachment])
        await fake.dispatch("INTERACTION_CREATE", payload)
        answer = await fake.wait_for(is_callback(payload["token"]))
        assert answer.json["type"] == 4
        assert answer.json["data"]["flags"] == 64
        assert answer.json["data"]["content"] == sentence
    assert fake.downloads == []
    assert nexconn.requests == []


async def test_an_attachment_whose_bytes_are_not_an_image_is_refused_after_download(
    bot: RunningBot, fake: FakeDiscord, nexconn: TimedNexconn, alice: User
) -> None:
    login_page = fake.attachment("photo.png", b"<!DOCTYPE html><html>Sign in</html>", "image/png")
    payload = fake.slash(alice, "use this", images=[login_page])
    await fake.dispatch("INTERACTION_CREATE", payload)
    token = payload["token"]
    followup = await fake.wait_for(
        lambda c: c.method == "POST" and c.path == f"/webhooks/{fake.app_id}/{token}"
    )
    assert followup.json["content"] == NotAnImage("photo.png").user_message
    assert followup.json["flags"] == 64
    assert fake.find(
        lambda c: c.method == "DELETE" and c.path.endswith(f"{token}/messages/@original")
    )
    assert nexconn.requests == []


async def test_an_interaction_older_than_15_minutes_is_answered_with_a_mention(
    bot: RunningBot, fake: FakeDiscord, nexconn: TimedNexconn, alice: User
) -> None:
    payload = fake.slash(alice, "a late panda", at=datetime.now(UTC) - timedelta(minutes=16))
    await fake.dispatch("INTERACTION_CREATE", payload)
    posted = await fake.wait_for(lambda c: is_channel_post(fake.channel_id)(c) and bool(c.files))
    assert posted.json["content"] == f"<@{alice.id}> your image is ready."
    assert [str(u) for u in posted.json["allowed_mentions"]["users"]] == [str(alice.id)]
    assert posted.files[0].data == nexconn.image
    assert not fake.find(is_original_edit(payload["token"]))
    turn = await turn_of(bot, posted.answer)
    assert custom_ids(posted.answer)[0] == f"imagine:reroll:{turn.id}"


async def test_a_job_resumed_after_its_token_expired_is_delivered_with_a_mention(
    fake: FakeDiscord, db_url: str, provider: NexconnProvider, nexconn: TimedNexconn, alice: User
) -> None:
    # A previous process accepted /imagine 20 minutes ago and stopped before it finished.
    store = await open_store(db_url)
    key = ThreadKey("discord", str(fake.guild_id), str(fake.channel_id), str(fake.new_id()))
    thread = await store.create_thread(Thread(new_id(), key, str(alice.id), "waited", now()))
    created = time.time() - 20 * 60
    destination = {
        "channel_id": str(fake.channel_id),
        "user_id": str(alice.id),
        "guild_id": str(fake.guild_id),
        "application_id": str(fake.app_id),
        "token": "itoken-expired",
        "token_created_at": created,
    }
    job = Job(
        id=new_id(),
        thread_id=thread.id,
        user_id=str(alice.id),
        kind=TurnKind.IMAGINE,
        prompt="a panda that waited",
        reference_shas=(),
        aspect_ratio="1:1",
        parent_turn_id=None,
        follow_latest=False,
        destination=destination,
        provider="nexconn",
        model=MODEL,
        created_at=created,
    )
    await store.add_job(job)
    await store.close()

    bot = await run_bot(fake, db_url, provider)
    try:
        assert await bot.core.resume_unfinished() == 1
        posted = await fake.wait_for(
            lambda c: is_channel_post(fake.channel_id)(c) and bool(c.files)
        )
        assert posted.json["content"] == f"<@{alice.id}> your image is ready."
        assert posted.files[0].data == nexconn.image
        assert not fake.find(lambda c: "itoken-expired" in c.path)
        turn = await turn_of(bot, posted.answer)
        assert turn.prompt == "a panda that waited"
    finally:
        await bot.stop()
