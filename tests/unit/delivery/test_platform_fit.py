"""A site's inventory against the platform of the artifacts its plan picks: warnings where the
labels that picked them look wrong, none where they fit or the artifact names no platform."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from reconciler.delivery.plan import Target
from reconciler.delivery.platform_fit import arch_name, platform_warnings
from reconciler.manifests.models import Artifact, ModelInterface
from reconciler.status.record import SiteInventory

NOW = datetime(2026, 12, 7, 6, 0, tzinfo=UTC)
CPU_ONLY = ["AzureExecutionProvider", "CPUExecutionProvider"]
INTERFACE = ModelInterface.model_validate({"inputs": [{"name": "x", "dtype": "float32", "shape": [-1, 2]}],
                                           "outputs": [{"name": "y", "dtype": "float32", "shape": [-1, 1]}]})


def target(**platform: str) -> Target:
    artifact = Artifact.model_validate({"uri": "models/m/1.0.0.onnx", "digest": "sha256:" + "0" * 64, "size": 10,
                                        "signature": {"uri": "models/m/1.0.0.onnx.sig"},
                                        **({"platform": platform} if platform else {})})
    return Target("d", "m", "1.0.0", artifact, INTERFACE, (), None, "r1")


def inventory(arch: str = "x86_64", providers: list[str] = CPU_ONLY) -> SiteInventory:
    return SiteInventory(os="Debian", kernel="6.1", arch=arch, cpus=2, onnxruntime="1.20.0",
                         executionProviders=providers, collectedAt=NOW)


@pytest.mark.parametrize(("machine", "label"), [("x86_64", "amd64"), ("aarch64", "arm64"), ("armv7l", "arm"),
                                                ("riscv64", "riscv64")])
def test_uname_names_read_as_label_names(machine: str, label: str) -> None:
    assert arch_name(machine) == label == arch_name(label)


@pytest.mark.parametrize(("platform", "facts", "warned"), [
    ({}, inventory(), []),  # an artifact for any site
    ({"arch": "amd64"}, inventory("x86_64"), []),
    ({"arch": "arm64"}, inventory("aarch64"), []),
    ({"arch": "x86_64"}, inventory("x86_64"), []),  # a label in uname's words fits too
    ({"arch": "arm64"}, inventory("x86_64"),
     ["s1: d gets the artifact of m 1.0.0 for arch arm64, but the site says it runs x86_64: check its arch label"]),
    ({"accelerator": "jetson-orin"}, inventory(providers=["CUDAExecutionProvider", "CPUExecutionProvider"]), []),
    ({"accelerator": "jetson-orin"}, inventory(),
     ["s1: d gets the artifact of m 1.0.0 for accelerator jetson-orin, but the site's onnxruntime 1.20.0 has no "
      "accelerator provider (AzureExecutionProvider, CPUExecutionProvider): check its accelerator label, or its "
      "onnxruntime build"]),
    ({"precision": "int8"}, inventory(), []),  # nothing in the inventory says otherwise
])
def test_an_artifact_platform_the_inventory_contradicts_is_warned(
        platform: dict, facts: SiteInventory, warned: list[str]) -> None:
    assert platform_warnings("s1", [target(**platform)], facts) == warned


def test_every_target_is_checked() -> None:
    warnings = platform_warnings("s1", [target(arch="arm64"), target(), target(arch="arm64", accelerator="tpu")],
                                 inventory())
    assert len(warnings) == 3
