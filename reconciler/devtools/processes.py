"""Local processes for the demo, tests and benchmarks: loopback ports and orderly shutdown."""

from __future__ import annotations

import socket
import subprocess
from collections.abc import Iterable


def free_port() -> int:
    """A port on 127.0.0.1 that nobody listens on right now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


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
