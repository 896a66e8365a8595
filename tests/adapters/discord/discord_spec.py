"""Discord's request schemas, as checks on what the bot sends.

From discord/discord-api-spec (`specs/openapi.json`): `ApplicationCommandCreateRequest` and
its `ApplicationCommand*Option` schemas for `PUT …/commands`, and
`ActionRowComponentForMessageRequest` with `ButtonComponentForMessageRequest` and
`StringSelectComponentForMessageRequest` for the components under a message — plus the rules
Discord states in prose (lowercase option names, required options first, a select alone in
its row).
"""

from __future__ import annotations

import re
from typing import Any

NAME = re.compile(r"^[-_\w]{1,32}$")
"""Discord's command and option names (lowercase where it has case)."""
OPTION_TYPES = {1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11}
INTERACTION_CONTEXT_TYPES = {0, 1, 2}
"""InteractionContextType: GUILD, BOT_DM, PRIVATE_CHANNEL."""
APPLICATION_INTEGRATION_TYPES = {0, 1}
"""ApplicationIntegrationType: GUILD_INSTALL, USER_INSTALL."""


def check_options(options: list[dict[str, Any]]) -> None:
    """What the ApplicationCommand*Option schemas and Discord's rules ask: names and
    descriptions in bounds, at most 25 options and choices, required first."""
    assert len(options) <= 25
    required = [bool(option.get("required")) for option in options]
    assert required == sorted(required, reverse=True), "required options come first"
    for option in options:
        assert option["type"] in OPTION_TYPES
        assert NAME.fullmatch(option["name"]) and option["name"] == option["name"].lower()
        assert 1 <= len(option["description"]) <= 100
        choices = option.get("choices") or []
        assert len(choices) <= 25
        for choice in choices:  # ApplicationCommandOptionStringChoice
            assert 1 <= len(choice["name"]) <= 100
            if option["type"] == 3:
                assert isinstance(choice["value"], str) and len(choice["value"]) <= 6000
        if option["type"] in (1, 2):
            check_options(option.get("options") or [])


def _unique_subset(values: Any, allowed: set[int]) -> None:
    """`{"type": ["array", "null"], "minItems": 1, "uniqueItems": true}` of an enum."""
    if values is None:
        return
    assert isinstance(values, list) and len(values) >= 1
    assert len(set(values)) == len(values)
    assert set(values) <= allowed


def check_command(command: dict[str, Any]) -> None:
    """One entry of the `PUT …/commands` body (ApplicationCommandCreateRequest)."""
    assert command["type"] in (1, 2, 3)
    assert 1 <= len(command["name"]) <= 32
    if command["type"] == 1:
        assert NAME.fullmatch(command["name"]) and command["name"] == command["name"].lower()
        assert 1 <= len(command["description"]) <= 100
    assert len(command.get("description") or "") <= 100
    check_options(command.get("options") or [])
    permissions = command.get("default_member_permissions")
    assert permissions is None or (isinstance(permissions, int) and permissions >= 0)
    assert command.get("dm_permission") in (None, True, False)
    _unique_subset(command.get("contexts"), INTERACTION_CONTEXT_TYPES)
    _unique_subset(command.get("integration_types"), APPLICATION_INTEGRATION_TYPES)


def check_components(rows: list[dict[str, Any]]) -> None:
    """A message's `components`: at most 5 action rows of 1–5 buttons, or one select alone;
    custom ids 1–100 characters and unique; a select with 1–25 options."""
    assert len(rows) <= 5
    seen: list[str] = []
    for row in rows:
        assert row["type"] == 1
        items = row["components"]
        assert 1 <= len(items) <= 5
        if any(item["type"] != 2 for item in items):
            assert len(items) == 1, "a select takes a whole action row"
        for item in items:
            if "custom_id" in item:
                assert 1 <= len(item["custom_id"]) <= 100
                seen.append(item["custom_id"])
            if item["type"] == 2:  # ButtonComponentForMessageRequest
                assert item["style"] in (1, 2, 3, 4, 5, 6)
                assert len(item.get("label") or "") <= 80
            elif item["type"] == 3:  # StringSelectComponentForMessageRequest
                assert len(item.get("placeholder") or "") <= 150
                assert 0 <= item.get("min_values", 1) <= 25
                assert 1 <= item.get("max_values", 1) <= 25
                options = item["options"]
                assert 1 <= len(options) <= 25
                for option in options:  # StringSelectOptionForRequest
                    assert 1 <= len(option["label"]) <= 100
                    assert 1 <= len(option["value"]) <= 100
                    assert len(option.get("description") or "") <= 100
                assert len({option["value"] for option in options}) == len(options)
    assert len(set(seen)) == len(seen), "custom ids are unique within a message"
