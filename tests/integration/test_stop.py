"""Stopping is prompt and safe: SIGTERM or Ctrl-C cut an in-flight download or validation short
(the part file kept), nothing is activated after the stop, and the agent exits 0. The process test
runs a real agent against a real git smart-HTTP remote and a throttled artifact server."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest
from fleet_versions import DEPLOYMENT, publish_version
from slow_server import SlowServer

from reconciler.cancel import CancelToken
from reconciler.devtools.processes import free_port, stop_all
from reconciler.devtools.testing import EXAMPLE, start_fleet_remote
from reconciler.errors import Cancelled
from reconciler.ingest import sink
from reconciler.ingest.artifacts import ArtifactStore
from reconciler.ingest.progress import size_text
from reconciler.manifests.models import Artifact, ModelInterface
from reconciler.runtime.validation import run_validation
from reconciler.settings import FetchLimits

SITE = "store-boston-01"
BIG = 40 << 20  # several chunks, most of them received before the stop
FAST = 34 << 20  # sent at full speed before the trickle: the part file then holds bytes to resume from
STOP_WITHIN = 2.0
TIMEOUT = 90


def padded_model(size: int) -> bytes:
    """demand-forecast 1.0.0 grown to ``size`` bytes by a doc_string (ModelProto field 6): the
    same answers, so its validation cases are 1.0.0's."""
    model = (EXAMPLE / "models" / DEPLOYMENT / "1.0.0" / "model.onnx").read_bytes()
    padding = size - len(model)
    return model + b"\x32" + _varint(padding) + b"x" * padding  # field 6, length-delimited


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        out.append((n & 0x7F) | (0x80 if n > 0x7F else 0))
        n >>= 7
        if not n:
            return bytes(out)


def start_agent(fleet, state: Path, port: int, log: Path) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "reconciler", "run", "--repo", fleet.url, "--site", SITE, "--state", str(state),
         "--listen", f"127.0.0.1:{port}", "--interval", "300ms", "--trust-key", str(EXAMPLE / "keys" / "demo.pub")],
        stdout=log.open("ab"), stderr=subprocess.STDOUT)


def served_version(port: int) -> str | None:
    try:
        reply = httpx.get(f"http://127.0.0.1:{port}/v2/models/{DEPLOYMENT}", timeout=5)
    except httpx.TransportError:
        return None
    return reply.headers.get("x-model-version") if reply.status_code == 200 else None


def wait_for(what: str, check, process: subprocess.Popen, log: Path) -> None:
    deadline = time.monotonic() + TIMEOUT
    while not check():
        if process.poll() is not None or time.monotonic() > deadline:
            raise AssertionError(f"no {what}; agent log:\n{log.read_text()}")
        time.sleep(0.1)


def active_version(state: Path) -> str:
    return json.loads((state / "state.json").read_text())["deployments"][DEPLOYMENT]["active"]["version"]


def test_sigterm_mid_download_exits_at_once_and_the_next_start_resumes(tmp_path):
    fleet = start_fleet_remote(tmp_path)
    state, port, log = tmp_path / "state", free_port(), tmp_path / "agent.log"
    body = padded_model(BIG)
    digest_hex = hashlib.sha256(body).hexdigest()
    agents: list[subprocess.Popen] = []
    with SlowServer(body, FAST) as server:
        try:
            agents.append(start_agent(fleet, state, port, log))
            wait_for("1.0.0 served", lambda: served_version(port) == "1.0.0", agents[0], log)
            publish_version(fleet, "1.0.1", body, server.url)
            wait_for("download in its slow part", server.throttling.is_set, agents[0], log)
            time.sleep(0.3)  # the agent blocks in a read of the trickle

            asked = time.monotonic()
            agents[0].send_signal(signal.SIGTERM)
            code = agents[0].wait(timeout=TIMEOUT)
            took = time.monotonic() - asked

            assert code == 0, log.read_text()
            assert took < STOP_WITHIN, f"the agent took {took:.1f}s to stop:\n{log.read_text()}"
            text = log.read_text()
            assert "received SIGTERM" in text and "stopped at" in text and "the part file is kept" in text
            assert active_version(state) == "1.0.0"
            part = state / "blobs" / "tmp" / f"{digest_hex}.part"
            assert part.stat().st_size > 0
            assert not (state / "blobs" / "sha256" / digest_hex).exists()

            agents.append(start_agent(fleet, state, port, log))
            wait_for("the download resumed", lambda: len(server.starts) >= 2, agents[1], log)
            assert served_version(port) == "1.0.0"  # the last good state, while 1.0.1 comes in
            server.gate.set()
            wait_for("1.0.1 served", lambda: served_version(port) == "1.0.1", agents[1], log)
        finally:
            stop_all(agents, grace=10)
            fleet.server.stop()
    # Everything received before the stop is kept (the trickle adds some bytes after FAST): within a chunk.
    assert server.starts[0] == 0 and FAST - sink.CHUNK_SIZE <= server.starts[1] < BIG
    assert active_version(state) == "1.0.1"
    assert "resuming" in log.read_text()


# --- the parts, in process ---------------------------------------------------------------------------

def stop_after(token: CancelToken, seconds: float, once: threading.Event | None = None) -> threading.Thread:
    """Set ``token`` ``seconds`` after ``once`` is set (or from now)."""
    def stop() -> None:
        if once is not None:
            once.wait(30)
        time.sleep(seconds)
        token.set(reason="test")

    thread = threading.Thread(target=stop)
    thread.start()
    return thread


def test_a_stop_cuts_a_blocked_read_short_and_keeps_the_part_file(tmp_path):
    body = b"".join(i.to_bytes(4, "big") for i in range(3 << 20))  # 12 MiB, not all throttled
    store = ArtifactStore(tmp_path)
    with SlowServer(body, fast=len(body) - (1 << 20), trickle=False) as server:
        artifact = Artifact(uri=server.url, digest="sha256:" + hashlib.sha256(body).hexdigest(), size=len(body),
                            signature={"uri": "x.sig"})
        token = CancelToken()
        # Timeouts far beyond the stop: only the stop can end this read.
        limits = FetchLimits(read_timeout=60, stall_timeout=60, retries=1)
        timer = stop_after(token, 0.3, once=server.throttling)
        with pytest.raises(Cancelled) as stopped:
            store.ingest(artifact, None, limits, token)
        took = time.monotonic() - server.throttling_since - 0.3
        timer.join()
    assert stopped.value.reason == "AgentStopping" and stopped.value.retry
    assert took < STOP_WITHIN
    assert (store.tmp / (artifact.digest.removeprefix("sha256:") + ".part")).stat().st_size > 0
    assert not store.has(artifact.digest)


MiB = 1 << 20
STOPS = {  # where the server goes silent and the stop comes, in a 34 MiB artifact of 4 MiB chunks
    "before the first full chunk": int(1.5 * MiB),
    "mid-chunk": int(10.3 * MiB),
    "at a chunk boundary, after several": 28 * MiB,
    "mid-chunk, after several": int(28.4 * MiB),
}


@pytest.mark.parametrize("mode", ["direct", "buffered"])
@pytest.mark.parametrize("at", STOPS.values(), ids=STOPS.keys())
def test_a_stop_keeps_every_byte_received_and_the_next_ingest_resumes_there(tmp_path, monkeypatch, caplog, at, mode):
    if mode == "buffered":
        monkeypatch.setattr(sink, "_O_DIRECT", 0)  # as on a file system that refuses direct I/O
    body = os.urandom(34 * MiB)
    assert sink.chunk_size_for(len(body) + 1) == sink.CHUNK_SIZE == 4 * MiB
    limits = FetchLimits(read_timeout=60, stall_timeout=60, retries=1)
    caplog.set_level(logging.INFO, logger="reconciler.download")
    with SlowServer(body, fast=at, trickle=False) as server:
        artifact = Artifact(uri=server.url, digest="sha256:" + hashlib.sha256(body).hexdigest(), size=len(body),
                            signature={"uri": "x.sig"})
        token = CancelToken()
        timer = stop_after(token, 0.3, once=server.throttling)
        with pytest.raises(Cancelled):
            ArtifactStore(tmp_path).ingest(artifact, None, limits, token)
        timer.join()
        server.gate.set()

        got = ArtifactStore(tmp_path).ingest(artifact, None, limits)  # as after a restart

    assert server.starts[0] == 0 and at - sink.CHUNK_SIZE <= server.starts[1] <= at
    assert server.starts[1] == at  # the silence came after exactly ``at`` bytes, all of them received
    assert server.sent == len(body)  # nothing was sent twice
    assert f"stopped at {size_text(at)}" in caplog.text
    assert f"the next start resumes at {size_text(at)}" in caplog.text
    assert f"resuming {server.url} at {size_text(at)}" in caplog.text
    assert got.fetched and got.path.read_bytes() == body and got.digest.raw == hashlib.sha256(body).digest()
    assert list((tmp_path / "blobs" / "tmp").glob("*")) == []


def test_a_stop_before_the_fetch_fetches_nothing(tmp_path):
    token = CancelToken()
    token.set(reason="test")
    artifact = Artifact(uri="http://127.0.0.1:9/never", digest="sha256:" + "0" * 64, size=10,
                        signature={"uri": "x.sig"})
    with pytest.raises(Cancelled, match="stopped \\(test\\)"):
        ArtifactStore(tmp_path).ingest(artifact, None, FetchLimits(), token)


HANGING_MODEL = b"not a model"  # the child is never asked to load it: the stop comes first


def test_a_stop_kills_the_validation_child_at_once(tmp_path, monkeypatch):
    from reconciler.runtime import validation

    sleeper = tmp_path / "sleeper.py"
    sleeper.write_text("import sys, time\nsys.stdin.read()\ntime.sleep(60)\n")
    monkeypatch.setattr(validation, "CHILD", sleeper)
    model = tmp_path / "model.onnx"
    model.write_bytes(HANGING_MODEL)
    interface = ModelInterface(inputs=[{"name": "x", "dtype": "float32", "shape": [1]}],
                               outputs=[{"name": "y", "dtype": "float32", "shape": [1]}])
    token = CancelToken()
    timer = stop_after(token, 0.3)
    started = time.monotonic()
    with pytest.raises(Cancelled):
        run_validation(model, interface, [], timeout=30, stop=token)
    timer.join()
    assert time.monotonic() - started < STOP_WITHIN


def test_a_stopped_once_run_exits_0_and_activates_nothing(tmp_path):
    fleet = start_fleet_remote(tmp_path)
    state, log = tmp_path / "state", tmp_path / "once.log"
    body = padded_model(BIG)
    started: list[subprocess.Popen] = []
    with SlowServer(body, FAST) as server:
        try:
            publish_version(fleet, "1.0.1", body, server.url)
            once = subprocess.Popen(
                [sys.executable, "-m", "reconciler", "run", "--once", "--repo", fleet.url, "--site", SITE,
                 "--state", str(state), "--trust-key", str(EXAMPLE / "keys" / "demo.pub")],
                stdout=subprocess.PIPE, stderr=log.open("wb"))
            started.append(once)
            wait_for("download in its slow part", server.throttling.is_set, once, log)
            once.send_signal(signal.SIGINT)
            out, _ = once.communicate(timeout=TIMEOUT)
        finally:
            stop_all(started)
            fleet.server.stop()
    assert once.returncode == 0, log.read_text()
    assert out == b""  # no status record: the reconcile did not finish
    saved = json.loads((state / "state.json").read_text()) if (state / "state.json").exists() else {}
    assert not saved.get("deployments")
    assert "received SIGINT" in log.read_text()


def test_a_stop_during_validation_activates_nothing_and_the_next_run_does(tmp_path, monkeypatch):
    from reconciler.agent import vetting
    from reconciler.agent.wiring import build_agent
    from reconciler.runtime.registry import ModelRegistry
    from reconciler.settings import SiteConfig

    fleet = start_fleet_remote(tmp_path)
    config = SiteConfig(site=SITE, repo=fleet.url, state=tmp_path / "state", trust_keys=[EXAMPLE / "keys" / "demo.pub"])
    registry, stop = ModelRegistry(), CancelToken()
    agent = build_agent(config, registry, stop=stop)
    agent.start()
    try:
        assert agent.reconcile_once().record.state == "success"
        fleet.bump(f"deployments/{DEPLOYMENT}.yaml", "1.0.0", "1.1.0")
        fleet.push("1.1.0")
        validate = vetting.run_validation

        def validated_then_stopped(*args, **kwargs):
            report = validate(*args, **kwargs)
            stop.set(reason="SIGTERM while validating")
            return report

        monkeypatch.setattr(vetting, "run_validation", validated_then_stopped)
        stopped = agent.reconcile_once()
        assert isinstance(stopped.error, Cancelled) and "activating demand-forecast 1.1.0" in stopped.error.message
        assert registry.get(DEPLOYMENT).version == "1.0.0" and active_version(config.state) == "1.0.0"
    finally:
        agent.stop()
        monkeypatch.undo()

    again = build_agent(config, registry)
    again.start()
    try:
        assert again.reconcile_once().record.state == "success"
        assert registry.get(DEPLOYMENT).version == "1.1.0" and active_version(config.state) == "1.1.0"
    finally:
        again.stop()
        fleet.server.stop()
