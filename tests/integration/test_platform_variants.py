"""One model version, several artifacts: the int8 builder against its numpy reference, and real
agents (git smart-HTTP remote, signed artifacts, child-process validation, onnxruntime) that each
run the artifact whose platform fits their labels, or say why none fits."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from reconciler.agent.loop import Agent
from reconciler.agent.wiring import build_agent
from reconciler.devtools.onnx_builder import (
    dense_model,
    dense_reference,
    quantize_weights,
    quantized_dense_model,
    quantized_dense_reference,
)
from reconciler.devtools.testing import EXAMPLE, git, start_fleet_remote
from reconciler.runtime.registry import ModelRegistry
from reconciler.settings import SiteConfig
from reconciler.status.record import StatusRecord

# --- the int8 builder ----------------------------------------------------------------------------

RNG = np.random.default_rng(7)
LAYERS = [
    (RNG.normal(size=(6, 12)).astype(np.float32), RNG.normal(size=12).astype(np.float32), "relu"),
    (RNG.normal(size=(12, 3)).astype(np.float32), RNG.normal(size=3).astype(np.float32), "softmax"),
]


@pytest.mark.parametrize(
    "weights",
    [
        pytest.param([[1.0, -0.5], [-2.0, 0.25]], id="mixed-signs"),
        pytest.param([[0.0, 3.0], [0.0, -3.0]], id="all-zero-column"),
        pytest.param([[1e-3, 100.0], [-1e-3, 50.0]], id="columns-of-different-scale"),
        pytest.param([[-127.0], [127.0], [0.5]], id="peak-maps-to-127"),
    ],
)
def test_quantize_weights_rounds_each_column_to_its_own_int8_grid(weights):
    w = np.asarray(weights, dtype=np.float32)
    q, scale = quantize_weights(w)
    assert q.dtype == np.int8 and scale.dtype == np.float32 and scale.shape == (w.shape[1],)
    assert np.abs(q).max() <= 127
    assert np.all(np.abs(q.astype(np.float32) * scale - w) <= scale / 2 + 1e-7)
    peaked = np.abs(w).max(axis=0) > 0
    assert np.all(np.abs(q[:, peaked]).max(axis=0) == 127)


def test_quantized_model_stores_int8_weights_runs_under_onnxruntime_and_matches_its_reference():
    data = quantized_dense_model(LAYERS)
    assert data == quantized_dense_model(LAYERS)  # deterministic bytes
    assert len(data) < len(dense_model(LAYERS))
    graph = onnx.load_from_string(data).graph
    assert [n.op_type for n in graph.node].count("DequantizeLinear") == len(LAYERS)
    assert {t.name: t.data_type for t in graph.initializer if t.name.endswith("_int8")} == {
        "w0_int8": onnx.TensorProto.INT8, "w1_int8": onnx.TensorProto.INT8}

    # Basic optimizations keep the graph as written; the default level may also run a layer with
    # int8 activations (MatMulNBits), which is the runtime's business, not the artifact's.
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
    session = ort.InferenceSession(data, options, providers=["CPUExecutionProvider"])
    x = RNG.normal(size=(16, 6)).astype(np.float32)
    [out] = session.run(None, {"input": x})
    np.testing.assert_allclose(out, quantized_dense_reference(LAYERS, x), rtol=0, atol=1e-6)
    # ... and it is really quantized: the fp32 network answers measurably differently.
    assert np.abs(out - dense_reference(LAYERS, x)).max() > 1e-4


# --- sites picking their artifact -----------------------------------------------------------------

# A Saturday night in March, inside the factories' Saturday 22:00 - Sunday 06:00 windows in both
# Stuttgart (23:00) and Pune (03:30 on Sunday).
NOW = datetime(2025, 3, 8, 22, 0, tzinfo=UTC)
ARM64, AMD64, RISCV = "factory-pune-01", "factory-stuttgart-01", "factory-riscv-lab-01"
RISCV_SITE = f"""\
apiVersion: reconciler/v1
kind: Site
metadata:
  name: {RISCV}
  labels:
    region: ap-south
    tier: factory
    arch: riscv64
    accelerator: npu-x1
spec:
  description: Test bench for a RISC-V camera box; no artifact is built for it yet
"""


@pytest.fixture
def fleet(tmp_path):
    remote = start_fleet_remote(tmp_path)
    (remote.clone / "sites" / f"{RISCV}.yaml").write_text(RISCV_SITE)
    remote.push("Add the RISC-V test bench")
    yield remote
    remote.server.stop()


@pytest.fixture
def agents(fleet, tmp_path):
    """One in-process agent per site, each with its own state directory and runtime."""
    started: dict[str, tuple[Agent, ModelRegistry]] = {}
    for site in (ARM64, AMD64, RISCV):
        config = SiteConfig(site=site, repo=fleet.url, state=tmp_path / site,
                            trust_keys=[EXAMPLE / "keys" / "demo.pub"])
        registry = ModelRegistry()
        agent = build_agent(config, registry)
        agent.start(NOW)
        started[site] = (agent, registry)
    yield started
    for agent, _ in started.values():
        agent.stop()


def artifact_digests(fleet, version: str) -> dict[str | None, str]:
    """The version's artifact digests by platform arch (None: any platform)."""
    doc = fleet.model_doc("defect-detector")
    entry = next(v for v in doc["spec"]["versions"] if v["version"] == version)
    return {(a.get("platform") or {}).get("arch"): a["digest"] for a in entry["artifacts"]}


def validation_cases(fleet, version: str) -> list[dict]:
    doc = fleet.model_doc("defect-detector")
    return next(v for v in doc["spec"]["versions"] if v["version"] == version)["validation"]


def infer(registry: ModelRegistry, pixels: list[list[float]]) -> np.ndarray:
    served = registry.get("defect-detector")
    [out] = served.session.run(None, {"pixels": np.asarray(pixels, dtype=np.float32)})
    return out


def active_digest(agent: Agent, site: str) -> str:
    return agent.state_dir.load(site).deployments["defect-detector"].active.digest


def published_states(fleet) -> dict[str, str]:
    """Each site's state as its status ref in the fleet repo says."""
    states = {}
    for site in (ARM64, AMD64, RISCV):
        raw = git("show", f"refs/reconciler/status/{site}:status.json", cwd=fleet.bare)
        states[site] = StatusRecord.model_validate_json(raw).state
    return states


def test_each_site_runs_the_artifact_that_fits_its_platform(fleet, agents):
    for site, (agent, _) in agents.items():
        assert agent.reconcile_once(NOW).record.state == "success", site
    generic = artifact_digests(fleet, "1.0.0")[None]
    assert {active_digest(agent, site) for site, (agent, _) in agents.items()} == {generic}

    fleet.bump("deployments/defect-detector.yaml", "1.0.0", "2.0.0")
    fleet.push("Roll out defect-detector 2.0.0: fp32 on amd64, int8 on arm64")
    results = {site: agent.reconcile_once(NOW) for site, (agent, _) in agents.items()}

    digests = artifact_digests(fleet, "2.0.0")
    for site, arch in ((ARM64, "arm64"), (AMD64, "amd64")):
        agent, registry = agents[site]
        status = results[site].record.deployments["defect-detector"]
        assert (results[site].record.state, status.activeVersion) == ("success", "2.0.0"), site
        assert active_digest(agent, site) == digests[arch]
        served = registry.get("defect-detector")
        assert (served.version, served.digest) == ("2.0.0", digests[arch])
        assert served.digest == f"sha256:{hashlib.sha256(served.source.read_bytes()).hexdigest()}"
        for case in validation_cases(fleet, "2.0.0"):
            np.testing.assert_allclose(infer(registry, case["inputs"]["pixels"]), case["expected"]["probabilities"],
                                       rtol=0, atol=case["tolerance"], err_msg=f"{site} {case['name']}")

    # Two different networks answered: the int8 weights move the probabilities measurably.
    clean = validation_cases(fleet, "2.0.0")[0]["inputs"]["pixels"]
    assert np.abs(infer(agents[ARM64][1], clean) - infer(agents[AMD64][1], clean)).max() > 1e-4

    riscv_agent, riscv_registry = agents[RISCV]
    record = results[RISCV].record
    status = record.deployments["defect-detector"]
    assert (record.state, record.reason) == ("error", "NoMatchingArtifact")
    assert (status.state, status.reason) == ("error", "NoMatchingArtifact")
    assert "arch=riscv64" in status.message and "accelerator=npu-x1" in status.message
    # It keeps serving what it had.
    assert status.activeVersion == "1.0.0"
    assert riscv_registry.get("defect-detector").version == "1.0.0"
    assert active_digest(riscv_agent, RISCV) == generic

    assert published_states(fleet) == {ARM64: "success", AMD64: "success", RISCV: "error"}
