"""What adapters send the core: start a thread, or continue one.

Frozen values, built by pure conversion functions at the platform edges.
"""

from __future__ import annotations

from dataclasses import dataclass

from bot.models import JSON, Image, ThreadKey

__all__ = ["EditRequest", "ImagineRequest"]


@dataclass(frozen=True, slots=True)
class ImagineRequest:
    """Start a new thread. `key` names it on the platform; `destination` is adapter JSON."""

    key: ThreadKey
    user_id: str
    prompt: str
    aspect_ratio: str | None = None
    references: tuple[Image, ...] = ()
    destination: JSON = None
    roles: frozenset[str] = frozenset()
    """The requester's Discord role ids, for `IMAGINE_ALLOWED_ROLES`."""
    parent_channel: str = ""
    """The channel a Discord thread or forum post belongs to: allowing a channel allows
    its threads (`IMAGINE_ALLOWED_CHANNELS`)."""
    model: str | None = None
    """One of `IMAGINE_MODELS` (None: `IMAGINE_MODEL`); the thread keeps it."""
    size: str | None = None
    """`1K`, `2K` or `4K` for models that offer sizes (None: the model's default)."""


@dataclass(frozen=True, slots=True)
class EditRequest:
    """Continue a thread: from `turn_id` (a reply to that image) or the latest of `thread_key`."""

    user_id: str
    instruction: str
    turn_id: str | None = None
    thread_key: ThreadKey | None = None
    references: tuple[Image, ...] = ()
    aspect_ratio: str | None = None
    destination: JSON = None
    roles: frozenset[str] = frozenset()
    parent_channel: str = ""
    follow: bool = True
    """A reply to the thread's latest image builds on whatever is latest when it runs
    (quick replies stack); False edits exactly `turn_id` (📐 recomposes the image it was
    chosen under, even if another edit lands first)."""
