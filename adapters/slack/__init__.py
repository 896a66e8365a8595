"""Slack: `/imagine`, thread replies that edit, mentions, buttons (see README_SECTION.md)."""

from adapters.slack.app import SlackAdapter, SlackStartError

__all__ = ["SlackAdapter", "SlackStartError"]
