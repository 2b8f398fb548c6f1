"""apply.py and drift (seams with fakes): a served version with a profile is watched, a removed
deployment forgotten, and a profile that cannot be read never stops the version being served; a
batch-only version, or one at a site that serves nothing, is watched for its batch runs."""

from __future__ import annotations

from datetime import UTC, datetime

import numpy as np

from reconciler.agent.apply import Applier
from reconciler.agent.statedir import StateDir
from reconciler.delivery.model import DeploymentState, Installed, SiteState
from reconciler.devtools.fakes import FakeRuntime, FakeVetting
from reconciler.ingest.artifacts import ArtifactStore
from reconciler.manifests.models import ModelInterface, TensorSpec
from reconciler.monitoring.profile import build_profile
from reconciler.runtime.drift_counter import DriftMonitor

T0 = datetime(2026, 3, 2, 10, 0, tzinfo=UTC)
INTERFACE = ModelInterface(inputs=[TensorSpec(name="x", dtype="float32", shape=[-1, 2])],
                           outputs=[TensorSpec(name="y", dtype="float32", shape=[-1, 1])])
PROFILE_DIGEST = "sha256:" + "ab" * 32


def state_with(profile: str | None) -> SiteState:
    installed = Installed(version="1.0.0", digest="sha256:" + "cd" * 32, uri="m.onnx", installedAt=T0, profile=profile)
    return SiteState(site="s", deployments={"d": DeploymentState(model="m", interface=INTERFACE, active=installed)})


def applier(tmp_path, monitor: DriftMonitor) -> tuple[Applier, FakeRuntime, ArtifactStore]:
    store = ArtifactStore(tmp_path / "state")
    runtime = FakeRuntime()
    return Applier(StateDir(tmp_path / "state"), store, FakeVetting(store), runtime, drift=monitor), runtime, store


def profiled_store(store: ArtifactStore) -> None:
    profile = build_profile("m", "1.0.0", {"inputs": {"x": np.random.default_rng(0).normal(size=(2000, 2))}})
    store.blobs.mkdir(parents=True)
    store.path_for(PROFILE_DIGEST).write_text(profile.model_dump_json())


def test_restore_watches_the_active_version_and_its_windows_reach_the_record(tmp_path):
    monitor = DriftMonitor(lambda: 0.0)
    apply, runtime, store = applier(tmp_path, monitor)
    profiled_store(store)
    state = state_with(PROFILE_DIGEST)
    apply.restore(state)
    assert runtime.calls[0][0] == "activate" and list(monitor.counters()) == [("d", "1.0.0")]
    assert apply.drift_news() and not apply.drift_news()  # a version watched anew, then nothing new
    assert apply.drift_summaries(state) == {}
    monitor.count("d", "1.0.0", {"x": np.zeros((1000, 2), dtype=np.float32)}, {})
    assert apply.drift_news() and not apply.drift_news()  # once per closed window
    assert apply.drift_summaries(state)["d"].state == "NoDrift"


def test_a_profile_blob_that_is_gone_leaves_the_version_served_and_uncounted(tmp_path, caplog):
    monitor = DriftMonitor(lambda: 0.0)
    apply, runtime, _ = applier(tmp_path, monitor)
    apply.restore(state_with(PROFILE_DIGEST))
    assert runtime.calls[0][0] == "activate" and monitor.counters() == {}
    assert "drift is not counted" in caplog.text and "ProfileUnreadable" in [r.reason for r in caplog.records]


def test_a_version_without_profile_is_not_watched(tmp_path):
    monitor = DriftMonitor(lambda: 0.0)
    apply, runtime, _ = applier(tmp_path, monitor)
    apply.restore(state_with(None))
    assert runtime.calls[0][0] == "activate" and monitor.counters() == {}


def test_a_batch_only_version_is_watched_though_not_served_so_its_runs_reach_the_record(tmp_path):
    monitor = DriftMonitor(lambda: 0.0)
    apply, runtime, store = applier(tmp_path, monitor)
    profiled_store(store)
    state = state_with(PROFILE_DIGEST)
    state = state.model_copy(update={"deployments": {"d": state.deployments["d"].model_copy(update={"served": False})}})
    apply.restore(state)
    assert runtime.calls == [] and list(monitor.counters()) == [("d", "1.0.0")]
    monitor.count("d", "1.0.0", {"x": np.zeros((1000, 2), dtype=np.float32)}, {}, live=False)
    assert apply.drift_summaries(state)["d"].rows == 1000


def test_a_site_that_serves_nothing_watches_its_active_versions_for_the_batch_runs(tmp_path):
    monitor = DriftMonitor(lambda: 0.0)
    store = ArtifactStore(tmp_path / "state")
    profiled_store(store)
    apply = Applier(StateDir(tmp_path / "state"), store, FakeVetting(store), None, drift=monitor)
    apply.restore(state_with(PROFILE_DIGEST))
    assert list(monitor.counters()) == [("d", "1.0.0")]
