"""Local processes for the demo, tests and benchmarks: loopback ports and orderly shutdown."""

from __future__ import annotations

import socket
import subprocess
from collections.abc import Iterable

_GIVEN: set[int] = set()  # ports this process handed out: a caller may not have bound its port yet


def free_port() -> int:
    """A port on 127.0.0.1 that nobody listens on right now, and never one this process gave
    before: the kernel may hand the same free port to two probes in a row, and two agents started
    on it fail (seen: ListenFailed for one of twelve sites in a CI run)."""
    while True:
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
        if port not in _GIVEN:
            _GIVEN.add(port)
            return port


def stop_all(processes: Iterable[subprocess.Popen], grace: float = 15) -> None:
    """SIGTERM to all at once (agents shut down in parallel), then wait; SIGKILL what lingers."""
    processes = list(processes)
    for process in processes:
        process.terminate()
    for process in processes:
        try:
            process.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
