"""systemd's watchdog: when to ping (a fresh heartbeat), whose watchdog it is (WATCHDOG_PID), and
that a stale heartbeat silences the pings so systemd restarts a hung agent."""

from __future__ import annotations

import socket
import threading
from pathlib import Path

import pytest

from reconciler.agent.sdnotify import alive, keep_watchdog, watchdog_period
from reconciler.agent.telemetry import SiteTelemetry


@pytest.mark.parametrize(("last_beat", "now", "bound", "expected"), [
    (100.0, 100.0, 60.0, True),     # just beat
    (100.0, 160.0, 60.0, True),     # exactly at the bound
    (100.0, 160.5, 60.0, False),    # past it: hung
    (100.0, 5000.0, 660.0, False),  # long silent
])
def test_ping_only_while_the_heartbeat_is_fresh(last_beat: float, now: float, bound: float, expected: bool) -> None:
    assert alive(last_beat, now, bound) is expected


@pytest.mark.parametrize(("environ", "expected"), [
    ({}, None),
    ({"WATCHDOG_USEC": "0"}, None),
    ({"WATCHDOG_USEC": "soon"}, None),
    ({"WATCHDOG_USEC": "300000000"}, 300.0),
    ({"WATCHDOG_USEC": "1000000", "WATCHDOG_PID": "42"}, 1.0),  # ours
    ({"WATCHDOG_USEC": "1000000", "WATCHDOG_PID": "43"}, None),  # another process's
])
def test_the_period_is_systemds_and_only_for_its_pid(environ: dict[str, str], expected: float | None) -> None:
    assert watchdog_period(environ, pid=42) == expected


def test_no_watchdog_asked_means_no_thread() -> None:
    assert keep_watchdog(lambda: 0.0, 60.0, threading.Event(), environ={}) is None


def test_a_stale_heartbeat_stops_the_pings(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = str(tmp_path / "notify.sock")
    now = [0.0]
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(path)
        sock.settimeout(10)
        stop = threading.Event()
        thread = keep_watchdog(lambda: 0.0, 5.0, stop, clock=lambda: now[0],
                               environ={"NOTIFY_SOCKET": path, "WATCHDOG_USEC": "100000"})
        assert thread is not None
        try:
            assert sock.recv(64) == b"WATCHDOG=1"  # fresh: pings
            now[0] = 6.0  # the heartbeat is now older than the bound
            sock.settimeout(0.3)  # six ping periods
            for _ in range(2):  # at most one ping decided before the clock moved may still arrive
                try:
                    sock.recv(64)
                except TimeoutError:
                    break
            with pytest.raises(TimeoutError):
                sock.recv(64)  # silent
        finally:
            stop.set()
            thread.join(5)
    assert "WatchdogWithheld" in {getattr(record, "reason", None) for record in caplog.records}


def test_downloaded_bytes_are_a_heartbeat() -> None:
    telemetry = SiteTelemetry("store-1")
    telemetry.last_beat = 0.0
    telemetry.count_bytes(4096)
    assert telemetry.last_beat > 0.0
