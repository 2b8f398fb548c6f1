"""Small in-memory fleets for the pure-core tests: documents built as the YAML would say them."""

from __future__ import annotations

from typing import Any

from reconciler.flags import FlagSet
from reconciler.flags.model import FlagFile
from reconciler.manifests.deployments import Deployment
from reconciler.manifests.fleet import FleetRepo
from reconciler.manifests.models import Fleet, Model, Site

DIGEST_A = "sha256:" + "a" * 64
DIGEST_B = "sha256:" + "b" * 64
DIGEST_ARM = "sha256:" + "c" * 64


def site(name: str, windows: list[dict] | None = None, **labels: str) -> Site:
    return Site.model_validate({"apiVersion": "reconciler/v1", "kind": "Site",
                                "metadata": {"name": name, "labels": labels},
                                "spec": {"maintenanceWindows": windows or []}})


def artifact(digest: str, **platform: str) -> dict[str, Any]:
    body = {"uri": f"models/m/{digest[7:15]}.onnx", "digest": digest, "size": 10,
            "signature": {"uri": f"models/m/{digest[7:15]}.onnx.sig"}}
    return {**body, "platform": platform} if platform else body


def model(name: str = "m", versions: dict[str, list[dict]] | None = None) -> Model:
    versions = versions or {"1.0.0": [artifact(DIGEST_A)], "1.1.0": [artifact(DIGEST_B)]}
    return Model.model_validate({
        "apiVersion": "reconciler/v1", "kind": "Model", "metadata": {"name": name},
        "spec": {"interface": {"inputs": [{"name": "x", "dtype": "float32", "shape": [-1, 2]}],
                               "outputs": [{"name": "y", "dtype": "float32", "shape": [-1, 1]}]},
                 "versions": [{"version": v, "artifacts": a} for v, a in versions.items()]},
    })


def deployment(name: str = "d", model_name: str = "m", version: Any = "1.0.0", **spec: Any) -> Deployment:
    return Deployment.model_validate({"apiVersion": "reconciler/v1", "kind": "Deployment", "metadata": {"name": name},
                                      "spec": {"model": model_name, "version": version, **spec}})


def fleet_repo(sites: list[Site], models: list[Model], deployments: list[Deployment],
               flags: dict[str, Any] | None = None, fleet: dict | None = None) -> FleetRepo:
    flag_file = FlagFile.model_validate({"flags": flags or {}})
    fleet_doc = Fleet.model_validate({"apiVersion": "reconciler/v1", "kind": "Fleet", "metadata": {"name": "f"},
                                      "spec": fleet or {}})
    return FleetRepo(
        fleet=fleet_doc,
        sites={s.metadata.name: s for s in sites},
        models={m.metadata.name: m for m in models},
        deployments={d.metadata.name: d for d in deployments},
        flags=FlagSet(flags=dict(flag_file.flags), evaluators=dict(flag_file.evaluators)),
    )
