"""systemd's readiness protocol (sd_notify(3)): one datagram such as ``READY=1`` to the unix socket
named by $NOTIFY_SOCKET, which systemd sets for a ``Type=notify`` service. Outside systemd the
variable is unset and this does nothing. Written out rather than a dependency: the protocol is
these few lines, and python-systemd needs libsystemd's headers to build."""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import Mapping

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
