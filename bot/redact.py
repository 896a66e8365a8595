"""One place that masks secrets in every text that leaves the process's memory.

Error texts are masked when an `ImagineError` is made (so what a user sees, what the jobs
table keeps and what the log says are all masked), and the log filter masks every line.
Masked are the secrets the settings hold (registered at start-up) and anything shaped like
a credential: bearer/bot tokens, Slack and Discord tokens, provider API keys, a key or
token in a query string or JSON field, and the token part of a Discord webhook URL (an
interaction token is a 15-minute credential).
"""

from __future__ import annotations

import re
from collections.abc import Iterable

__all__ = ["MASK", "redact", "register"]

MASK = "[redacted]"

_known: list[str] = []

_PATTERNS: tuple[re.Pattern[str], ...] = (
    # Authorization headers quoted back: "Bearer xyz", "Bot xyz", "Basic xyz"
    re.compile(r"(?i)\b((?:bearer|bot|basic)\s+)[A-Za-z0-9._~+/=-]{8,}"),
    # Slack tokens, OpenAI-style keys, Google API keys
    re.compile(r"()\bx(?:ox[abposre]|app)-[A-Za-z0-9-]{8,}"),
    re.compile(r"()\bsk-[A-Za-z0-9_-]{12,}"),
    re.compile(r"()\bAIza[0-9A-Za-z_-]{20,}"),
    # Discord bot tokens: base64 user id . timestamp . hmac
    re.compile(r"()\b[A-Za-z0-9_-]{23,28}\.[A-Za-z0-9_-]{6,7}\.[A-Za-z0-9_-]{27,}"),
    # key=…, "api_key": "…", x-goog-api-key: …, token=…
    re.compile(
        r"""(?i)((?<![A-Za-z0-9_])"""
        r"""(?:api[_-]?key|x-goog-api-key|authorization|access[_-]?token|token|secret)"""
        r"""["']?\s*[:=]\s*["']?)(?!\[redacted\])[^\s"'&,;}]{6,}"""
    ),
    # Discord webhook and interaction-callback URLs carry the interaction token
    re.compile(r"(/(?:webhooks|interactions)/\d+/)[A-Za-z0-9_.-]{20,}"),
)


def register(secrets: Iterable[str]) -> None:
    """Remember the configured secrets (API keys, tokens) so they are masked verbatim."""
    fresh = {secret for secret in secrets if len(secret) >= 6}
    _known[:] = sorted(fresh | set(_known), key=len, reverse=True)


def redact(text: str) -> str:
    """`text` with every known secret and every credential-shaped string masked."""
    if not text:
        return text
    for secret in _known:
        if secret in text:
            text = text.replace(secret, MASK)
    for pattern in _PATTERNS:
        text = pattern.sub(lambda match: match.group(1) + MASK, text)
    return text
