"""What an operator sees: JSON or text logs with dated UTC timestamps and the site, deployment and
reason as fields; the reconcile metrics on /metrics; the site's record and plan on /v1/status;
readiness that waits for every planned deployment; onnxruntime's words in our log, not on stderr."""

from __future__ import annotations

import io
import json
import logging
import re
import signal
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import httpx
import numpy as np
import onnx
import pytest
from fleet_versions import publish_version
from onnx import TensorProto, helper, numpy_helper
from prometheus_client.parser import text_string_to_metric_families

from reconciler.agent.telemetry import SiteTelemetry
from reconciler.agent.wiring import build_agent
from reconciler.devtools.processes import free_port, stop_all
from reconciler.devtools.testing import EXAMPLE, git
from reconciler.errors import Cancelled, Stalled
from reconciler.ingest.progress import DownloadProgress
from reconciler.logs import JsonFormatter, TextFormatter, configure_logging
from reconciler.manifests.models import ModelInterface
from reconciler.runtime.registry import ModelRegistry
from reconciler.runtime.validation import run_validation
from reconciler.settings import SiteConfig
from reconciler.status.record import DeploymentStatus, StatusRecord

SITE = "store-boston-01"
TIMEOUT = 60
ISO_UTC = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")


# --- log lines -----------------------------------------------------------------------------------

def log_line(formatter: logging.Formatter, site: str | None, **extra: object) -> str:
    stream = io.StringIO()
    logger = logging.getLogger("test.telemetry.line")
    logger.propagate = False
    handler = logging.StreamHandler(stream)
    handler.setFormatter(formatter)
    if site:
        handler.addFilter(lambda record: setattr(record, "site", site) or True)
    logger.addHandler(handler)
    try:
        logger.warning("deploy %s failed", "d", extra=extra)
    finally:
        logger.removeHandler(handler)
    return stream.getvalue().strip()


@pytest.mark.parametrize("extra, fields", [
    ({}, {"site": SITE}),
    ({"deployment": "d", "reason": "ValidationFailed"}, {"site": SITE, "deployment": "d", "reason": "ValidationFailed"}),
    ({"url": "http://h/m.onnx", "bytes": 10, "seconds": 0.5, "bytesPerSecond": 20},
     {"site": SITE, "url": "http://h/m.onnx", "bytes": 10, "seconds": 0.5, "bytesPerSecond": 20}),
])
def test_json_lines_carry_time_level_and_the_fields_given(extra, fields):
    document = json.loads(log_line(JsonFormatter(), SITE, **extra))
    assert ISO_UTC.match(document.pop("time"))
    assert document == {"level": "WARNING", "logger": "test.telemetry.line", **fields, "message": "deploy d failed"}


def test_text_lines_start_with_a_dated_utc_timestamp_and_the_level():
    stamp, level, message = log_line(TextFormatter(), None).split(None, 2)
    assert ISO_UTC.match(stamp) and level == "WARNING" and message == "deploy d failed"
    assert abs(datetime.fromisoformat(stamp.replace("Z", "+00:00")) - datetime.now(UTC)).total_seconds() < 60


def test_configuring_leaves_a_root_logger_someone_else_set_up_alone():
    before = list(logging.getLogger().handlers)
    assert before  # pytest's own capture handlers
    configure_logging("debug", "json", SITE, stream=io.StringIO())
    assert logging.getLogger().handlers == before


# --- metrics and status, by unit ---------------------------------------------------------------------

def record(state: str, commit: str = "c1") -> StatusRecord:
    now = datetime(2026, 1, 1, tzinfo=UTC)
    deployment = DeploymentStatus(model="m", state=state, reason="Converged" if state == "success" else "Failed", since=now)
    return StatusRecord(site=SITE, observedCommit=commit, appliedCommit="c0", state=state, reason=deployment.reason,
                        deployments={"d": deployment}, agentVersion="t", writtenAt=now)


def samples(telemetry: SiteTelemetry) -> dict[tuple[str, tuple], float]:
    return {(s.name, tuple(sorted(s.labels.items()))): s.value for family in telemetry.collect() for s in family.samples}


def test_the_last_success_moves_only_with_a_converged_site():
    clock = iter([100.0, 200.0, 300.0, 400.0]).__next__
    telemetry = SiteTelemetry(SITE, clock=clock)
    now = datetime.now(UTC)
    telemetry.reconciled(0.5, now, record("success"), None, None)  # clock 100
    telemetry.reconciled(0.1, now, None, None, None)  # unchanged since a success: 200
    telemetry.reconciled(0.2, now, record("failure", "c2"), None, None)  # not a success
    telemetry.reconciled(0.2, now, None, None, Cancelled("AgentStopping", "stopped"))  # stopped: not a success
    got = samples(telemetry)
    assert got[("reconciler_last_success_timestamp_seconds", ())] == 200.0
    assert got[("reconciler_deployment_condition", (("deployment", "d"), ("reason", "Failed"), ("state", "failure")))] == 1
    assert got[("reconciler_observed_commit_info", (("commit", "c2"),))] == 1
    counts = {labels: value for (name, labels), value in got.items() if name == "reconciler_reconcile_duration_seconds_count"}
    assert counts == {(("result", r),): 1 for r in ("success", "unchanged", "failure", "stopped")}


def test_fetch_errors_are_counted_by_reason():
    telemetry = SiteTelemetry(SITE)
    for reason in ("ArtifactNotFound", "ArtifactNotFound", "ArtifactStalled"):
        telemetry.fetch_failed(reason)
    telemetry.count_bytes(5)
    telemetry.count_bytes(7)
    got = samples(telemetry)
    assert got[("reconciler_fetch_errors_total", (("reason", "ArtifactNotFound"),))] == 2
    assert got[("reconciler_fetch_errors_total", (("reason", "ArtifactStalled"),))] == 1
    assert got[("reconciler_download_bytes_total", ())] == 12


# --- a real agent process -----------------------------------------------------------------------

def get(port: int, path: str) -> httpx.Response:
    return httpx.get(f"http://127.0.0.1:{port}{path}", timeout=5)


def test_one_reconcile_shows_in_metrics_status_readiness_and_json_logs(fleet, tmp_path):
    port, log = free_port(), tmp_path / "agent.log"
    agent = subprocess.Popen(
        [sys.executable, "-m", "reconciler", "run", "--repo", fleet.url, "--site", SITE, "--state", str(tmp_path / "s"),
         "--listen", f"127.0.0.1:{port}", "--interval", "1h", "--trust-key", str(EXAMPLE / "keys" / "demo.pub"),
         "--log-format", "json", "--log-level", "debug"],
        stdout=subprocess.DEVNULL, stderr=log.open("wb"))
    try:
        deadline = time.monotonic() + TIMEOUT
        while True:
            try:
                status = get(port, "/v1/status").json()
            except httpx.TransportError:
                status = {"lastReconcile": None}
            if status["lastReconcile"] is not None or agent.poll() is not None or time.monotonic() > deadline:
                break
            time.sleep(0.1)
        metrics = get(port, "/metrics").text
        ready = get(port, "/v2/health/ready")
        agent.send_signal(signal.SIGTERM)
        assert agent.wait(timeout=TIMEOUT) == 0
    finally:
        stop_all([agent])
    head = git("rev-parse", "HEAD", cwd=fleet.clone).strip()

    assert status["site"] == SITE and status["lastReconcile"]["result"] == "success", log.read_text()
    assert status["record"]["observedCommit"] == head and status["record"]["state"] == "success"
    assert status["plan"]["commit"] == head
    assert [a["deployment"] for a in status["plan"]["actions"]] == ["demand-forecast"]
    assert (ready.status_code, ready.json()) == (200, {"ready": True})

    families = {family.name: family for family in text_string_to_metric_families(metrics)}
    reconciles = families["reconciler_reconcile_duration_seconds"]
    assert reconciles.type == "histogram"
    assert {s.labels["result"]: s.value for s in reconciles.samples if s.name.endswith("_count")} == {"success": 1}
    condition = {s.labels["deployment"]: (s.labels["state"], s.labels["reason"])
                 for s in families["reconciler_deployment_condition"].samples}
    assert condition == {"demand-forecast": ("success", "Activated")}
    assert [s.labels for s in families["reconciler_site_condition"].samples] == [{"state": "success", "reason": "Converged"}]
    assert [s.labels["commit"] for s in families["reconciler_observed_commit_info"].samples] == [head]
    assert [s.labels["commit"] for s in families["reconciler_applied_commit_info"].samples] == [head]
    last_success = families["reconciler_last_success_timestamp_seconds"].samples[0].value
    assert abs(last_success - time.time()) < TIMEOUT
    downloaded = families["reconciler_download_bytes"].samples[0].value
    assert downloaded == (EXAMPLE / "models" / "demand-forecast" / "1.0.0" / "model.onnx").stat().st_size
    assert "reconciler_fetch_errors" in families and "reconciler_inference_requests" in families

    lines = [json.loads(line) for line in log.read_text().splitlines()]  # every line is JSON
    assert all(ISO_UTC.match(line["time"]) and line["site"] == SITE and line["level"] for line in lines)
    deployed = next(line for line in lines if "deploy demand-forecast" in line["message"])
    assert (deployed["level"], deployed["deployment"], deployed["reason"]) == ("INFO", "demand-forecast", "Activated")
    fetched = next(line for line in lines if line["message"].startswith("fetched"))
    assert fetched["bytes"] == downloaded and fetched["url"].endswith("model.onnx") and "seconds" in fetched
    assert any("received SIGTERM" in line["message"] for line in lines)
    assert lines[-1]["message"] == f"{SITE}: stopped"


# --- readiness ------------------------------------------------------------------------------------

def test_not_ready_until_every_planned_deployment_is_served(fleet, tmp_path):
    registry = ModelRegistry()
    config = SiteConfig(site=SITE, repo=fleet.url, state=tmp_path / "state", interval="1s",
                        trust_keys=[EXAMPLE / "keys" / "demo.pub"])
    agent = build_agent(config, registry)
    agent.start()
    try:
        assert not registry.ready()  # nothing loaded yet
        fleet.bump("deployments/demand-forecast.yaml", "1.0.0", "9.9.9")  # a version the model does not have
        fleet.push("ask for a version that does not exist")
        unservable = agent.reconcile_once()
        assert unservable.record.deployments["demand-forecast"].reason == "VersionNotFound"
        assert not registry.ready() and registry.deployments() == []

        fleet.bump("deployments/demand-forecast.yaml", "9.9.9", "1.0.0")
        fleet.push("back to 1.0.0")
        agent.reconcile_once()
        assert registry.ready() and registry.get("demand-forecast").version == "1.0.0"
    finally:
        agent.stop()


# --- onnxruntime's own logging ----------------------------------------------------------------------

def model_with_an_unused_initializer(path: Path) -> Path:
    graph = helper.make_graph(
        [helper.make_node("Identity", ["x"], ["y"])], "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])],
        [numpy_helper.from_array(np.zeros(3, np.float32), "unused")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    path.write_bytes(model.SerializeToString())
    return path


INTERFACE = ModelInterface(inputs=[{"name": "x", "dtype": "float32", "shape": [1]}],
                           outputs=[{"name": "y", "dtype": "float32", "shape": [1]}])


def test_onnxruntime_warnings_come_back_from_validation_as_plain_text(tmp_path):
    report = run_validation(model_with_an_unused_initializer(tmp_path / "m.onnx"), INTERFACE, [])
    assert report.warnings == ("Removing initializer 'unused'. It is not used by any node and should be removed "
                               "from the model.",)


def test_the_serving_process_lets_onnxruntime_print_nothing(tmp_path, capfd):
    path = model_with_an_unused_initializer(tmp_path / "m.onnx")
    ModelRegistry().activate("m", "m", "1", path, INTERFACE)
    assert capfd.readouterr().err == ""


def test_a_model_that_fails_to_load_is_still_refused_clearly(tmp_path):
    path = tmp_path / "broken.onnx"
    path.write_bytes(b"not onnx")
    with pytest.raises(Stalled) as refused:
        run_validation(path, INTERFACE, [])
    assert refused.value.reason == "ModelLoadFailed"


# --- download progress ------------------------------------------------------------------------------

def test_a_long_download_logs_progress_every_few_seconds_and_its_rate_at_the_end(caplog):
    now = [0.0]
    counted: list[int] = []
    caplog.set_level(logging.INFO, logger="reconciler.download")
    with DownloadProgress("https://user:pw@h/m.onnx?sig=secret", 100 << 20, counted.append, clock=lambda: now[0]) as progress:
        progress.begin(20 << 20)
        for second in range(1, 13):
            now[0] = float(second)
            progress.update((20 << 20) + second * (5 << 20))
        now[0] = 16.0
    messages = [r.getMessage() for r in caplog.records]
    assert messages[0] == "resuming https://h/m.onnx?… at 20.0 MiB of 100.0 MiB"
    assert messages[1:3] == ["downloading https://h/m.onnx?…: 45.0 MiB of 100.0 MiB (45%) at 5.0 MiB/s",
                             "downloading https://h/m.onnx?…: 70.0 MiB of 100.0 MiB (70%) at 5.0 MiB/s"]
    assert messages[3] == "fetched https://h/m.onnx?…: 100.0 MiB in 16.0s (3.8 MiB/s), resumed at 20.0 MiB"
    assert (caplog.records[3].bytes, caplog.records[3].seconds) == (60 << 20, 16.0)
    assert sum(counted) == 60 << 20 and len(counted) == 3  # the metric hears of the bytes at each line


@pytest.mark.parametrize(("left", "said"), [
    (10 << 20, "the part file is kept, the next start resumes at 10.0 MiB"),
    (0, "nothing usable is kept, the next start downloads from byte 0"),
])
def test_a_stopped_download_says_where_the_next_start_resumes(caplog, left, said):
    caplog.set_level(logging.INFO, logger="reconciler.download")
    with pytest.raises(Cancelled), DownloadProgress("models/m.onnx", 34 << 20, clock=lambda: 0.0) as progress:
        progress.update((10 << 20) + 300)
        progress.left(left)
        raise Cancelled("AgentStopping", "stopped")
    assert [r.getMessage() for r in caplog.records] == [f"download of models/m.onnx stopped at 10.0 MiB of 34.0 MiB; {said}"]


def test_the_web_server_logs_through_the_agents_handlers():
    from reconciler.runtime.server import RuntimeServer, build_app

    with RuntimeServer(build_app(ModelRegistry(), site=SITE)):
        for name in ("uvicorn", "uvicorn.error"):
            assert logging.getLogger(name).handlers == [] and logging.getLogger(name).propagate


def test_on_a_terminal_the_progress_is_one_line_drawn_over_and_cleared(monkeypatch, capsys, caplog):
    from reconciler.ingest import progress as progress_module

    monkeypatch.setattr(progress_module, "live_progress", lambda: True)
    now = [0.0]
    caplog.set_level(logging.INFO, logger="reconciler.download")
    with DownloadProgress("models/m.onnx", 4 << 20, clock=lambda: now[0]) as progress:
        progress.begin(0)
        for step in range(1, 5):
            now[0] = step * 0.5
            progress.update(step << 20)
    drawn = capsys.readouterr().err
    assert drawn.split("\r\x1b[K") == ["", "models/m.onnx: 1.0 MiB of 4.0 MiB (25%) at 2.0 MiB/s",
                                       "models/m.onnx: 2.0 MiB of 4.0 MiB (50%) at 2.0 MiB/s",
                                       "models/m.onnx: 3.0 MiB of 4.0 MiB (75%) at 2.0 MiB/s",
                                       "models/m.onnx: 4.0 MiB of 4.0 MiB (100%) at 2.0 MiB/s", ""]
    assert [r.getMessage() for r in caplog.records] == ["fetched models/m.onnx: 4.0 MiB in 2.0s (2.0 MiB/s)"]


def test_what_onnxruntime_says_about_a_new_version_is_logged_as_a_warning_of_its_deployment(fleet, tmp_path, caplog):
    model = onnx.load_from_string((EXAMPLE / "models" / "demand-forecast" / "1.0.0" / "model.onnx").read_bytes())
    model.graph.initializer.append(numpy_helper.from_array(np.zeros(3, np.float32), "unused"))
    publish_version(fleet, "1.0.1", model.SerializeToString())
    config = SiteConfig(site=SITE, repo=fleet.url, state=tmp_path / "state", trust_keys=[EXAMPLE / "keys" / "demo.pub"])
    agent = build_agent(config, ModelRegistry())
    agent.start()
    caplog.set_level(logging.WARNING)
    try:
        assert agent.reconcile_once().record.state == "success"
    finally:
        agent.stop()
    said = [r for r in caplog.records if getattr(r, "reason", None) == "OnnxRuntimeWarning"]
    assert [(r.levelname, r.deployment, r.getMessage()) for r in said] == [
        ("WARNING", "demand-forecast", "demand-forecast 1.0.1: onnxruntime: Removing initializer 'unused'. "
                                       "It is not used by any node and should be removed from the model.")]
