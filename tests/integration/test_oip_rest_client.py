"""The runtime spoken to by the most used Open Inference Protocol client, the real
``tritonclient.http``, as its users call it: binary tensor data (its default) and JSON, every
datatype a model can take, version-pinned requests, the metadata, configuration, repository index
and statistics calls, errors it can parse, and 100 version swaps under its load."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
import tritonclient.http as triton
from runtime_models import LAYERS, VERSIONS, registry_with, write_models
from starlette.routing import Route
from triton_load import swaps_under_load
from tritonclient.utils import InferenceServerException

from reconciler.devtools.onnx_builder import dense_reference, echo_model
from reconciler.manifests.models import ModelInterface, TensorSpec
from reconciler.runtime.registry import ModelRegistry
from reconciler.runtime.server import RuntimeServer, build_app

DTYPES = ("bool", "uint8", "int8", "int16", "int32", "int64", "float16", "float32", "float64", "string")
DATATYPES = {"bool": "BOOL", "uint8": "UINT8", "int8": "INT8", "int16": "INT16", "int32": "INT32",
             "int64": "INT64", "float16": "FP16", "float32": "FP32", "float64": "FP64", "string": "BYTES"}
ECHO_INTERFACE = ModelInterface(
    inputs=[TensorSpec(name=f"x_{dtype}", dtype=dtype, shape=[-1, 2]) for dtype in DTYPES],
    outputs=[TensorSpec(name=f"y_{dtype}", dtype=dtype, shape=[-1, 2]) for dtype in DTYPES],
)
X = np.random.default_rng(3).normal(size=(3, 4)).astype(np.float32)


def echo_values(dtype: str) -> np.ndarray:
    """Two rows of a datatype's extremes, as the client's numpy arrays hold them."""
    if dtype == "string":
        return np.asarray([[b"", "grüße".encode()], [b"a b", b"\x00z"]], dtype=object)
    if dtype == "bool":
        return np.asarray([[True, False], [False, True]])
    info = np.iinfo(dtype) if np.dtype(dtype).kind in "iu" else np.finfo(dtype)
    return np.asarray([[info.min, info.max], [0, 1]], dtype=dtype)


@pytest.fixture(scope="module")
def model_files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    directory = tmp_path_factory.mktemp("models")
    files = write_models(directory)
    files["echo"] = directory / "echo.onnx"
    files["echo"].write_bytes(echo_model(DTYPES))
    return files


def site_registry(model_files: dict[str, Path]) -> ModelRegistry:
    """iris 2.0.0 active with 1.0.0 kept, and the echo model of every datatype."""
    registry = registry_with(model_files, "1.0.0", "2.0.0")
    registry.activate("echo", "echo", "1.0.0", model_files["echo"], ECHO_INTERFACE)
    return registry


@pytest.fixture(scope="module")
def server(model_files: dict[str, Path]) -> Iterator[RuntimeServer]:
    with RuntimeServer(build_app(site_registry(model_files), site="store-1")) as running:
        yield running


@pytest.fixture
def client(server: RuntimeServer) -> Iterator[triton.InferenceServerClient]:
    triton_client = triton.InferenceServerClient(url=f"127.0.0.1:{server.port}", network_timeout=10)
    yield triton_client
    triton_client.close()


def iris_inputs(binary: bool) -> list[triton.InferInput]:
    tensor = triton.InferInput("input", list(X.shape), "FP32")
    tensor.set_data_from_numpy(X, binary_data=binary)
    return [tensor]


# --- inference ----------------------------------------------------------------------------------


@pytest.mark.parametrize("binary", [True, False], ids=["binary", "json"])
def test_infer_with_the_clients_defaults_and_with_json(client: triton.InferenceServerClient, binary: bool):
    outputs = [triton.InferRequestedOutput("output", binary_data=binary)]
    result = client.infer("iris", iris_inputs(binary), outputs=outputs)
    np.testing.assert_allclose(result.as_numpy("output"), dense_reference(LAYERS["2.0.0"], X), rtol=1e-5, atol=1e-6)
    [described] = result.get_response()["outputs"]
    assert ("parameters" in described, "data" in described) == (binary, not binary)


def test_infer_without_requested_outputs_gets_every_output_binary(client: triton.InferenceServerClient):
    result = client.infer("iris", iris_inputs(True))
    [described] = result.get_response()["outputs"]
    assert described["parameters"] == {"binary_data_size": 3 * 3 * 4}
    np.testing.assert_allclose(result.as_numpy("output"), dense_reference(LAYERS["2.0.0"], X), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("binary_in", [True, False], ids=["binary-in", "json-in"])
@pytest.mark.parametrize("binary_out", [True, False], ids=["binary-out", "json-out"])
def test_every_datatype_goes_through_unchanged(client: triton.InferenceServerClient, binary_in: bool, binary_out: bool):
    inputs = []
    for dtype in DTYPES:
        tensor = triton.InferInput(f"x_{dtype}", [2, 2], DATATYPES[dtype])
        inputs.append(tensor.set_data_from_numpy(echo_values(dtype), binary_data=binary_in))
    outputs = [triton.InferRequestedOutput(f"y_{dtype}", binary_data=binary_out) for dtype in DTYPES]
    result = client.infer("echo", inputs, outputs=outputs)
    for dtype in DTYPES:
        got, sent = result.as_numpy(f"y_{dtype}"), echo_values(dtype)
        if dtype == "string":  # binary BYTES come back as bytes, JSON ones as text
            sent = sent if binary_out else np.vectorize(bytes.decode, otypes=[object])(sent)
        assert got.dtype == sent.dtype, dtype
        assert got.tolist() == sent.tolist(), dtype


@pytest.mark.parametrize("version", ["1.0.0", "2.0.0"])
def test_a_pinned_version_answers(client: triton.InferenceServerClient, version: str):
    result = client.infer("iris", iris_inputs(True), model_version=version)
    assert result.get_response()["model_version"] == version
    np.testing.assert_allclose(result.as_numpy("output"), dense_reference(LAYERS[version], X), rtol=1e-5, atol=1e-6)


# --- metadata, configuration, index, statistics ----------------------------------------------------


def test_health_and_server_metadata(client: triton.InferenceServerClient):
    assert client.is_server_live() and client.is_server_ready()
    assert client.is_model_ready("iris") and client.is_model_ready("iris", "1.0.0")
    assert not client.is_model_ready("nope")
    metadata = client.get_server_metadata()
    assert metadata["extensions"] == ["binary_tensor_data", "model_configuration", "statistics"]


def test_model_metadata_and_config(client: triton.InferenceServerClient):
    metadata = client.get_model_metadata("iris", "1.0.0")
    assert metadata["inputs"] == [{"name": "input", "datatype": "FP32", "shape": [-1, 4]}]
    config = client.get_model_config("iris")
    assert (config["name"], config["platform"], config["max_batch_size"]) == ("iris", "onnxruntime_onnx", 0)
    assert config["input"] == [{"name": "input", "data_type": "TYPE_FP32", "dims": [-1, 4]}]
    assert config["output"] == [{"name": "output", "data_type": "TYPE_FP32", "dims": [-1, 3]}]
    echo = client.get_model_config("echo", "1.0.0")
    assert [tensor["data_type"] for tensor in echo["input"]] == [
        "TYPE_BOOL", "TYPE_UINT8", "TYPE_INT8", "TYPE_INT16", "TYPE_INT32", "TYPE_INT64",
        "TYPE_FP16", "TYPE_FP32", "TYPE_FP64", "TYPE_STRING",
    ]


def test_repository_index_lists_every_loaded_version(client: triton.InferenceServerClient):
    index = client.get_model_repository_index()
    assert [(entry["name"], entry["version"], entry["state"]) for entry in index] == [
        ("echo", "1.0.0", "READY"), ("iris", "2.0.0", "READY"), ("iris", "1.0.0", "READY"),
    ]


def test_statistics_count_what_each_version_answered(model_files: dict[str, Path]):
    with RuntimeServer(build_app(site_registry(model_files), site="store-1")) as server:
        client = triton.InferenceServerClient(url=f"127.0.0.1:{server.port}")
        for _ in range(3):
            client.infer("iris", iris_inputs(True))
        client.infer("iris", iris_inputs(True), model_version="1.0.0")
        with pytest.raises(InferenceServerException):
            client.infer("iris", [triton.InferInput("input", [1, 5], "FP32").set_data_from_numpy(np.zeros((1, 5), np.float32))])
        every = client.get_inference_statistics()
        one = client.get_inference_statistics("iris", "2.0.0")
        client.close()

    by_version = {(s["name"], s["version"]): s["inference_stats"] for s in every["model_stats"]}
    assert set(by_version) == {("iris", "2.0.0"), ("iris", "1.0.0"), ("echo", "1.0.0")}
    assert by_version["iris", "2.0.0"]["success"]["count"] == 3
    assert by_version["iris", "2.0.0"]["success"]["ns"] > 0
    assert by_version["iris", "2.0.0"]["fail"]["count"] == 1
    assert by_version["iris", "1.0.0"]["success"]["count"] == 1
    assert by_version["echo", "1.0.0"]["success"] == {"count": 0, "ns": 0}
    assert [s["version"] for s in one["model_stats"]] == ["2.0.0"]


# --- errors -------------------------------------------------------------------------------------


def refusal(call) -> tuple[str | None, str]:
    with pytest.raises(InferenceServerException) as caught:
        call()
    return caught.value.status(), caught.value.message()


@pytest.mark.parametrize(
    "call, status, message",
    [
        (lambda c: c.infer("nope", iris_inputs(True)), "404", "model 'nope' is not served here"),
        (lambda c: c.infer("iris", iris_inputs(True), model_version="9.9.9"), "404", "no version '9.9.9' loaded"),
        (lambda c: c.get_model_config("nope"), "404", "model 'nope' is not served here"),
        (lambda c: c.get_model_metadata("iris", "9.9.9"), "404", "no version '9.9.9' loaded"),
        (lambda c: c.get_inference_statistics("nope"), "404", "model 'nope' is not served here"),
        (lambda c: c.load_model("iris"), "404", "POST /v2/repository/models/iris/load: Not Found"),
        (lambda c: c.get_log_settings(), "404", "GET /v2/logging: Not Found"),
        (
            lambda c: c.infer("iris", [triton.InferInput("input", [1, 5], "FP32").set_data_from_numpy(
                np.zeros((1, 5), np.float32))]),
            "400", "input 'input' has shape [-1, 4] (-1: any size), got [1, 5]",
        ),
        (
            lambda c: c.infer("iris", [triton.InferInput("input", [1, 4], "FP64").set_data_from_numpy(
                np.zeros((1, 4), np.float64))]),
            "400", "input 'input' has datatype FP32, got 'FP64'",
        ),
        (
            lambda c: c.infer("iris", iris_inputs(True), outputs=[triton.InferRequestedOutput("nope")]),
            "400", "model has no output 'nope'",
        ),
    ],
    ids=["unknown-model", "unknown-version", "config-unknown", "metadata-unknown-version",
         "statistics-unknown", "load-not-served", "unknown-route", "bad-shape", "bad-datatype", "bad-output"],
)
def test_errors_are_json_the_client_parses(client: triton.InferenceServerClient, call, status: str, message: str):
    got_status, got_message = refusal(lambda: call(client))
    assert got_status == status
    assert message in got_message


@pytest.mark.parametrize(
    "method, path, status",
    [("GET", "/nothing/here", 404), ("GET", "/v2/models/iris/infer", 405), ("DELETE", "/v2", 405)],
)
def test_starlettes_own_refusals_are_json_too(server: RuntimeServer, method: str, path: str, status: int):
    response = httpx.request(method, f"http://127.0.0.1:{server.port}{path}")
    assert response.status_code == status
    assert response.headers["content-type"] == "application/json"
    assert path in response.json()["error"]


def test_a_binary_body_with_a_broken_header_length_is_refused(server: RuntimeServer):
    body = b'{"inputs":[]}' + b"\0" * 16
    response = httpx.post(f"http://127.0.0.1:{server.port}/v2/models/iris/infer", content=body,
                          headers={"Inference-Header-Content-Length": "999"})
    assert response.status_code == 400
    assert response.json() == {"error": "Inference-Header-Content-Length 999 does not fit a body of 29 bytes"}


@pytest.mark.parametrize(
    "encoding, body, message",
    [
        ("br", b"{}", "Content-Encoding 'br' is not supported (gzip, deflate)"),
        ("gzip", b"not gzip at all", "request body is not valid gzip"),
        ("deflate", b"not zlib at all", "request body is not valid deflate"),
    ],
)
def test_a_body_in_an_unknown_or_broken_encoding_is_refused(server: RuntimeServer, encoding: str, body: bytes,
                                                           message: str):
    response = httpx.post(f"http://127.0.0.1:{server.port}/v2/models/iris/infer", content=body,
                          headers={"Content-Encoding": encoding})
    assert response.status_code == 400
    assert message in response.json()["error"]


@pytest.mark.parametrize("algorithm", ["gzip", "deflate"])
def test_compressed_requests_are_read(client: triton.InferenceServerClient, algorithm: str):
    result = client.infer("iris", iris_inputs(True), request_compression_algorithm=algorithm)
    np.testing.assert_allclose(result.as_numpy("output"), dense_reference(LAYERS["2.0.0"], X), rtol=1e-5, atol=1e-6)


# --- version swaps under load ---------------------------------------------------------------------


def test_version_swaps_under_binary_load_fail_no_request(model_files: dict[str, Path]):
    expected = {version: dense_reference(LAYERS[version], X) for version in VERSIONS}
    load = swaps_under_load(registry_with(model_files, VERSIONS[0]), model_files, X, expected)
    print(f"\n{load.served} requests served across 100 swaps")
    assert load.failures == []
    assert set(load.served) == set(VERSIONS)


def test_a_fault_of_the_runtime_itself_is_a_json_500(model_files: dict[str, Path]):
    def broken(request: object) -> None:
        raise RuntimeError("wires crossed")

    app = build_app(site_registry(model_files), site="store-1", extra_routes=[Route("/broken", broken)])
    with RuntimeServer(app) as server:
        response = httpx.get(f"http://127.0.0.1:{server.port}/broken")
    assert response.status_code == 500
    assert response.json() == {"error": "GET /broken: internal error: RuntimeError: wires crossed"}
