"""systemd's readiness protocol (sd_notify(3)): one datagram such as ``READY=1`` to the unix socket
named by $NOTIFY_SOCKET, which systemd sets for a ``Type=notify`` service. Outside systemd the
variable is unset and this does nothing. Written out rather than a dependency: the protocol is
these few lines, and python-systemd needs libsystemd's headers to build.

The watchdog (``WatchdogSec=``): ``WATCHDOG=1`` every half period from a daemon thread, but only
while the agent shows it is alive (a heartbeat from each finished reconcile and each downloaded chunk), so
a hung agent falls silent and systemd restarts it, while a long reconcile that still moves does not."""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from collections.abc import Callable, Mapping

from reconciler import reasons

log = logging.getLogger("reconciler.agent")


def notify(message: str, environ: Mapping[str, str] = os.environ) -> bool:
    """Send ``message`` (``READY=1``, ``STOPPING=1``, ``STATUS=...``); whether there was a socket
    to send it to. A socket that refuses it is logged, never raised: the agent serves regardless."""
    address = environ.get("NOTIFY_SOCKET")
    if not address:
        return False
    if address.startswith("@"):  # an abstract socket: a leading NUL byte instead of the '@'
        address = "\0" + address[1:]
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
            sock.connect(address)
            sock.sendall(message.encode())
    except OSError as exc:
        log.warning("cannot tell systemd %s: %s", message, exc, extra={"reason": reasons.NotifyFailed})
        return False
    return True


# How long the agent may go without a heartbeat and still count as alive: one loop turn (the poll
# interval, jitter included) plus the longest step that reports no progress (a git fetch, a
# validation child, an activation), which its own deadlines keep well under ten minutes.
QUIET_STEP_SECONDS = 600.0


def watchdog_period(environ: Mapping[str, str] = os.environ, pid: int | None = None) -> float | None:
    """systemd's watchdog period in seconds, or None when it is off or meant for another process
    (``WATCHDOG_PID`` set to a pid not ours: sd_watchdog_enabled(3))."""
    usec, owner = environ.get("WATCHDOG_USEC", ""), environ.get("WATCHDOG_PID")
    if not usec.isdigit() or int(usec) == 0:
        return None
    if owner is not None and owner != str(os.getpid() if pid is None else pid):
        return None
    return int(usec) / 1e6


def alive(last_beat: float, now: float, quiet_bound: float) -> bool:
    """Whether to ping: the last heartbeat is no older than the bound (``now`` passed in)."""
    return now - last_beat <= quiet_bound


def keep_watchdog(last_beat: Callable[[], float], quiet_bound: float, stop: threading.Event,
                  environ: Mapping[str, str] = os.environ,
                  clock: Callable[[], float] = time.monotonic) -> threading.Thread | None:
    """Ping every half watchdog period while ``last_beat()`` (a ``clock`` time) is fresh, until
    ``stop``; None when systemd asked for no watchdog."""
    period = watchdog_period(environ)
    if period is None:
        return None

    def ping() -> None:
        while not stop.wait(period / 2):
            if alive(last_beat(), clock(), quiet_bound):
                notify("WATCHDOG=1", environ)
            else:
                log.error("no heartbeat for %.0f s: not pinging systemd's watchdog", clock() - last_beat(),
                          extra={"reason": reasons.WatchdogWithheld})

    thread = threading.Thread(target=ping, name="sd-watchdog", daemon=True)
    thread.start()
    return thread
