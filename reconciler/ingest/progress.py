"""What a download tells the operator: its URL, size, duration and rate when it ends, a line every
few seconds in the logs while a long one runs (a live line instead when text logs go to a
terminal), and how far it got when a stop cut it short. The bytes also go to the agent's metrics."""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Callable
from urllib.parse import urlsplit

from reconciler.errors import Cancelled
from reconciler.ingest.httpsource import shown_url
from reconciler.logs import live_progress

log = logging.getLogger("reconciler.download")

LOG_EVERY = 5.0  # seconds between progress lines in the logs
DRAW_EVERY = 0.25  # seconds between redraws of the live line


class DownloadProgress:
    """Fed the bytes received so far (``update``), which may fall back to 0 when a source cannot
    resume; ``begin`` says how many a kept part file already held, ``left`` how many the next
    ingest will start from when this one fails for a reason that may pass."""

    def __init__(self, uri: str, total: int, count_bytes: Callable[[int], None] | None = None,
                 clock: Callable[[], float] = time.monotonic):
        self.url = shown_url(uri) if urlsplit(uri).scheme.lower() in ("http", "https") else uri
        self.total = total
        self._count_bytes = count_bytes
        self._clock = clock
        self._started = clock()
        self._kept = 0
        self._received = 0
        self._left = 0  # bytes a failed ingest leaves for the next one
        self._fresh = 0  # received in this run
        self._uncounted = 0  # fresh bytes not yet handed to the metrics
        self._live = live_progress()
        self._next = self._started + (DRAW_EVERY if self._live else LOG_EVERY)

    def begin(self, kept: int) -> None:
        self._kept = self._received = kept
        if kept:
            log.info("resuming %s at %s of %s", self.url, size_text(kept), size_text(self.total), extra=self._fields())

    def left(self, kept: int) -> None:
        self._left = kept

    def update(self, received: int) -> None:
        if received > self._received:
            self._fresh += received - self._received
            self._uncounted += received - self._received
        self._received = received
        now = self._clock()
        if now < self._next:
            return
        self._flush_count()
        if self._live:
            self._draw(now)
            self._next = now + DRAW_EVERY
        else:
            log.info("downloading %s: %s", self.url, self._so_far(now), extra=self._fields())
            self._next = now + LOG_EVERY

    def __enter__(self) -> DownloadProgress:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: object) -> None:
        self._flush_count()
        if self._live:
            sys.stderr.write("\r\x1b[K")
            sys.stderr.flush()
        seconds = self._clock() - self._started
        if exc is None:
            log.info("fetched %s: %s in %.1fs (%s/s)%s", self.url, size_text(self.total), seconds,
                     size_text(self._rate(seconds)), f", resumed at {size_text(self._kept)}" if self._kept else "",
                     extra=self._fields(seconds))
        elif isinstance(exc, Cancelled):
            log.info("download of %s stopped at %s of %s; %s", self.url, size_text(self._received),
                     size_text(self.total), self._next_start(), extra=self._fields(seconds))

    def _next_start(self) -> str:
        if self._left:
            return f"the part file is kept, the next start resumes at {size_text(self._left)}"
        return "nothing usable is kept, the next start downloads from byte 0"

    def _fields(self, seconds: float | None = None) -> dict[str, object]:
        fields: dict[str, object] = {"url": self.url, "bytes": self._fresh}
        if seconds is not None:
            fields |= {"seconds": round(seconds, 3), "bytesPerSecond": self._rate(seconds)}
        return fields

    def _rate(self, seconds: float) -> int:
        return int(self._fresh / seconds) if seconds > 0 else 0

    def _so_far(self, now: float) -> str:
        percent = 100 * self._received / self.total if self.total else 100
        return (f"{size_text(self._received)} of {size_text(self.total)} ({percent:.0f}%) "
                f"at {size_text(self._rate(now - self._started))}/s")

    def _draw(self, now: float) -> None:
        sys.stderr.write(f"\r\x1b[K{self.url}: {self._so_far(now)}")
        sys.stderr.flush()

    def _flush_count(self) -> None:
        if self._uncounted and self._count_bytes is not None:
            self._count_bytes(self._uncounted)
        self._uncounted = 0


def size_text(size: float) -> str:
    for unit in ("B", "KiB", "MiB"):
        if size < 1024:
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{size:.2f} GiB"
