"""Logging set-up: text or JSON lines, and a filter that masks secrets in every line."""

from __future__ import annotations

import contextvars
import json
import logging
import sys
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager

from bot.redact import redact, register


class SecretFilter(logging.Filter):
    """Mask secrets wherever they appear in a record's final message (`bot.redact`)."""

    def __init__(self, secrets: Iterable[str]) -> None:
        super().__init__()
        register(secrets)

    def filter(self, record: logging.LogRecord) -> bool:
        message = redact(record.getMessage())
        record.msg, record.args = message, None
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = redact(record.exc_text)
        return True


JOB_FIELDS = ("job_id", "thread_id", "platform", "provider")
"""What every log line about a job carries, so one job can be followed through a search."""

_job_fields: contextvars.ContextVar[Mapping[str, str] | None] = contextvars.ContextVar(
    "imagine_job_fields", default=None
)


@contextmanager
def job_context(**fields: str) -> Iterator[None]:
    """Every line logged inside (this task and the tasks it starts) names the job."""
    token = _job_fields.set({k: v for k, v in fields.items() if k in JOB_FIELDS and v})
    try:
        yield
    finally:
        _job_fields.reset(token)


class JobFields(logging.Filter):
    """Copy the current job's fields onto each record (for the formatters)."""

    def filter(self, record: logging.LogRecord) -> bool:
        for key, value in (_job_fields.get() or {}).items():
            setattr(record, key, value)
        return True


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "time": self.formatTime(record, "%Y-%m-%dT%H:%M:%S"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key in JOB_FIELDS:
            value = getattr(record, key, None)
            if value:
                entry[key] = value
        if record.exc_info or record.exc_text:
            entry["exception"] = record.exc_text or self.formatException(record.exc_info)  # type: ignore[arg-type]
        return json.dumps(entry, ensure_ascii=False)


class NoVoiceWarnings(logging.Filter):
    """discord.py warns that PyNaCl / davey are missing "so voice will NOT be supported":
    the bot has no voice, so the warning is only noise at start-up."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "voice will NOT be supported" not in str(record.msg)


_NO_VOICE_WARNINGS = NoVoiceWarnings()


def setup_logging(level: str, fmt: str, secrets: Iterable[str]) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.addFilter(SecretFilter(secrets))
    handler.addFilter(JobFields())
    if fmt == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)-7s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    for noisy in ("httpx", "httpcore", "aiosqlite", "alembic"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, root.level))
    logging.getLogger("discord.client").addFilter(_NO_VOICE_WARNINGS)  # once, however often
