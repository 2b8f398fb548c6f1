"""Load on deployment iris from the real ``tritonclient.http``, checking every answer, and version
swaps under it."""

from __future__ import annotations

import threading
import time
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import tritonclient.http as triton
from runtime_models import INTERFACE, VERSIONS

from reconciler.runtime.registry import ModelRegistry
from reconciler.runtime.server import RuntimeServer, build_app


class TritonLoad:
    """``clients`` threads, each with its own tritonclient, sending binary requests of ``x`` to
    deployment iris until the block ends; every answer must be the output of the version it names."""

    def __init__(self, url: str, x: np.ndarray, expected: dict[str, np.ndarray], clients: int = 4):
        self.url, self.x, self.expected = url, x, expected
        self.failures: list[str] = []
        self.served: dict[str, int] = {}
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._threads = [threading.Thread(target=self._hammer) for _ in range(clients)]

    def __enter__(self) -> TritonLoad:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join()

    def _hammer(self) -> None:
        client = triton.InferenceServerClient(url=self.url, network_timeout=10)
        try:
            while not self._stop.is_set():
                self._one(client)
        finally:
            client.close()

    def _one(self, client: triton.InferenceServerClient) -> None:
        try:
            tensor = triton.InferInput("input", list(self.x.shape), "FP32").set_data_from_numpy(self.x)
            result = client.infer("iris", [tensor])
        except Exception as exc:  # whatever the client raises is a failed request
            with self._lock:
                self.failures.append(repr(exc))
            return
        version = result.get_response()["model_version"]
        agrees = np.allclose(result.as_numpy("output"), self.expected[version], rtol=1e-5, atol=1e-6)
        with self._lock:
            self.served[version] = self.served.get(version, 0) + 1
            if not agrees:
                self.failures.append(f"response labelled {version} does not match {version}'s output")


def swaps_under_load(
    registry: ModelRegistry, model_files: Mapping[str, Path], x: np.ndarray, expected: dict[str, np.ndarray],
    clients: int = 4,
) -> TritonLoad:
    """100 version swaps of iris through VERSIONS in a cycle (each builds a new session and drops
    one that requests may still be running on) while ``clients`` send ``x``; the finished load."""
    with RuntimeServer(build_app(registry, site="store-1")) as server:
        with TritonLoad(f"127.0.0.1:{server.port}", x, expected, clients) as load:
            for swap in range(1, 101):
                version = VERSIONS[swap % len(VERSIONS)]
                registry.activate("iris", "iris", version, model_files[version], INTERFACE)
                time.sleep(0.01)
    return load
