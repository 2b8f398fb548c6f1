"""Dynamic batching in the real runtime: real onnxruntime sessions behind the real server, spoken to
by tritonclient from many threads at once. Merged requests get their own rows back, a canary split
still holds per request, the configuration says how the model is batched, and version swaps under
batched load fail no request."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
import tritonclient.http as triton
from runtime_models import INTERFACE, LAYERS, VERSIONS, registry_with, write_models
from triton_load import TritonLoad, swaps_under_load

from reconciler.devtools.onnx_builder import dense_reference
from reconciler.runtime.registry import BatchPolicy, ModelRegistry
from reconciler.runtime.server import RuntimeServer, build_app

POLICY = BatchPolicy(max_batch_size=16, max_queue_delay=0.02)
CLIENTS = 12
X = np.random.default_rng(5).normal(size=(2, 4)).astype(np.float32)


@pytest.fixture(scope="module")
def model_files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return write_models(tmp_path_factory.mktemp("models"))


def batched(registry: ModelRegistry) -> ModelRegistry:
    registry.set_batching({"iris": POLICY})
    return registry


@pytest.fixture
def server(model_files: dict[str, Path]) -> Iterator[RuntimeServer]:
    with RuntimeServer(build_app(batched(registry_with(model_files, "1.0.0")), site="store-1")) as running:
        yield running


def test_concurrent_requests_are_merged_and_each_gets_its_own_rows(server: RuntimeServer):
    url = f"127.0.0.1:{server.port}"
    start = threading.Barrier(CLIENTS)

    def client_run(number: int) -> list[str]:
        """Ten requests of 1-3 rows of its own; what went wrong."""
        rng = np.random.default_rng(number)
        client = triton.InferenceServerClient(url=url, network_timeout=10)
        wrong = []
        start.wait()
        for request in range(10):
            x = rng.normal(size=(1 + (number + request) % 3, 4)).astype(np.float32)
            tensor = triton.InferInput("input", list(x.shape), "FP32").set_data_from_numpy(x)
            got = client.infer("iris", [tensor]).as_numpy("output")
            if not np.allclose(got, dense_reference(LAYERS["1.0.0"], x), rtol=1e-5, atol=1e-6):
                wrong.append(f"client {number} request {request}: rows not its own")
        client.close()
        return wrong

    with ThreadPoolExecutor(CLIENTS) as pool:
        failures = [problem for problems in pool.map(client_run, range(CLIENTS)) for problem in problems]
    client = triton.InferenceServerClient(url=url)
    [stats] = client.get_inference_statistics("iris")["model_stats"]
    client.close()

    assert failures == []
    assert stats["inference_count"] == CLIENTS * 10
    assert stats["execution_count"] < stats["inference_count"], "no request was merged with another"


def test_a_request_over_max_batch_size_is_answered_alone(server: RuntimeServer):
    x = np.random.default_rng(1).normal(size=(POLICY.max_batch_size + 5, 4)).astype(np.float32)
    client = triton.InferenceServerClient(url=f"127.0.0.1:{server.port}")
    tensor = triton.InferInput("input", list(x.shape), "FP32").set_data_from_numpy(x)
    got = client.infer("iris", [tensor]).as_numpy("output")
    client.close()
    np.testing.assert_allclose(got, dense_reference(LAYERS["1.0.0"], x), rtol=1e-5, atol=1e-6)


def test_the_configuration_says_how_the_model_is_batched(server: RuntimeServer):
    client = triton.InferenceServerClient(url=f"127.0.0.1:{server.port}")
    config = client.get_model_config("iris")
    client.close()
    assert config["max_batch_size"] == POLICY.max_batch_size
    assert config["dynamic_batching"] == {"max_queue_delay_microseconds": 20_000}
    assert config["input"] == [{"name": "input", "data_type": "TYPE_FP32", "dims": [4]}]
    assert config["output"] == [{"name": "output", "data_type": "TYPE_FP32", "dims": [3]}]


def test_a_canary_split_holds_per_request_under_batching(model_files: dict[str, Path]):
    """Each answer is checked against the version it names: a batch that mixed versions would
    answer some requests with the other version's output."""
    registry = batched(registry_with(model_files, "1.0.0"))
    registry.start_canary("iris", "iris", "2.0.0", model_files["2.0.0"], INTERFACE, digest=None, weight=50)
    expected = {version: dense_reference(LAYERS[version], X) for version in ("1.0.0", "2.0.0")}
    with RuntimeServer(build_app(registry, site="store-1")) as server:
        with TritonLoad(f"127.0.0.1:{server.port}", X, expected, clients=8) as load:
            time.sleep(2)
    assert load.failures == []
    assert set(load.served) == {"1.0.0", "2.0.0"}


def test_version_swaps_under_batched_load_fail_no_request(model_files: dict[str, Path]):
    registry = batched(registry_with(model_files, VERSIONS[0]))
    expected = {version: dense_reference(LAYERS[version], X) for version in VERSIONS}
    load = swaps_under_load(registry, model_files, X, expected, clients=8)
    print(f"\n{load.served} requests served across 100 swaps, batched")
    assert load.failures == []
    assert set(load.served) == set(VERSIONS)
