"""The Open Inference Protocol over gRPC, spoken by the real tritonclient.grpc (and, for typed
contents, which tritonclient never sends, by a bare grpc channel) to a real gRPC server on loopback
that shares its registry and metrics with the REST server beside it; and a real agent process
serving a fleet's model over both."""

from __future__ import annotations

import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import get_args

import grpc
import httpx
import numpy as np
import pytest
import tritonclient.grpc as triton
from onnx import TensorProto, helper
from runtime_models import INFER, INTERFACE, LAYERS, VERSIONS, infer_body, registry_with, serve, write_models
from tritonclient.utils import InferenceServerException

from reconciler import __version__
from reconciler.devtools.onnx_builder import dense_reference
from reconciler.devtools.processes import free_port, stop_all
from reconciler.devtools.testing import EXAMPLE
from reconciler.errors import Stalled
from reconciler.flags import bucket
from reconciler.manifests.models import ModelInterface, TensorSpec, TensorType
from reconciler.runtime import binary, grpc_codec, oip
from reconciler.runtime.grpc_server import GrpcServer
from reconciler.runtime.metrics import RuntimeMetrics, window_stats
from reconciler.runtime.registry import BatchPolicy, ModelRegistry
from reconciler.runtime.server import build_app

SITE = "store-1"
X = np.asarray([[0.5, -0.2, 0.1, 0.9], [1.5, 0.3, -0.7, 0.2]], dtype=np.float32)
# Every element type a model's interface may declare, and its OIP datatype.
DATATYPES = {dtype: oip.datatype(TensorSpec(name="x", dtype=dtype, shape=[-1])) for dtype in get_args(TensorType)}


@pytest.fixture(scope="module")
def model_files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return write_models(tmp_path_factory.mktemp("models"))


@contextmanager
def grpc_beside_rest(
    registry: ModelRegistry, metrics: RuntimeMetrics | None = None
) -> Iterator[tuple[GrpcServer, RuntimeMetrics, httpx.Client]]:
    """gRPC on an ephemeral loopback port beside the REST app whose request path it shares (the
    app's lifespan runs the shadow runner), for the block."""
    app = build_app(registry, site=SITE, metrics=metrics)
    with serve(app) as rest, GrpcServer(registry, app.state.inference) as server:
        yield server, app.state.metrics, rest


@dataclass
class Site:
    registry: ModelRegistry
    metrics: RuntimeMetrics
    rest: httpx.Client
    grpc: triton.InferenceServerClient
    grpc_server: GrpcServer


@pytest.fixture
def site(model_files: dict[str, Path]) -> Iterator[Site]:
    """iris 1.0.0 then 2.0.0 activated, served over REST and gRPC with one set of metrics."""
    registry = registry_with(model_files, "1.0.0", "2.0.0")
    metrics = RuntimeMetrics(registry)
    with grpc_beside_rest(registry, metrics) as (server, _, rest):
        client = triton.InferenceServerClient(f"127.0.0.1:{server.port}")
        yield Site(registry, metrics, rest, client, server)
        client.close()


def iris_input(x: np.ndarray = X) -> triton.InferInput:
    tensor = triton.InferInput("input", list(x.shape), "FP32")
    tensor.set_data_from_numpy(x)
    return tensor


def refusal(call) -> tuple[str, str]:
    """The status code (as tritonclient names it, ``StatusCode.NOT_FOUND``) and message of a failed call."""
    with pytest.raises(InferenceServerException) as raised:
        call()
    return raised.value.status(), raised.value.message()


def test_health_and_metadata(site: Site):
    client = site.grpc
    assert client.is_server_live() and client.is_server_ready()
    assert client.is_model_ready("iris") and client.is_model_ready("iris", "1.0.0")
    server = client.get_server_metadata()
    assert (server.name, server.version, list(server.extensions)) == ("reconciler", __version__, [])
    model = client.get_model_metadata("iris", as_json=True)
    assert model == {
        "name": "iris",
        "versions": ["2.0.0", "1.0.0"],
        "platform": "onnxruntime",
        "inputs": [{"name": "input", "datatype": "FP32", "shape": ["-1", "4"]}],
        "outputs": [{"name": "output", "datatype": "FP32", "shape": ["-1", "3"]}],
    }
    assert model == {**site.rest.get("/v2/models/iris").json(), "inputs": model["inputs"], "outputs": model["outputs"]}


def test_infer_answers_as_rest_does_and_pins_versions(site: Site):
    answer = site.grpc.infer("iris", [iris_input()], request_id="r-1")
    response = answer.get_response()
    assert (response.model_name, response.model_version, response.id) == ("iris", "2.0.0", "r-1")
    np.testing.assert_allclose(answer.as_numpy("output"), dense_reference(LAYERS["2.0.0"], X), rtol=1e-5, atol=1e-6)
    rest = site.rest.post(INFER, json=infer_body(X)).json()["outputs"][0]["data"]
    np.testing.assert_array_equal(answer.as_numpy("output").ravel(), np.asarray(rest, dtype=np.float32))

    pinned = site.grpc.infer("iris", [iris_input()], model_version="1.0.0")
    assert pinned.get_response().model_version == "1.0.0"
    np.testing.assert_allclose(pinned.as_numpy("output"), dense_reference(LAYERS["1.0.0"], X), rtol=1e-5, atol=1e-6)
    chosen = site.grpc.infer("iris", [iris_input()], outputs=[triton.InferRequestedOutput("output")])
    assert chosen.as_numpy("output").shape == (2, 3)


def identity_model(dtype: str) -> bytes:
    elem = TensorProto.STRING if dtype == "string" else helper.np_dtype_to_tensor_dtype(np.dtype(dtype))
    graph = helper.make_graph(
        [helper.make_node("Identity", ["x"], ["y"])],
        f"identity-{dtype}",
        [helper.make_tensor_value_info("x", elem, ["batch", 3])],
        [helper.make_tensor_value_info("y", elem, ["batch", 3])],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8).SerializeToString()


@pytest.fixture(scope="module")
def every_datatype(tmp_path_factory: pytest.TempPathFactory) -> Iterator[int]:
    """A deployment per datatype, each an identity model; yields the gRPC port."""
    directory = tmp_path_factory.mktemp("identity")
    registry = ModelRegistry()
    for dtype in DATATYPES:
        path = directory / f"{dtype}.onnx"
        path.write_bytes(identity_model(dtype))
        spec = {"dtype": dtype, "shape": [-1, 3]}
        interface = ModelInterface(inputs=[TensorSpec(name="x", **spec)], outputs=[TensorSpec(name="y", **spec)])
        registry.activate(f"id-{dtype}", f"id-{dtype}", "1", path, interface)
    with grpc_beside_rest(registry) as (server, _, _):
        yield server.port


def values_of(dtype: str) -> np.ndarray:
    if dtype == "string":
        return np.array([[b"", b"one", "zw\u00f6lf".encode()], [b"x" * 300, b"a\x00b", b"end"]], dtype=object)
    info = np.iinfo(dtype) if np.dtype(dtype).kind in "iu" else None
    if dtype == "bool":
        return np.array([[True, False, True], [False, False, True]])
    if info is not None:
        return np.array([[info.min, 0, info.max], [1, 2, info.max - 1]], dtype=dtype)
    return np.array([[-1.5, 0.0, 0.1], [np.finfo(dtype).max, np.finfo(dtype).tiny, 7.25]], dtype=dtype)


@pytest.mark.parametrize("dtype", DATATYPES)
def test_every_datatype_over_tritonclient_raw_contents(every_datatype: int, dtype: str):
    x = values_of(dtype)
    tensor = triton.InferInput("x", list(x.shape), DATATYPES[dtype])
    tensor.set_data_from_numpy(x)
    with triton.InferenceServerClient(f"127.0.0.1:{every_datatype}") as client:
        answer = client.infer(f"id-{dtype}", [tensor])
    assert answer.get_output("y").datatype == DATATYPES[dtype]
    np.testing.assert_array_equal(answer.as_numpy("y"), x)
    assert answer.as_numpy("y").dtype == x.dtype


@pytest.mark.parametrize("dtype", [dtype for dtype, datatype in DATATYPES.items() if datatype != "FP16"])
def test_every_datatype_as_typed_contents(every_datatype: int, dtype: str):
    x = values_of(dtype)
    request = grpc_codec.ModelInferRequest(model_name=f"id-{dtype}")
    field = grpc_codec.CONTENTS_FIELD[DATATYPES[dtype]]
    request.inputs.add(name="x", datatype=DATATYPES[dtype], shape=x.shape, contents={field: x.ravel().tolist()})
    with grpc.insecure_channel(f"127.0.0.1:{every_datatype}") as channel:
        infer = channel.unary_unary(
            "/inference.GRPCInferenceService/ModelInfer",
            request_serializer=grpc_codec.ModelInferRequest.SerializeToString,
            response_deserializer=grpc_codec.ModelInferResponse.FromString,
        )
        response = infer(request, timeout=10)
    [raw] = response.raw_output_contents
    assert raw == binary.tensor_to_bytes(x)


def test_errors_come_back_as_status_codes(site: Site):
    client = site.grpc
    wide = iris_input(np.zeros((1, 5), np.float32))
    as_int = triton.InferInput("input", [1, 4], "INT32")
    as_int.set_data_from_numpy(np.zeros((1, 4), np.int32))
    cases = [
        (lambda: client.infer("wine", [iris_input()]), grpc.StatusCode.NOT_FOUND, "model 'wine' is not served here"),
        (
            lambda: client.infer("iris", [iris_input()], model_version="9.9.9"),
            grpc.StatusCode.NOT_FOUND,
            "model 'iris' has no version '9.9.9' loaded; loaded: 2.0.0, 1.0.0",
        ),
        (lambda: client.get_model_metadata("wine"), grpc.StatusCode.NOT_FOUND, "model 'wine' is not served here"),
        (lambda: client.is_model_ready("iris", "9.9.9"), grpc.StatusCode.NOT_FOUND, "has no version '9.9.9'"),
        (
            lambda: client.infer("iris", [wide]),
            grpc.StatusCode.INVALID_ARGUMENT,
            "input 'input' has shape [-1, 4] (-1: any size), got [1, 5]",
        ),
        (lambda: client.infer("iris", [as_int]), grpc.StatusCode.INVALID_ARGUMENT, "has datatype FP32, got 'INT32'"),
        (
            lambda: client.infer("iris", [iris_input()], outputs=[triton.InferRequestedOutput("proba")]),
            grpc.StatusCode.INVALID_ARGUMENT,
            "model has no output 'proba'; its outputs are: output",
        ),
    ]
    for call, code, message in cases:
        status, said = refusal(call)
        assert status == str(code) and message in said, (status, said)
    invalid = site.metrics.snapshot()[("iris", "2.0.0")].invalid
    assert invalid == 3  # the malformed requests were charged to the version they routed to


def test_a_model_that_fails_is_internal_and_counted_as_its_error(model_files: dict[str, Path]):
    """The manifest says 5 features, the ONNX takes 4: the request fits, the run fails."""
    wrong = ModelInterface(inputs=[TensorSpec(name="input", dtype="float32", shape=[-1, 5])], outputs=INTERFACE.outputs)
    registry = ModelRegistry()
    registry.activate("iris", "iris", "1.0.0", model_files["1.0.0"], wrong)
    with grpc_beside_rest(registry) as (server, metrics, _):
        with triton.InferenceServerClient(f"127.0.0.1:{server.port}") as client:
            status, message = refusal(lambda: client.infer("iris", [iris_input(np.zeros((1, 5), np.float32))]))
    assert status == str(grpc.StatusCode.INTERNAL) and message.startswith("model iris version 1.0.0 failed: ")
    assert metrics.snapshot()[("iris", "1.0.0")].errors == 1


def test_a_deployment_still_loading_is_unavailable_not_missing(model_files: dict[str, Path]):
    registry = ModelRegistry(expected=["iris"])
    with grpc_beside_rest(registry) as (server, _, _):
        with triton.InferenceServerClient(f"127.0.0.1:{server.port}") as client:
            before = (client.is_server_ready(), client.is_model_ready("iris"))
            refused = refusal(lambda: client.infer("iris", [iris_input()]))
            registry.activate("iris", "iris", "1.0.0", model_files["1.0.0"], INTERFACE)
            after = (client.is_server_ready(), client.is_model_ready("iris"))
    assert before == (False, False) and after == (True, True)
    assert refused == (str(grpc.StatusCode.UNAVAILABLE), "model 'iris' is not loaded yet")


def test_routing_keys_split_the_canary_as_rest_does_and_metrics_say_so(site: Site, model_files: dict[str, Path]):
    site.registry.start_canary("iris", "iris", "3.0.0", model_files["3.0.0"], INTERFACE, digest=None, weight=40)
    keys = [f"caller-{n}" for n in range(40)]
    by_metadata, by_parameter, by_rest = {}, {}, {}
    for key in keys:
        answer = site.grpc.infer("iris", [iris_input()], headers={"x-routing-key": key})
        by_metadata[key] = answer.get_response().model_version
        answer = site.grpc.infer("iris", [iris_input()], parameters={"routing_key": key})
        by_parameter[key] = answer.get_response().model_version
        by_rest[key] = site.rest.post(INFER, json=infer_body(X), headers={"x-routing-key": key}).json()["model_version"]

    expected = {key: "3.0.0" if bucket("iris" + key, 100) < 40 else "2.0.0" for key in keys}
    assert by_metadata == by_parameter == by_rest == expected
    assert set(expected.values()) == {"2.0.0", "3.0.0"}
    counts = _requests_by_protocol(site.rest.get("/metrics").text)
    per_version = Counter(expected.values())
    for version, count in per_version.items():
        assert counts[("grpc", version)] == 2 * count and counts[("rest", version)] == count


def _requests_by_protocol(scrape: str) -> Counter:
    from prometheus_client.parser import text_string_to_metric_families

    counts: Counter = Counter()
    for family in text_string_to_metric_families(scrape):
        for sample in family.samples:
            if sample.name == "reconciler_inference_requests_total" and sample.labels["outcome"] == "success":
                counts[(sample.labels["protocol"], sample.labels["version"])] += sample.value
    return counts


def test_shadow_traffic_from_grpc_is_measured_as_from_rest(site: Site, model_files: dict[str, Path]):
    site.registry.start_canary("iris", "iris", "3.0.0", model_files["3.0.0"], INTERFACE, digest=None, mirror=True)
    before = site.metrics.snapshot()
    rows = np.random.default_rng(4).normal(scale=2.0, size=(30, 1, 4)).astype(np.float32)
    for row in rows:
        site.grpc.infer("iris", [iris_input(row)])
        site.rest.post(INFER, json=infer_body(row))
    deadline = time.monotonic() + 20
    while window_stats(before, site.metrics.snapshot(), "iris", "3.0.0").shadow_requests < 60:
        assert time.monotonic() < deadline, "the shadow runners did not finish"
        time.sleep(0.01)
    after = site.metrics.snapshot()
    window = window_stats(before, after, "iris", "3.0.0")
    stable = window_stats(before, after, "iris", "2.0.0")
    assert (window.shadow_requests, window.requests, stable.requests) == (60, 0, 60)
    agreements = after[("iris", "3.0.0")].shadow_agreements
    assert 0 < agreements < 60 and agreements % 2 == 0  # each row agreed, or not, over both protocols alike


def test_grpc_and_rest_requests_are_batched_together(model_files: dict[str, Path]):
    """With dynamic batching, concurrent requests over both protocols share one queue: fewer model
    runs than requests, and each caller gets its own rows back."""
    registry = registry_with(model_files, "1.0.0")
    registry.set_batching({"iris": BatchPolicy(max_batch_size=16, max_queue_delay=0.05)})
    rows = np.random.default_rng(6).normal(size=(12, 1, 4)).astype(np.float32)
    start = threading.Barrier(len(rows))

    with grpc_beside_rest(registry) as (server, metrics, rest):
        def call(number: int) -> np.ndarray:
            x = rows[number]
            start.wait()
            if number % 2:
                with triton.InferenceServerClient(f"127.0.0.1:{server.port}") as client:
                    return client.infer("iris", [iris_input(x)]).as_numpy("output")
            with httpx.Client(base_url=str(rest.base_url), timeout=10) as client:
                return np.asarray(client.post(INFER, json=infer_body(x)).json()["outputs"][0]["data"]).reshape(1, 3)

        with ThreadPoolExecutor(len(rows)) as pool:
            answers = list(pool.map(call, range(len(rows))))
        stats = metrics.snapshot()[("iris", "1.0.0")]
    for x, answer in zip(rows, answers, strict=True):
        np.testing.assert_allclose(answer, dense_reference(LAYERS["1.0.0"], x), rtol=1e-5, atol=1e-6)
    assert stats.requests == len(rows) and stats.executions < len(rows)
    by_protocol = _requests_by_protocol(metrics.exposition().decode())
    assert by_protocol[("grpc", "1.0.0")] == by_protocol[("rest", "1.0.0")] == 6


@pytest.mark.parametrize("batching", [None, BatchPolicy(max_batch_size=16, max_queue_delay=0.002)], ids=["alone", "batched"])
def test_100_version_swaps_under_grpc_load_fail_no_request(model_files: dict[str, Path], batching: BatchPolicy | None):
    """Four tritonclient.grpc clients infer while the active version changes 100 times over three
    versions (each swap builds a new session): every call is answered, by the version it names,
    whether it ran alone or merged with others."""
    registry = registry_with(model_files, VERSIONS[0])
    registry.set_batching({"iris": batching} if batching else {})
    x = np.random.default_rng(9).normal(size=(3, 4)).astype(np.float32)
    expected = {version: dense_reference(LAYERS[version], x) for version in VERSIONS}
    failures: list[str] = []
    served: Counter = Counter()
    stop = threading.Event()

    def hammer(port: int) -> None:
        with triton.InferenceServerClient(f"127.0.0.1:{port}") as client:
            while not stop.is_set():
                try:
                    answer = client.infer("iris", [iris_input(x)], client_timeout=10)
                except InferenceServerException as exc:
                    failures.append(f"{exc.status()}: {exc.message()}")
                    continue
                version = answer.get_response().model_version
                if not np.allclose(answer.as_numpy("output"), expected[version], rtol=1e-5, atol=1e-6):
                    failures.append(f"response labelled {version} does not match {version}'s output")
                served[version] += 1

    with grpc_beside_rest(registry) as (server, _, _):
        clients = [threading.Thread(target=hammer, args=(server.port,)) for _ in range(4)]
        for thread in clients:
            thread.start()
        try:
            for swap in range(1, 101):
                version = VERSIONS[swap % len(VERSIONS)]
                registry.activate("iris", "iris", version, model_files[version], INTERFACE)
                time.sleep(0.01)
        finally:
            stop.set()
            for thread in clients:
                thread.join()
    print(f"\n{dict(served)} gRPC requests served across 100 swaps")
    assert failures == []
    assert set(served) == set(VERSIONS)


def test_stop_finishes_cleanly_and_leaves_no_thread(model_files: dict[str, Path]):
    registry = registry_with(model_files, "1.0.0")
    app = build_app(registry, site=SITE)
    with serve(app):
        before = set(threading.enumerate())
        server = GrpcServer(registry, app.state.inference)
        server.start()
        with triton.InferenceServerClient(f"127.0.0.1:{server.port}") as client:
            assert client.infer("iris", [iris_input()]).get_response().model_version == "1.0.0"
            server.stop()
            code, _ = refusal(lambda: client.infer("iris", [iris_input()], client_timeout=5))
        deadline = time.monotonic() + 5
        while set(threading.enumerate()) - before and time.monotonic() < deadline:
            time.sleep(0.01)
        left = set(threading.enumerate()) - before
    assert code == str(grpc.StatusCode.UNAVAILABLE)
    assert left == set()


def test_a_port_in_use_is_refused(model_files: dict[str, Path]):
    registry = registry_with(model_files, "1.0.0")
    with grpc_beside_rest(registry) as (first, _, _):
        second = GrpcServer(registry, build_app(registry, site=SITE).state.inference, port=first.port)
        with pytest.raises(Stalled) as raised:
            second.start()
    assert raised.value.reason == "ListenFailed" and str(first.port) in str(raised.value)


def test_an_agent_serves_its_fleet_over_grpc_and_stops_cleanly(fleet, tmp_path: Path):
    """`reconciler run --grpc-listen`: the site converges, tritonclient.grpc gets the validated
    forecast from the version the fleet names, and SIGTERM ends the process with status 0; then
    `reconciler serve --grpc-listen` serves the same from the state it left."""
    doc = fleet.model_doc("demand-forecast")
    case = next(v for v in doc["spec"]["versions"] if v["version"] == "1.0.0")["validation"][0]
    features = np.asarray(case["inputs"]["features"], dtype=np.float32)
    state = str(tmp_path / "state")
    run = ["run", "--repo", fleet.url, "--site", "store-berlin-01", "--state", state, "--interval", "500ms",
           "--trust-key", str(EXAMPLE / "keys" / "demo.pub")]  # fmt: skip
    for command in (run, ["serve", "--state", state]):
        grpc_port = free_port()
        log_path = tmp_path / f"{command[0]}.log"
        with log_path.open("wb") as log:
            process = subprocess.Popen(
                [sys.executable, "-m", "reconciler", *command, "--listen", f"127.0.0.1:{free_port()}",
                 "--grpc-listen", f"127.0.0.1:{grpc_port}"],
                stdout=log, stderr=subprocess.STDOUT)  # fmt: skip
            try:
                with triton.InferenceServerClient(f"127.0.0.1:{grpc_port}") as client:
                    _await_model(client, "demand-forecast", process, log_path)
                    tensor = triton.InferInput("features", list(features.shape), "FP32")
                    tensor.set_data_from_numpy(features)
                    answer = client.infer("demand-forecast", [tensor])
                assert answer.get_response().model_version == "1.0.0", command[0]
                np.testing.assert_allclose(answer.as_numpy("forecast"), case["expected"]["forecast"], atol=1e-4)
                process.send_signal(signal.SIGTERM)
                assert process.wait(timeout=30) == 0, log_path.read_text()
            finally:
                stop_all([process])


def _await_model(client: triton.InferenceServerClient, name: str, process: subprocess.Popen, log: Path) -> None:
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        assert process.poll() is None, log.read_text()
        try:
            if client.is_model_ready(name):
                return
        except InferenceServerException:
            pass  # not listening yet, or the deployment not known yet
        time.sleep(0.2)
    raise AssertionError(f"{name} never became ready over gRPC:\n{log.read_text()}")
