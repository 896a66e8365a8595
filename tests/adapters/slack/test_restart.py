"""Buttons and jobs survive a restart: a new core and adapter on the same database file."""

from __future__ import annotations

import json

from bot.models import TurnKind
from bot.providers.demo import DemoProvider
from tests.adapters.slack.conftest import (
    Launch,
    block_action,
    images_in,
    imagine,
    root_of,
    view_submission,
)
from tests.fakes.slack_server import FakeSlack


async def test_reroll_edit_and_delete_buttons_work_after_a_restart(
    slack: FakeSlack, launch: Launch
) -> None:
    before = await launch(db="shared.db")
    root, _ = await imagine(before, "a paper boat")
    (turn,) = await before.turns(root.ts)
    await before.close()

    after = await launch(db="shared.db")

    # Reroll: same prompt, same parent, a new image in the same thread
    await after.interactive(block_action("imagine:reroll", turn.id, user="U2", message_ts=root.ts))
    images = await images_in(slack, root.ts, 2)
    await after.core.idle()
    reroll = await after.store.latest_turn(turn.thread_id)
    assert reroll.kind is TurnKind.REROLL and reroll.prompt == "a paper boat"
    assert reroll.parent_id is None and images[1] == (await after.image(reroll)).data

    # Edit: the button opens a modal that names the turn and the thread ...
    status, _ = await after.interactive(
        block_action("imagine:edit", turn.id, user="U3", message_ts=root.ts)
    )
    assert status == 200
    (opened,) = await slack.wait_for(lambda: slack.api("views.open"))
    view = opened.params["view"]
    view = json.loads(view) if isinstance(view, str) else view
    metadata = view["private_metadata"]
    assert turn.id in metadata and root.ts in metadata

    # ... an empty submission is refused inside the modal ...
    status, body = await after.interactive(view_submission(metadata, "  ", user="U3"))
    assert status == 200
    answer = json.loads(body)
    assert answer["response_action"] == "errors" and "empty" in answer["errors"]["instruction"]

    # ... and a real one edits that turn (a branch from it), answering in the thread
    status, body = await after.interactive(
        view_submission(metadata, "add a tiny captain", user="U3")
    )
    assert status == 200 and body == ""
    await images_in(slack, root.ts, 3)
    await after.core.idle()
    edit = await after.store.latest_turn(turn.thread_id)
    assert edit.kind is TurnKind.EDIT and edit.parent_id == turn.id and edit.user_id == "U3"

    # Delete by a stranger: refused, privately
    await after.interactive(block_action("imagine:delete", turn.id, user="U2", message_ts=root.ts))
    (refusal,) = await slack.wait_for(lambda: slack.api("chat.postEphemeral"))
    assert refusal.params["user"] == "U2"
    assert "Only the person who asked" in refusal.params["text"]
    assert not (await after.store.get_turn(turn.id)).deleted

    # Delete by the requester: the file leaves the thread, the root says so
    first_file = slack.completed[0]["files"][0]["id"]
    await after.interactive(block_action("imagine:delete", turn.id, user="U1", message_ts=root.ts))
    await slack.wait_for(lambda: slack.api("files.delete"))
    assert first_file not in slack.uploads
    await slack.wait_for(lambda: "deleted" in root.text)
    assert (await after.store.get_turn(turn.id)).deleted
    assert sorted(slack.uploads) == sorted(f["id"] for d in slack.completed[1:] for f in d["files"])


async def test_a_job_cut_off_by_shutdown_is_delivered_by_the_next_start(
    slack: FakeSlack, launch: Launch
) -> None:
    before = await launch(DemoProvider(latency=30), db="resume.db")
    await before.command("a slow sunrise")
    root = await root_of(slack, "a slow sunrise")
    await slack.wait_for(lambda: "Generating" in root.text)
    await before.close(grace=0)
    assert slack.completed == []

    after = await launch(db="resume.db")  # the destination JSON says where to answer
    await images_in(slack, root.ts, 1)
    await after.core.idle()
    (done,) = slack.completed
    assert done["channel_id"] == "C1" and done["thread_ts"] == root.ts
    await slack.wait_for(lambda: "done" in root.text)
    (turn,) = await after.turns(root.ts)
    assert turn.prompt == "a slow sunrise" and turn.user_id == "U1"
