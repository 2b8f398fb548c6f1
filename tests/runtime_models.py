"""Tiny real ONNX models that share one interface, in several versions with their own weights, and
the Open Inference Protocol bodies that ask them: what the runtime tests serve."""

from __future__ import annotations

import threading
from collections import Counter
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
INFER = "/v2/models/iris/infer"


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


class Load:
    """Four clients hammering ``/infer`` of deployment iris while the block runs. Every answer must
    be the output of the version it names; what went wrong is in ``failures``, what each version
    served in ``served``. With ``keyed``, half the clients send a sticky routing key."""

    def __init__(self, base_url: str, x: np.ndarray, expected: Mapping[str, np.ndarray], keyed: bool = False):
        self.base_url, self.x, self.expected, self.keyed = base_url, x, expected, keyed
        self.failures: list[str] = []
        self.served: Counter = Counter()
        self._stop = threading.Event()
        self._clients = [threading.Thread(target=self._hammer, args=(n,)) for n in range(4)]

    def __enter__(self) -> Load:
        for thread in self._clients:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for thread in self._clients:
            thread.join()

    def _hammer(self, number: int) -> None:
        tally: Counter = Counter()
        with httpx.Client(base_url=self.base_url, timeout=10) as session:
            while not self._stop.is_set():
                keyed = self.keyed and number % 2
                headers = {"x-routing-key": f"c{number}-{tally.total()}"} if keyed else {}
                try:
                    response = session.post(INFER, json=infer_body(self.x), headers=headers)
                except httpx.HTTPError as exc:
                    self.failures.append(repr(exc))
                    continue
                if response.status_code != 200:
                    self.failures.append(f"{response.status_code}: {response.text}")
                    continue
                version = response.json()["model_version"]
                if response.headers["x-model-version"] != version or not np.allclose(
                    output(response), self.expected[version], rtol=1e-5, atol=1e-6
                ):
                    self.failures.append(f"response labelled {version} does not match {version}'s output")
                tally[version] += 1
        self.served.update(tally)
