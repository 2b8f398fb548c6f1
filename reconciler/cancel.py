"""A stop asked of the agent (SIGTERM, Ctrl-C), seen promptly by the work in flight.

``CancelToken`` is the event the agent loop already waits on, plus callbacks that cut blocking
calls short when it is set: a socket a download reads from is shut down, so the read returns at
once instead of after its timeout. Work checks the token between chunks (``check``) and raises
``Cancelled``.

Signals are turned into ``set()`` on a watcher thread, never in the signal handler itself: the
handler interrupts the main thread anywhere, possibly while it holds the very lock ``Event.set``
takes (threading's locks are not reentrant)."""

from __future__ import annotations

import itertools
import logging
import os
import signal
import socket
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from reconciler import reasons
from reconciler.errors import Cancelled

log = logging.getLogger("reconciler.agent")

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


class CancelToken(threading.Event):
    def __init__(self) -> None:
        super().__init__()
        self.reason = ""
        self._callbacks: dict[int, Callable[[], None]] = {}
        self._ids = itertools.count()

    def set(self, reason: str = "a stop was asked") -> None:
        if not self.is_set():
            self.reason = reason
        super().set()
        for callback in list(self._callbacks.values()):
            callback()

    def check(self, what: str) -> None:
        """Raise Cancelled (saying ``what`` was cut short) once a stop was asked."""
        if self.is_set():
            raise Cancelled(reasons.AgentStopping, f"{what}: stopped ({self.reason})")

    @contextmanager
    def on_cancel(self, callback: Callable[[], None]) -> Iterator[None]:
        """Run ``callback`` when the token is set while the block runs (at once if it already is)."""
        key = next(self._ids)
        self._callbacks[key] = callback
        try:
            if self.is_set():
                callback()
            yield
        finally:
            del self._callbacks[key]


def shut_down(sock: socket.socket | None) -> None:
    """End every read and write on ``sock`` now, from any thread; the owner still closes it."""
    if sock is None:
        return
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass  # not connected (yet, or any more)


def cancel_on_signals(token: CancelToken, also: threading.Event | None = None) -> None:
    """SIGINT and SIGTERM set ``token`` (and ``also``, to wake a sleeping loop); a second one ends
    the process at once, for a stop that hangs."""
    read_end, write_end = os.pipe()
    os.set_blocking(write_end, False)
    for signum in STOP_SIGNALS:
        signal.signal(signum, lambda *_: None)  # the wakeup fd below does the work
    signal.set_wakeup_fd(write_end, warn_on_full_buffer=False)

    def watch() -> None:
        received = 0
        while data := os.read(read_end, 16):
            for signum in data:
                if signum not in STOP_SIGNALS:
                    continue
                received += 1
                name = signal.Signals(signum).name
                if received > 1:
                    log.warning("received %s again: exiting at once", name)
                    os._exit(128 + signum)
                log.info("received %s: stopping (work in flight is cut short, nothing more is activated)", name)
                token.set(f"received {name}")
                if also is not None:
                    also.set()

    threading.Thread(target=watch, name="stop-signals", daemon=True).start()
