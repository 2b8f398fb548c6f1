"""Tiny real ONNX models that share one interface, in several versions with their own weights, and
the Open Inference Protocol bodies that ask them: what the runtime tests serve."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

import httpx
import numpy as np

from reconciler.devtools.onnx_builder import dense_model
from reconciler.manifests.models import ModelInterface, TensorSpec
from reconciler.runtime.registry import ModelRegistry
from reconciler.runtime.server import RuntimeServer

INTERFACE = ModelInterface(
    inputs=[TensorSpec(name="input", dtype="float32", shape=[-1, 4])],
    outputs=[TensorSpec(name="output", dtype="float32", shape=[-1, 3])],
)
VERSIONS = ("1.0.0", "2.0.0", "3.0.0")


def layers(seed: int) -> list:
    """A 4 -> 8 -> 3 classifier (relu, softmax) with weights drawn from ``seed``."""
    rng = np.random.default_rng(seed)
    return [
        (rng.normal(size=(4, 8)), rng.normal(size=8), "relu"),
        (rng.normal(size=(8, 3)), rng.normal(size=3), "softmax"),
    ]


LAYERS = {version: layers(seed) for seed, version in enumerate(VERSIONS)}


def write_models(directory: Path, weights: Mapping[str, list] = LAYERS) -> dict[str, Path]:
    files = {}
    for version, version_layers in weights.items():
        files[version] = directory / f"iris-{version}.onnx"
        files[version].write_bytes(dense_model(version_layers))
    return files


def registry_with(model_files: Mapping[str, Path], *versions: str, **kwargs) -> ModelRegistry:
    """A registry that activated ``versions`` of deployment iris in turn."""
    registry = ModelRegistry(**kwargs)
    for version in versions:
        registry.activate("iris", "iris", version, model_files[version], INTERFACE)
    return registry


def infer_body(x: np.ndarray, **extra: object) -> dict:
    tensor = {"name": "input", "shape": list(x.shape), "datatype": "FP32", "data": x.tolist()}
    return {"inputs": [tensor], **extra}


def output(response: httpx.Response) -> np.ndarray:
    [tensor] = response.json()["outputs"]
    return np.reshape(tensor["data"], tensor["shape"])


@contextmanager
def serve(app: object) -> Iterator[httpx.Client]:
    """``app`` on an ephemeral loopback port for the block, with a client of it."""
    with RuntimeServer(app) as server:
        with httpx.Client(base_url=f"http://127.0.0.1:{server.port}", timeout=10) as client:
            yield client
