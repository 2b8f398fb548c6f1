"""The agent's log output: text for people, JSON lines for log pipelines, both with ISO-8601 UTC
timestamps that carry the date.

Log calls say what they are about through ``extra`` (``deployment``, ``reason``, a download's
``url``, ``bytes``, ``seconds``, ``bytesPerSecond``); the handler adds the ``site`` of this agent.
The JSON form puts each of these in its own field, so a pipeline can filter on them without
parsing the message."""

from __future__ import annotations

import json
import logging
import sys
from datetime import UTC, datetime
from typing import TextIO

LEVELS = ("debug", "info", "warning", "error")
FORMATS = ("text", "json")
FIELDS = ("site", "deployment", "reason", "url", "bytes", "seconds", "bytesPerSecond")
QUIET_LIBRARIES = ("httpx", "httpcore")  # their INFO lines repeat every request the agent makes
HANDLER_NAME = "reconciler"

_live_progress = False


def configure_logging(level: str = "info", fmt: str = "text", site: str | None = None,
                      stream: TextIO | None = None) -> None:
    """Log ``fmt`` to ``stream`` (stderr) from ``level`` on; called again, replaces what it set up.
    Like logging.basicConfig, it leaves a root logger that others configured (a test harness) alone."""
    global _live_progress
    root = logging.getLogger()
    ours = [handler for handler in root.handlers if handler.get_name() == HANDLER_NAME]
    if root.handlers and not ours:
        return
    for old in ours:
        root.removeHandler(old)
    stream = stream or sys.stderr
    handler = logging.StreamHandler(stream)
    handler.set_name(HANDLER_NAME)
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    handler.addFilter(_SiteFilter(site))
    root.addHandler(handler)
    root.setLevel(level.upper())
    for name in QUIET_LIBRARIES:
        logging.getLogger(name).setLevel(logging.WARNING)
    _live_progress = fmt == "text" and _is_terminal(stream)


def live_progress() -> bool:
    """Whether a download may draw a progress line: text logs going to a terminal."""
    return _live_progress


def timestamp(record: logging.LogRecord) -> str:
    return datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


class TextFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        line = f"{timestamp(record)} {record.levelname:<7} {record.getMessage()}"
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        return line


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        document = {"time": timestamp(record), "level": record.levelname, "logger": record.name}
        document |= {name: getattr(record, name) for name in FIELDS if getattr(record, name, None) is not None}
        document["message"] = record.getMessage()
        if record.exc_info:
            document["exception"] = self.formatException(record.exc_info)
        return json.dumps(document, default=str)


class _SiteFilter(logging.Filter):
    def __init__(self, site: str | None):
        super().__init__()
        self._site = site

    def filter(self, record: logging.LogRecord) -> bool:
        if self._site is not None and getattr(record, "site", None) is None:
            record.site = self._site
        return True


def _is_terminal(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False
