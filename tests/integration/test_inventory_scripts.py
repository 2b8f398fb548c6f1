"""Site-local inventory executables, run for real: their key=value facts kept, each bad line,
failing, hanging or flooding executable refused and said, and nothing left running."""

from __future__ import annotations

import os
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest

from reconciler.agent import inventory
from reconciler.agent.inventory import collect, onnxruntime_facts, run_inventory_dir

T0 = datetime(2026, 12, 7, 6, 0, tzinfo=UTC)


def script(directory: Path, name: str, body: str, executable: bool = True) -> Path:
    path = directory / name
    path.write_text("#!/bin/sh\n" + body)
    path.chmod(0o755 if executable else 0o644)
    return path


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"


@pytest.fixture
def scripts(tmp_path: Path) -> Path:
    directory = tmp_path / "inventory.d"
    directory.mkdir()
    return directory


def test_facts_of_every_executable_are_kept_and_bad_lines_refused_one_by_one(scripts: Path) -> None:
    script(scripts, "10-hardware", "echo board=jetson-orin\necho 'not a fact'\necho rack=b2\n")
    script(scripts, "20-network", "echo uplink=lte\necho rack=c3\n")
    script(scripts, "30-notes.txt", "echo secret=1\n", executable=False)  # not executable: not run
    script(scripts, ".hidden", "echo hidden=1\n")
    local, refused = run_inventory_dir(scripts)
    assert local == {"board": "jetson-orin", "rack": "b2", "uplink": "lte"}
    assert refused == ["10-hardware line 2: not key=value",
                       "20-network: rack already given by another executable, the first kept"]


@pytest.mark.parametrize(("body", "problem"), [
    ("echo partial=1\nexit 3\n", "exited with 3"),
    ("echo early=1\nsleep 30\n", "ran longer than 0.5 s"),
    ("sleep 30 &\necho bg=$!\nexit 0\n", "ran longer than 0.5 s"),  # its child holds the pipe open
    ("yes flood=1\n", "printed more than 16384 bytes"),
])
def test_a_failing_hanging_or_flooding_executable_is_refused_and_killed(
        scripts: Path, monkeypatch: pytest.MonkeyPatch, body: str, problem: str) -> None:
    monkeypatch.setattr(inventory, "SCRIPT_TIMEOUT", 0.5)
    script(scripts, "bad", body)
    script(scripts, "good", "echo ok=1\n")
    started = time.monotonic()
    local, refused = run_inventory_dir(scripts)
    assert time.monotonic() - started < 10
    assert (local, refused) == ({"ok": "1"}, [f"bad: {problem}"])


@pytest.mark.parametrize("ending", ["sleep 30\n", "exit 0\n"])  # hangs, or leaves a daemon behind
def test_nothing_an_executable_started_is_left_running(scripts: Path, monkeypatch: pytest.MonkeyPatch,
                                                       tmp_path: Path, ending: str) -> None:
    monkeypatch.setattr(inventory, "SCRIPT_TIMEOUT", 0.5)
    pids = tmp_path / "pids"
    script(scripts, "starts", f"sleep 30 >/dev/null 2>&1 &\necho $! > {pids}\n{ending}")
    run_inventory_dir(scripts)
    background = int(pids.read_text())
    deadline = time.monotonic() + 5
    while alive(background) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not alive(background)


def test_an_unreadable_directory_is_said_not_raised(tmp_path: Path) -> None:
    assert run_inventory_dir(tmp_path / "missing") == ({}, [f"{tmp_path / 'missing'}: cannot list: No such file or directory"])


def test_the_machine_is_described_with_what_its_onnxruntime_has(scripts: Path) -> None:
    import onnxruntime

    script(scripts, "site", "echo cabinet=7\n")
    facts = collect(scripts.parent, scripts, T0)
    assert facts.onnxruntime == onnxruntime.__version__
    assert facts.executionProviders == onnxruntime.get_available_providers()
    assert facts.cpus == os.cpu_count() and facts.arch == os.uname().machine and facts.kernel == os.uname().release
    assert facts.memoryMiB and facts.memoryMiB > 0 and facts.diskFreeMiB is not None
    assert facts.local == {"cabinet": "7"} and facts.collectedAt == T0


def test_an_agent_that_does_not_serve_asks_a_child_what_onnxruntime_has(monkeypatch: pytest.MonkeyPatch) -> None:
    import onnxruntime

    expected = (onnxruntime.__version__, onnxruntime.get_available_providers())
    monkeypatch.delitem(sys.modules, "onnxruntime")  # as in an agent process that never served
    assert onnxruntime_facts() == expected
    assert "onnxruntime" not in sys.modules
