"""Drift at real sites: a reference profile built by `reconciler profile`, signed and pinned in the
fleet repo, verified by real agents, counted by their real runtimes (onnxruntime, uvicorn) from
real HTTP requests, published in their status records and read back by `reconciler status --drift`."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
import time

import httpx
import numpy as np
import pytest

from reconciler.agent.config import SiteConfig
from reconciler.agent.wiring import build_agent, serving
from reconciler.cli.main import main
from reconciler.devtools.processes import free_port, stop_all
from reconciler.devtools.testing import EXAMPLE
from reconciler.trust import load_private_key, sign_digest

SHIFTED, REFERENCE = "store-boston-01", "store-berlin-01"
MODEL = "models/demand-forecast"
ROWS_PER_REQUEST = 100
REQUESTS_PER_WINDOW = 10  # the profile's default window: 1000 rows


def features(rng: np.random.Generator, rows: int, shift: float = 0.0) -> np.ndarray:
    """Sales, price index, promotion and holiday flags; ``shift`` moves the sales alone."""
    return np.column_stack([rng.normal(1.0 + shift, 0.3, rows), rng.normal(1.0, 0.1, rows),
                            rng.random(rows) < 0.2, rng.random(rows) < 0.05]).astype(np.float32)


@pytest.fixture
def profiled_fleet(fleet, tmp_path):
    """Version 1.0.0 of demand-forecast with a profile of 20 000 training rows, signed by the demo key."""
    data = tmp_path / "train.npy"
    np.save(data, features(np.random.default_rng(0), 20_000))
    profile = fleet.clone / MODEL / "1.0.0" / "profile.json"
    assert main(["profile", f"features={data}", "--model", "demand-forecast", "--version", "1.0.0",
                 "--repo", str(fleet.clone), "--onnx", str(fleet.clone / MODEL / "1.0.0" / "model.onnx"),
                 "-o", str(profile)]) == 0
    content = profile.read_bytes()
    key = load_private_key((EXAMPLE / "keys" / "demo.key").read_bytes())
    profile.with_suffix(".json.sig").write_bytes(sign_digest(key, hashlib.sha256(content).digest()))
    doc = fleet.model_doc("demand-forecast")
    doc["spec"]["versions"][0]["profile"] = {
        "uri": f"{MODEL}/1.0.0/profile.json", "digest": f"sha256:{hashlib.sha256(content).hexdigest()}",
        "size": len(content), "signature": {"uri": f"{MODEL}/1.0.0/profile.json.sig", "format": "cosign"}}
    fleet.write_model_doc("demand-forecast", doc)
    fleet.push("demand-forecast 1.0.0 names its reference profile")
    return fleet


class Site:
    def __init__(self, fleet, tmp_path, name: str):
        self.serving = serving(("127.0.0.1", 0), name)
        registry, metrics = self.serving.__enter__()
        config = SiteConfig(site=name, repo=fleet.url, state=tmp_path / name, interval="1s",
                            trustKeys=[EXAMPLE / "keys" / "demo.pub"])
        self.agent = build_agent(config, registry, metrics)
        self.agent.start()
        self.client = httpx.Client(base_url=f"http://127.0.0.1:{self.serving.server.port}", timeout=10)

    def window(self, rng: np.random.Generator, shift: float = 0.0) -> None:
        for _ in range(REQUESTS_PER_WINDOW):
            x = features(rng, ROWS_PER_REQUEST, shift)
            body = {"inputs": [{"name": "features", "shape": list(x.shape), "datatype": "FP32", "data": x.tolist()}]}
            self.client.post("/v2/models/demand-forecast/infer", json=body).raise_for_status()

    def drift(self):
        record = self.agent.reconcile_once().record
        assert record is not None and record.state == "success", record
        return record.deployments["demand-forecast"].drift

    def close(self) -> None:
        self.client.close()
        self.agent.stop()
        self.serving.__exit__(None, None, None)


@pytest.fixture
def sites(profiled_fleet, tmp_path):
    started = []
    try:
        for name in (SHIFTED, REFERENCE):
            started.append(Site(profiled_fleet, tmp_path, name))
            assert started[-1].agent.reconcile_once().record.state == "success"
        yield dict(zip((SHIFTED, REFERENCE), started, strict=True))
    finally:
        for site in started:
            site.close()


def test_a_shift_in_one_input_is_detected_on_it_alone_within_three_windows_and_shown_fleet_wide(
        sites, profiled_fleet, capsys, tmp_path):
    shifted, reference = sites[SHIFTED], sites[REFERENCE]
    rng = np.random.default_rng(1)
    for _ in range(3):
        reference.window(rng)
    calm = reference.drift()
    assert (calm.state, calm.windows, calm.rows, calm.drifted) == ("NoDrift", 3, 1000, [])
    assert set(calm.features) == {"features[0]", "features[1]", "features[2]", "features[3]", "forecast"}

    for window in range(1, 4):
        shifted.window(rng, shift=0.6)
        summary = shifted.drift()
        assert summary.windows == window
        assert summary.state == ("DriftDetected" if window == 3 else "NoDrift")
    inputs_drifted = [name for name in summary.drifted if name.startswith("features")]
    assert inputs_drifted == ["features[0]"]  # the sales moved; price and the flags did not
    assert summary.features["features[0]"].score >= 0.1 > max(
        summary.features[f"features[{i}]"].score for i in (1, 2, 3))

    metrics = shifted.client.get("/metrics").text
    assert 'reconciler_drift_detected{deployment="demand-forecast",feature="features[0]",version="1.0.0"} 1.0' in metrics
    assert 'reconciler_drift_detected{deployment="demand-forecast",feature="features[1]",version="1.0.0"} 0.0' in metrics

    capsys.readouterr()
    assert main(["status", "--repo", profiled_fleet.url, "--drift", "--format", "json"]) == 0
    view = json.loads(capsys.readouterr().out)
    assert [(row["site"], row["state"]) for row in view["sites"]] == [(SHIFTED, "DriftDetected"),
                                                                       (REFERENCE, "NoDrift")]
    [pooled] = view["pooled"]
    assert (pooled["model"], pooled["version"], pooled["sites"], pooled["rows"]) == ("demand-forecast", "1.0.0", 2, 2000)
    # one shifted site of two: the pooled score sits below the shifted site's own
    assert pooled["scores"]["features[0]"] < summary.features["features[0]"].score

    assert main(["status", "--repo", profiled_fleet.url, "--drift"]) == 0
    text = capsys.readouterr().out
    assert text.index(SHIFTED) < text.index(REFERENCE) and "pooled demand-forecast 1.0.0 over 2 site(s)" in text

    assert main(["report", "--repo", profiled_fleet.url, "--html", str(tmp_path / "report")]) == 0
    page = (tmp_path / "report" / "index.html").read_text()
    drift = page[page.index("<h2>Drift</h2>"):]
    assert drift.index(SHIFTED) < drift.index(REFERENCE) and "features[0]" in drift
    assert drift.count("<svg") == 1  # the shifted site's trend over its three windows; the other wrote one record


def test_a_profile_that_is_not_the_signed_one_is_refused_and_the_version_is_not_served(profiled_fleet, tmp_path):
    doc = profiled_fleet.model_doc("demand-forecast")
    profile = profiled_fleet.clone / MODEL / "1.0.0" / "profile.json"
    profile.write_text(profile.read_text().replace('"rows": 20000', '"rows": 20001'))
    content = profile.read_bytes()
    doc["spec"]["versions"][0]["profile"] |= {"digest": f"sha256:{hashlib.sha256(content).hexdigest()}",
                                              "size": len(content)}
    profiled_fleet.write_model_doc("demand-forecast", doc)
    profiled_fleet.push("a profile changed after it was signed")
    site = Site(profiled_fleet, tmp_path, SHIFTED)
    try:
        status = site.agent.reconcile_once().record.deployments["demand-forecast"]
        assert (status.state, status.reason, status.activeVersion) == ("error", "SignatureInvalid", None)
    finally:
        site.close()


def test_reconciler_serve_counts_drift_from_the_state_directorys_profile(profiled_fleet, tmp_path):
    """`reconciler serve` (no agent, no repo) serves what the site left and counts its requests
    against the version's profile in the state directory: the gauges show the shifted input."""
    site = Site(profiled_fleet, tmp_path, SHIFTED)
    assert site.agent.reconcile_once().record.state == "success"
    site.close()
    port = free_port()
    log = tmp_path / "serve.log"
    server = subprocess.Popen([sys.executable, "-m", "reconciler", "serve", "--state", str(tmp_path / SHIFTED),
                               "--listen", f"127.0.0.1:{port}"], stdout=log.open("wb"), stderr=subprocess.STDOUT)
    try:
        client = httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=10)
        deadline = time.monotonic() + 60
        while not _ready(client, "/v2/models/demand-forecast/ready"):
            assert server.poll() is None and time.monotonic() < deadline, log.read_text()
            time.sleep(0.1)
        site.client = client
        rng = np.random.default_rng(2)
        for _ in range(3):
            site.window(rng, shift=0.6)
        metrics = client.get("/metrics").text
        assert 'reconciler_drift_detected{deployment="demand-forecast",feature="features[0]",version="1.0.0"} 1.0' in metrics
        assert 'reconciler_drift_detected{deployment="demand-forecast",feature="features[1]",version="1.0.0"} 0.0' in metrics
        client.close()
    finally:
        stop_all([server])


def _ready(client: httpx.Client, path: str) -> bool:
    try:
        return client.get(path).status_code == 200
    except httpx.TransportError:
        return False
