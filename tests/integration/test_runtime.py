"""The inference runtime: real onnxruntime sessions of tiny real models, behind a real uvicorn
server on loopback, spoken to over HTTP the way a client would."""

from __future__ import annotations

import hashlib
import http.client
import json
import socket
import statistics
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
from prometheus_client.parser import text_string_to_metric_families
from runtime_models import (
    INFER,
    INTERFACE,
    LAYERS,
    VERSIONS,
    Load,
    infer_body,
    output,
    registry_with,
    serve,
    write_models,
)

from reconciler import __version__
from reconciler.devtools.onnx_builder import dense_model, dense_reference, external_data_model
from reconciler.errors import ReconcilerError, Stalled, Transient
from reconciler.manifests.models import ModelInterface, TensorSpec
from reconciler.runtime import oip
from reconciler.runtime.registry import ModelRegistry, NotServed
from reconciler.runtime.server import RuntimeServer, build_app

SITE = "store-1"
GOOD_INPUT = {"name": "input", "shape": [1, 4], "datatype": "FP32", "data": [0.1, 0.2, 0.3, 0.4]}


@pytest.fixture(scope="module")
def model_files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return write_models(tmp_path_factory.mktemp("models"))


@pytest.fixture(scope="module")
def client(model_files: dict[str, Path]) -> Iterator[httpx.Client]:
    """Read-only tests share one server: 2.0.0 active, 1.0.0 kept as the previous version."""
    with serve(build_app(registry_with(model_files, "1.0.0", "2.0.0"), site=SITE)) as client:
        yield client


# --- inference --------------------------------------------------------------------------------


@pytest.mark.parametrize("layout", ["nested", "flat"])
def test_infer_returns_the_numpy_reference(client: httpx.Client, layout: str):
    x = np.random.default_rng(7).normal(size=(5, 4)).astype(np.float32)
    tensor = {"name": "input", "shape": [5, 4], "datatype": "FP32"}
    tensor["data"] = x.tolist() if layout == "nested" else x.ravel().tolist()

    response = client.post("/v2/models/iris/infer", json={"id": "req-1", "inputs": [tensor]})

    assert response.status_code == 200, response.text
    body = response.json()
    assert (body["model_name"], body["model_version"], body["id"]) == ("iris", "2.0.0", "req-1")
    assert response.headers["x-model-version"] == "2.0.0"
    assert {k: v for k, v in body["outputs"][0].items() if k != "data"} == {
        "name": "output",
        "datatype": "FP32",
        "shape": [5, 3],
    }
    np.testing.assert_allclose(output(response), dense_reference(LAYERS["2.0.0"], x), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("version", ["1.0.0", "2.0.0"])
def test_pinned_version_is_served_by_that_version(client: httpx.Client, version: str):
    x = np.random.default_rng(8).normal(size=(2, 4)).astype(np.float32)

    response = client.post(
        f"/v2/models/iris/versions/{version}/infer", json=infer_body(x, outputs=[{"name": "output"}])
    )

    assert response.status_code == 200, response.text
    assert response.json()["model_version"] == version
    assert "id" not in response.json()
    np.testing.assert_allclose(output(response), dense_reference(LAYERS[version], x), rtol=1e-5, atol=1e-6)


MODEL_METADATA = {
    "name": "iris",
    "versions": ["2.0.0", "1.0.0"],
    "platform": "onnxruntime",
    "inputs": [{"name": "input", "datatype": "FP32", "shape": [-1, 4]}],
    "outputs": [{"name": "output", "datatype": "FP32", "shape": [-1, 3]}],
}


@pytest.mark.parametrize(
    "path, expected",
    [
        ("/v2", {"name": "reconciler", "version": __version__, "extensions": ["binary_tensor_data", "model_configuration", "statistics"], "site": SITE}),
        ("/v2/health/live", {"live": True}),
        ("/v2/health/ready", {"ready": True}),
        ("/v2/models/iris", MODEL_METADATA),
        ("/v2/models/iris/versions/1.0.0", MODEL_METADATA),
        ("/v2/models/iris/ready", {"name": "iris", "ready": True}),
        ("/v2/models/iris/versions/1.0.0/ready", {"name": "iris", "ready": True}),
    ],
)
def test_metadata_endpoints(client: httpx.Client, path: str, expected: dict):
    response = client.get(path)
    assert response.status_code == 200
    assert response.json() == expected


def _with_input(**changes: object) -> dict:
    return {"inputs": [{**GOOD_INPUT, **changes}]}


REFUSED = [
    ("unknown model", "/v2/models/nope/infer", _with_input(), 404, "model 'nope' is not served here"),
    ("unknown version", "/v2/models/iris/versions/9.9.9/infer", _with_input(), 404, "no version '9.9.9'"),
    ("bad json", INFER, b'{"inputs": [', 400, "request body is not valid JSON"),
    ("body not an object", INFER, [GOOD_INPUT], 400, "request body must be a JSON object"),
    ("missing inputs", INFER, {}, 400, "'inputs' must be a non-empty list of tensors"),
    ("empty inputs", INFER, {"inputs": []}, 400, "'inputs' must be a non-empty list of tensors"),
    ("input without name", INFER, {"inputs": [{"datatype": "FP32"}]}, 400, "with a string 'name'"),
    ("wrong input name", INFER, _with_input(name="pixels"), 400, "no input 'pixels'; its inputs are: input"),
    ("input twice", INFER, {"inputs": [GOOD_INPUT, GOOD_INPUT]}, 400, "input 'input' is given more than once"),
    ("wrong datatype", INFER, _with_input(datatype="INT64", data=[1, 2, 3, 4]), 400, "datatype FP32, got 'INT64'"),
    ("unknown datatype", INFER, _with_input(datatype="FLOAT"), 400, "datatype FP32, got 'FLOAT'"),
    ("wrong rank", INFER, _with_input(shape=[4]), 400, "has shape [-1, 4] (-1: any size), got [4]"),
    ("wrong fixed dimension", INFER, _with_input(shape=[1, 5], data=[0.0] * 5), 400, "got [1, 5]"),
    ("negative dimension", INFER, _with_input(shape=[-1, 4]), 400, "list of non-negative integers"),
    ("shape not a list", INFER, _with_input(shape="1x4"), 400, "list of non-negative integers"),
    ("data shorter than shape", INFER, _with_input(shape=[2, 4]), 400, "shape [2, 4] needs 8 values, got 4"),
    ("data longer than shape", INFER, _with_input(data=[0.0] * 5), 400, "shape [1, 4] needs 4 values, got 5"),
    ("ragged data", INFER, _with_input(data=[[1.0, 2.0], [3.0]]), 400, "'data' is not a rectangular array"),
    ("strings as data", INFER, _with_input(data=["a", "b", "c", "d"]), 400, "values that are not FP32"),
    ("no data", INFER, {"inputs": [{k: v for k, v in GOOD_INPUT.items() if k != "data"}]}, 400, "has no 'data'"),
    ("unknown output", INFER, {**_with_input(), "outputs": [{"name": "logits"}]}, 400, "no output 'logits'"),
    ("outputs not objects", INFER, {**_with_input(), "outputs": ["output"]}, 400, "'outputs' must be a list"),
    ("id not a string", INFER, {**_with_input(), "id": 5}, 400, "'id' must be a string"),
    ("parameters not an object", INFER, {**_with_input(), "parameters": []}, 400, "'parameters' must be an object"),
    ("routing key not a string", INFER, {**_with_input(), "parameters": {"routing_key": 7}}, 400, "'parameters.routing_key' must be a string"),
]


@pytest.mark.parametrize("path, body, status, message", [case[1:] for case in REFUSED], ids=[c[0] for c in REFUSED])
def test_bad_requests_are_refused_with_a_clear_error(
    client: httpx.Client, path: str, body: object, status: int, message: str
):
    content = body if isinstance(body, bytes) else json.dumps(body).encode()
    response = client.post(path, content=content, headers={"content-type": "application/json"})
    assert response.status_code == status
    assert message in response.json()["error"]
    if status == 400:  # the request reached a version: the answer says which
        assert response.headers["x-model-version"] == "2.0.0"


@pytest.mark.parametrize(
    "path, message",
    [
        ("/v2/models/nope", "model 'nope' is not served here"),
        ("/v2/models/iris/versions/0.1.0", "no version '0.1.0' loaded; loaded: 2.0.0, 1.0.0"),
        ("/v2/models/nope/ready", "model 'nope' is not served here"),
    ],
)
def test_metadata_of_unknown_model_or_version_is_404(client: httpx.Client, path: str, message: str):
    response = client.get(path)
    assert response.status_code == 404
    assert message in response.json()["error"]


def test_a_model_that_fails_at_run_time_answers_500_and_counts_an_error(model_files: dict[str, Path]):
    # The interface promises an input the model does not have: onnxruntime refuses the feed.
    wrong = ModelInterface(inputs=[TensorSpec(name="features", dtype="float32", shape=[-1, 4])], outputs=INTERFACE.outputs)
    registry = ModelRegistry()
    registry.activate("iris", "iris", "1.0.0", model_files["1.0.0"], wrong)
    app = build_app(registry, site=SITE)
    with serve(app) as client:
        response = client.post(INFER, json={"inputs": [{**GOOD_INPUT, "name": "features"}]})

    assert response.status_code == 500
    assert "model iris version 1.0.0 failed" in response.json()["error"]
    stats = app.state.metrics.snapshot()[("iris", "1.0.0")]
    assert (stats.requests, stats.errors) == (1, 1)


# --- the codec on every datatype ----------------------------------------------------------------


def _interface_of(dtype: str) -> ModelInterface:
    return ModelInterface(
        inputs=[TensorSpec(name="x", dtype=dtype, shape=[-1])],
        outputs=[TensorSpec(name="y", dtype=dtype, shape=[-1])],
    )


def _request(datatype: str, data: list, shape: list[int] | None = None) -> bytes:
    tensor = {"name": "x", "shape": [len(data)] if shape is None else shape, "datatype": datatype, "data": data}
    return json.dumps({"inputs": [tensor]}).encode()


@pytest.mark.parametrize(
    "dtype, datatype, data",
    [
        ("bool", "BOOL", [True, False]),
        ("uint8", "UINT8", [0, 255]),
        ("int8", "INT8", [-128, 127]),
        ("int16", "INT16", [-32768, 32767]),
        ("int32", "INT32", [-(2**31), 2**31 - 1]),
        ("int64", "INT64", [-(2**63), 2**63 - 1]),
        ("float16", "FP16", [0.5, -2]),
        ("float32", "FP32", [0.25, 3]),
        ("float64", "FP64", [1e300, -1]),
        ("float32", "FP32", []),
    ],
)
def test_each_datatype_decodes_to_its_numpy_type(dtype: str, datatype: str, data: list):
    request = oip.decode_request(_request(datatype, data), _interface_of(dtype))
    array = request.feeds["x"]
    assert array.dtype == np.dtype(dtype)
    assert array.tolist() == np.asarray(data, dtype=dtype).tolist()
    assert oip.datatype(TensorSpec(name="x", dtype=dtype, shape=[-1])) == datatype


@pytest.mark.parametrize(
    "dtype, datatype, data, message",
    [
        ("int8", "INT8", [128, 0], "values outside the range of INT8"),
        ("uint8", "UINT8", [-1, 0], "values outside the range of UINT8"),
        ("int64", "INT64", [2**64, 0], "values that are not INT64"),
        ("int32", "INT32", [1.5, 2], "values that are not INT32"),
        ("bool", "BOOL", [1, 0], "values that are not BOOL"),
        ("float32", "FP32", [True, False], "values that are not FP32"),
        ("float32", "FP32", [None, 1.0], "values that are not FP32"),
    ],
)
def test_values_that_do_not_fit_the_datatype_are_refused(dtype: str, datatype: str, data: list, message: str):
    with pytest.raises(oip.RequestError, match=message):
        oip.decode_request(_request(datatype, data), _interface_of(dtype))


def test_outputs_encode_with_their_datatype_and_flat_data():
    outputs = {"y": np.arange(6, dtype=np.int32).reshape(2, 3)}
    content, header_length = oip.encode_response("iris", "1.0.0", "r", outputs)
    body = json.loads(content)
    assert header_length is None
    assert body == {
        "model_name": "iris",
        "model_version": "1.0.0",
        "id": "r",
        "outputs": [{"name": "y", "datatype": "INT32", "shape": [2, 3], "data": [0, 1, 2, 3, 4, 5]}],
    }


# --- the registry ----------------------------------------------------------------------------------


def test_activating_a_loaded_version_only_flips_the_pointer(model_files: dict[str, Path]):
    registry = registry_with(model_files, "1.0.0")
    first = registry.get("iris").session
    registry.activate("iris", "iris", "2.0.0", model_files["2.0.0"], INTERFACE)
    second = registry.get("iris").session

    registry.activate("iris", "iris", "1.0.0", model_files["1.0.0"], INTERFACE)  # rollback

    assert registry.get("iris").session is first
    assert registry.get("iris", "2.0.0").session is second
    assert [s.version for s in registry.state()["iris"].versions()] == ["1.0.0", "2.0.0"]


def test_a_third_version_unloads_the_oldest(model_files: dict[str, Path]):
    registry = registry_with(model_files, "1.0.0", "2.0.0", "3.0.0")
    assert [s.version for s in registry.state()["iris"].versions()] == ["3.0.0", "2.0.0"]
    with pytest.raises(NotServed, match="no version '1.0.0' loaded; loaded: 3.0.0, 2.0.0"):
        registry.get("iris", "1.0.0")


def test_the_loaded_digest_is_that_of_the_bytes(model_files: dict[str, Path]):
    digest = "sha256:" + hashlib.sha256(model_files["1.0.0"].read_bytes()).hexdigest()
    registry = ModelRegistry()
    registry.activate("iris", "iris", "1.0.0", model_files["1.0.0"], INTERFACE, digest=digest)
    assert registry.get("iris").digest == digest


@pytest.mark.parametrize(
    "content, digest, error, reason",
    [
        (b"not an onnx model", None, Stalled, "ModelLoadFailed"),
        (external_data_model(np.ones((4, 3))), None, Stalled, "ModelLoadFailed"),
        (None, None, Transient, "ArtifactUnreadable"),
        (dense_model(LAYERS["2.0.0"]), "sha256:" + "0" * 64, Stalled, "ArtifactDigestMismatch"),
    ],
    ids=["corrupt", "external-data", "missing", "digest-mismatch"],
)
def test_a_failed_load_keeps_the_active_version(
    model_files: dict[str, Path], tmp_path: Path, content: bytes | None, digest: str | None, error: type, reason: str
):
    registry = registry_with(model_files, "1.0.0")
    path = tmp_path / "next.onnx"
    if content is not None:
        path.write_bytes(content)

    with pytest.raises(error) as raised:
        registry.activate("iris", "iris", "2.0.0", path, INTERFACE, digest=digest)

    assert isinstance(raised.value, ReconcilerError) and raised.value.reason == reason
    assert registry.get("iris").version == "1.0.0"
    assert [s.version for s in registry.state()["iris"].versions()] == ["1.0.0"]


def test_readiness_follows_the_expected_deployments(model_files: dict[str, Path]):
    registry = ModelRegistry()
    assert not registry.ready()  # nothing expected yet and nothing loaded
    registry.activate("iris", "iris", "1.0.0", model_files["1.0.0"], INTERFACE)
    assert registry.ready()
    registry.expect(["iris", "wine"])
    assert not registry.ready()
    registry.expect(["iris"])
    assert registry.ready()
    registry.remove("iris")
    assert not registry.ready() and registry.deployments() == []
    registry.expect([])
    assert registry.ready()  # a site with nothing to serve is ready


# --- the server ------------------------------------------------------------------------------------


def test_ready_is_503_until_the_expected_model_is_activated(model_files: dict[str, Path]):
    registry = ModelRegistry(expected=["iris"])
    with serve(build_app(registry, site=SITE)) as client:
        before = client.get("/v2/health/ready")
        refused = client.post(INFER, json=_with_input())
        registry.activate("iris", "iris", "1.0.0", model_files["1.0.0"], INTERFACE)
        after = client.get("/v2/health/ready")

    assert (before.status_code, before.json()) == (503, {"ready": False})
    assert refused.status_code == 404
    assert (after.status_code, after.json()) == (200, {"ready": True})


@pytest.mark.parametrize("versions", [VERSIONS[:2], VERSIONS], ids=["flip-loaded", "load-each-swap"])
def test_version_swaps_under_load_fail_no_request(model_files: dict[str, Path], versions: tuple[str, ...]):
    """Four clients hammer /infer while the versions change 100 times. With three versions in a
    cycle every swap builds a new session and drops one that requests may still be running on."""
    registry = registry_with(model_files, versions[0])
    x = np.random.default_rng(9).normal(size=(3, 4)).astype(np.float32)
    expected = {version: dense_reference(LAYERS[version], x) for version in versions}
    with serve(build_app(registry, site=SITE)) as client, Load(str(client.base_url), x, expected) as load:
        for swap in range(1, 101):
            version = versions[swap % len(versions)]
            registry.activate("iris", "iris", version, model_files[version], INTERFACE)
            time.sleep(0.01)

    served = load.served
    print(f"\n{dict(served)} requests served across 100 swaps ({'+'.join(versions)})")
    assert load.failures == []
    assert set(served) == set(versions)


def test_metrics_count_requests_by_version(model_files: dict[str, Path]):
    app = build_app(registry_with(model_files, "1.0.0", "2.0.0"), site=SITE)
    with serve(app) as client:
        for _ in range(5):
            client.post(INFER, json=_with_input())
        for _ in range(3):
            client.post("/v2/models/iris/versions/1.0.0/infer", json=_with_input())
        client.post(INFER, json=_with_input(name="pixels"))
        scrape = client.get("/metrics")

    assert scrape.status_code == 200
    families = {family.name: family for family in text_string_to_metric_families(scrape.text)}
    requests = {
        (s.labels["deployment"], s.labels["version"], s.labels["outcome"]): s.value
        for s in families["reconciler_inference_requests"].samples
        if s.name.endswith("_total")
    }
    assert requests == {("iris", "2.0.0", "success"): 5, ("iris", "1.0.0", "success"): 3, ("iris", "2.0.0", "invalid"): 1}
    timed = {
        s.labels["version"]: s.value
        for s in families["reconciler_inference_request_duration_seconds"].samples
        if s.name.endswith("_count")
    }
    assert timed == {"2.0.0": 5, "1.0.0": 3}
    info = {(s.labels["model"], s.labels["version"], s.labels["state"]) for s in families["reconciler_model_info"].samples}
    assert info == {("iris", "2.0.0", "active"), ("iris", "1.0.0", "previous")}

    snapshot = app.state.metrics.snapshot()
    assert set(snapshot) == {("iris", "2.0.0"), ("iris", "1.0.0")}
    assert (snapshot[("iris", "2.0.0")].requests, snapshot[("iris", "2.0.0")].invalid) == (6, 1)
    assert snapshot[("iris", "2.0.0")].errors == 0
    assert snapshot[("iris", "1.0.0")].latency_buckets[-1] == (float("inf"), 3)


def test_a_busy_port_is_refused_clearly():
    with socket.create_server(("127.0.0.1", 0)) as taken:
        server = RuntimeServer(build_app(ModelRegistry(), site=SITE), port=taken.getsockname()[1])
        with pytest.raises(Stalled) as raised:
            server.start()
    assert raised.value.reason == "ListenFailed"


def test_stop_releases_the_port_and_the_thread():
    server = RuntimeServer(build_app(ModelRegistry(), site=SITE))
    server.start()
    port = server.port
    assert httpx.get(f"http://127.0.0.1:{port}/v2/health/live").json() == {"live": True}

    server.stop()

    assert f"runtime-{port}" not in [thread.name for thread in threading.enumerate()]
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"http://127.0.0.1:{port}/v2/health/live")


def test_http_latency_against_in_process_onnxruntime(model_files: dict[str, Path]):
    """Prints the p50 the HTTP path adds (run with -s); asserts every answer is right. http.client
    is the client because it adds the least of its own time to what is measured."""
    registry = registry_with(model_files, "1.0.0")
    x = np.asarray([[0.1, 0.2, 0.3, 0.4]], dtype=np.float32)
    expected = dense_reference(LAYERS["1.0.0"], x)
    session = registry.get("iris").session
    in_process = []
    for _ in range(500):
        started = time.perf_counter()
        session.run(None, {"input": x})
        in_process.append(time.perf_counter() - started)

    body = json.dumps(infer_body(x))
    over_http, wrong = [], 0
    with RuntimeServer(build_app(registry, site=SITE)) as server:
        connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
        for _ in range(550):
            started = time.perf_counter()
            connection.request("POST", INFER, body=body, headers={"content-type": "application/json"})
            response = connection.getresponse()
            payload = response.read()
            over_http.append(time.perf_counter() - started)
            output = json.loads(payload)["outputs"][0]["data"] if response.status == 200 else None
            wrong += output is None or not np.allclose(output, expected.ravel(), rtol=1e-5, atol=1e-6)
        connection.close()

    in_process_p50 = statistics.median(in_process) * 1e6
    http_p50 = statistics.median(over_http[50:]) * 1e6  # the first requests warm the thread pool
    print(f"\np50 in-process {in_process_p50:.0f} us, over HTTP {http_p50:.0f} us, added {http_p50 - in_process_p50:.0f} us")
    assert wrong == 0
