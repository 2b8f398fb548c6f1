"""systemd's Type=notify readiness: a real `reconciler run` tells the socket in $NOTIFY_SOCKET
READY=1 once it serves, and STOPPING=1 when it stops; without the variable nothing is sent. With
$WATCHDOG_USEC it pings WATCHDOG=1 every half period while alive."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from reconciler.agent.sdnotify import notify
from reconciler.devtools.testing import EXAMPLE, copy_example, git


@pytest.fixture
def listener(tmp_path: Path) -> Iterator[tuple[socket.socket, str]]:
    path = str(tmp_path / "notify.sock")
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(path)
        sock.settimeout(120)
        yield sock, path


def test_a_message_goes_to_the_socket_systemd_names(listener: tuple[socket.socket, str]) -> None:
    sock, path = listener
    assert notify("STATUS=converged", {"NOTIFY_SOCKET": path})
    assert sock.recv(4096) == b"STATUS=converged"


def test_an_abstract_socket_name_is_understood() -> None:
    name = f"reconciler-test-{os.getpid()}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind("\0" + name)
        sock.settimeout(10)
        assert notify("READY=1", {"NOTIFY_SOCKET": "@" + name})
        assert sock.recv(4096) == b"READY=1"


def test_outside_systemd_nothing_is_sent_and_a_dead_socket_is_not_fatal(tmp_path: Path) -> None:
    assert not notify("READY=1", {})
    assert not notify("READY=1", {"NOTIFY_SOCKET": str(tmp_path / "nobody-listens")})


@contextmanager
def running_agent(tmp_path: Path, environ: dict[str, str]) -> Iterator[subprocess.Popen[bytes]]:
    """A real `reconciler run` of the example fleet, with systemd's variables in ``environ``; the
    test stops it with SIGTERM, and one that did not is killed."""
    repo = copy_example(tmp_path / "fleet", progressive=False)
    git("init", "-q", "-b", "main", cwd=repo)
    git("add", "-A", cwd=repo)
    git("commit", "-qm", "first", cwd=repo)
    agent = subprocess.Popen(
        [sys.executable, "-m", "reconciler", "run", "--repo", str(repo), "--site", "store-boston-01",
         "--state", str(tmp_path / "state"), "--trust-key", str(EXAMPLE / "keys" / "demo.pub"),
         "--listen", "127.0.0.1:0"],
        env={**os.environ, **environ}, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        yield agent
    finally:
        if agent.returncode is None:
            agent.kill()
            agent.communicate()


def _stopped_cleanly(agent: subprocess.Popen[bytes]) -> None:
    _, stderr = agent.communicate(timeout=60)
    assert agent.returncode == 0, stderr.decode()[-2000:]


def test_reconciler_run_says_ready_once_serving_and_stopping_on_sigterm(
        listener: tuple[socket.socket, str], tmp_path: Path) -> None:
    sock, path = listener
    with running_agent(tmp_path, {"NOTIFY_SOCKET": path}) as agent:
        assert sock.recv(4096) == b"READY=1"
        agent.send_signal(signal.SIGTERM)
        assert sock.recv(4096) == b"STOPPING=1"
        _stopped_cleanly(agent)


def test_reconciler_run_pings_the_watchdog_while_alive(listener: tuple[socket.socket, str], tmp_path: Path) -> None:
    sock, path = listener
    with running_agent(tmp_path, {"NOTIFY_SOCKET": path, "WATCHDOG_USEC": "1000000"}) as agent:
        assert sock.recv(4096) == b"READY=1"
        assert [sock.recv(4096) for _ in range(4)] == [b"WATCHDOG=1"] * 4  # every half second
        agent.send_signal(signal.SIGTERM)
        _stopped_cleanly(agent)
