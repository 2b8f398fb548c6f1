"""A site with a batch deployment ``iris`` installed, as the agent leaves it: the model's blob and
state.json in the state directory, the batch spec the agent saved, and a site.yaml that maps the
logical input and output to directories. Models are the runtime tests' tiny real ones."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import yaml

from reconciler.batch.jobs import BatchDirectories, BatchJob, job_for
from reconciler.batch.scheduler import ActiveModels, save_spec
from reconciler.delivery.model import DeploymentState, Installed, SiteState
from reconciler.devtools.onnx_builder import dense_model, dense_reference
from reconciler.manifests.batch import BatchSpec
from reconciler.runtime.registry import Served
from tests.runtime_models import INTERFACE, LAYERS

SITE = "store-1"


@dataclass(frozen=True)
class BatchSite:
    root: Path

    @property
    def state(self) -> Path:
        return self.root / "state"

    @property
    def inputs(self) -> Path:
        return self.root / "in"

    @property
    def outputs(self) -> Path:
        return self.root / "out"

    @property
    def site_yaml(self) -> Path:
        return self.root / "site.yaml"

    def directories(self) -> BatchDirectories:
        return BatchDirectories(inputs={"readings": self.inputs}, outputs={"scores": self.outputs})

    def job(self, spec: BatchSpec) -> BatchJob:
        return job_for(self.state, self.directories(), "iris", spec)

    def install(self, version: str, spec: BatchSpec) -> str:
        """``version`` active for deployment iris, as a deploy leaves it; its digest."""
        data = dense_model(LAYERS[version])
        digest = "sha256:" + hashlib.sha256(data).hexdigest()
        blob = self.state / "blobs" / "sha256" / digest.removeprefix("sha256:")
        blob.parent.mkdir(parents=True, exist_ok=True)
        blob.write_bytes(data)
        installed = Installed(version=version, digest=digest, uri=f"models/iris-{version}.onnx",
                              installedAt=datetime(2026, 1, 1, tzinfo=UTC))
        state = SiteState(site=SITE, deployments={"iris": DeploymentState(model="iris", interface=INTERFACE,
                                                                         active=installed)})
        (self.state / "state.json").write_text(state.model_dump_json())
        save_spec(self.state, "iris", spec)
        self.site_yaml.write_text(yaml.safe_dump({
            "site": SITE, "repo": str(self.root / "fleet.git"), "state": "state",
            "batch": {"inputs": {"readings": "in"}, "outputs": {"scores": "out"}}}))
        self.inputs.mkdir(exist_ok=True)
        return digest


def spec(**changes: object) -> BatchSpec:
    raw = {"schedule": "0 2 * * *", "timeZone": "Europe/Berlin", "output": "scores",
           "input": {"name": "readings", "glob": "*.jsonl", "format": "jsonl"}, "maxRecordsPerBatch": 4}
    return BatchSpec.model_validate({**raw, **changes})


def active(site: BatchSite) -> Served:
    """The session a run scores with, as the agent's scheduler and the CLI find it."""
    state = SiteState.model_validate_json((site.state / "state.json").read_text())
    return ActiveModels(site.state).active("iris", state)


def write_jsonl(path: Path, rows: np.ndarray) -> None:
    path.write_text("".join(json.dumps({"input": row.tolist()}) + "\n" for row in rows))


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def expected(version: str, rows: np.ndarray) -> np.ndarray:
    return dense_reference(LAYERS[version], rows)
