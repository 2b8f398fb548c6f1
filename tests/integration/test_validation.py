"""Model validation in a child process, on tiny real ONNX models and real onnxruntime."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from onnx import TensorProto, helper, numpy_helper

from reconciler.devtools.onnx_builder import (
    _serialize,
    custom_op_model,
    dense_model,
    dense_reference,
    external_data_model,
)
from reconciler.errors import Stalled
from reconciler.manifests.models import ModelInterface, ValidationCase
from reconciler.runtime.validation import run_validation

RNG = np.random.default_rng(7)
LAYERS = [
    (RNG.normal(size=(4, 3)), RNG.normal(size=3), "relu"),
    (RNG.normal(size=(3, 2)), RNG.normal(size=2), None),
]
X = RNG.normal(size=(2, 4)).astype(np.float32)
INTERFACE = {
    "inputs": [{"name": "input", "dtype": "float32", "shape": [-1, 4]}],
    "outputs": [{"name": "output", "dtype": "float32", "shape": [-1, 2]}],
}


def interface(**changes: list[dict]) -> ModelInterface:
    return ModelInterface.model_validate({**INTERFACE, **changes})


def case(name: str = "ok", x: object = X.tolist(), expected: object = None, **extra: object) -> ValidationCase:
    expected = dense_reference(LAYERS, X).tolist() if expected is None else expected
    return ValidationCase(name=name, inputs={"input": x}, expected={"output": expected}, **extra)


def children() -> list[int]:
    """Processes whose parent is this test process (a zombie counts: it was never reaped)."""
    found = []
    for stat_file in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat_file.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == os.getpid():
            found.append(int(stat_file.parent.name))
    return found


@pytest.fixture(autouse=True)
def no_child_left() -> Iterator[None]:
    before = set(children())  # processes earlier tests own (a cached git cat-file, say) are not ours
    yield
    assert set(children()) - before == set()


@pytest.fixture
def dense(tmp_path: Path) -> Path:
    path = tmp_path / "model.onnx"
    path.write_bytes(dense_model(LAYERS))
    return path


def write(tmp_path: Path, data: bytes) -> Path:
    path = tmp_path / "candidate.onnx"
    path.write_bytes(data)
    return path


# --- passing and failing cases -----------------------------------------------------------------

def test_passing_cases_give_a_report(dense: Path) -> None:
    single = X[:1].tolist()
    cases = [case("batch"), case("single", single, dense_reference(LAYERS, np.array(single)).tolist())]

    report = run_validation(dense, interface(), cases)

    assert [(r.name, r.passed) for r in report.cases] == [("batch", True), ("single", True)]
    assert all(r.max_abs_error < 1e-5 for r in report.cases)
    assert 0 < report.seconds < 30


def test_no_cases_still_loads_and_checks_the_interface(dense: Path) -> None:
    assert run_validation(dense, interface(), []).cases == []


def test_case_outside_tolerance_fails_with_the_error(dense: Path) -> None:
    expected = dense_reference(LAYERS, X)
    expected[1, 0] += 0.31
    cases = [case("good"), case("off", expected=expected.tolist())]

    with pytest.raises(Stalled) as caught:
        run_validation(dense, interface(), cases)

    assert caught.value.reason == "ValidationFailed"
    assert caught.value.message == "case 'off': output 'output' differs by 0.31 > tolerance 1e-05"


def test_tolerance_is_per_case(dense: Path) -> None:
    expected = dense_reference(LAYERS, X) + 0.01
    report = run_validation(dense, interface(), [case(expected=expected.tolist(), tolerance=0.02)])
    assert report.cases[0].passed and 0.009 < report.cases[0].max_abs_error < 0.011


BAD_CASES = [
    ("missing-input", ValidationCase(name="c", inputs={}, expected={"output": [[0, 0]]}), "no value for input 'input'"),
    ("unknown-input", ValidationCase(name="c", inputs={"input": X.tolist(), "extra": [1]}, expected={}), "'extra' is not in the interface"),
    ("unknown-output", ValidationCase(name="c", inputs={"input": X.tolist()}, expected={"logits": [1]}), "'logits' is not in the interface"),
    ("wrong-output-shape", case(expected=[[0.0, 0.0]]), "output 'output' has shape [2, 2], expected [1, 2]"),
    ("non-numeric-input", case(x=[["a", "b", "c", "d"]]), "inference failed: ValueError"),
    ("wrong-input-shape", case(x=[[1.0, 2.0, 3.0]]), "inference failed: [ONNXRuntimeError]"),
    ("non-numeric-expected", case(expected=[["x", "y"]] * 2), "expected value of output 'output' is not numeric"),
    ("nan-expected", case(expected=[[float("nan")] * 2] * 2), "differs by nan"),
]


@pytest.mark.parametrize(("bad", "fragment"), [b[1:] for b in BAD_CASES], ids=[b[0] for b in BAD_CASES])
def test_bad_case_data_fails_the_case(dense: Path, bad: ValidationCase, fragment: str) -> None:
    with pytest.raises(Stalled) as caught:
        run_validation(dense, interface(), [bad])
    assert caught.value.reason == "ValidationFailed"
    assert fragment in caught.value.message
    assert caught.value.message.startswith(f"case '{bad.name}': ")


# --- the model against its interface --------------------------------------------------------------

MISMATCHES = [
    ("input-name", {"inputs": [{"name": "features", "dtype": "float32", "shape": [-1, 4]}]},
     "input 'features' is not in the model (it has input)"),
    ("input-dtype", {"inputs": [{"name": "input", "dtype": "int64", "shape": [-1, 4]}]},
     "input 'input': dtype int64 expected, model has float32"),
    ("input-rank", {"inputs": [{"name": "input", "dtype": "float32", "shape": [4]}]},
     "input 'input': shape [4] expected, model has ['batch', 4]"),
    ("input-size", {"inputs": [{"name": "input", "dtype": "float32", "shape": [-1, 5]}]},
     "input 'input': shape [-1, 5] expected"),
    ("input-dynamic-but-model-fixed", {"inputs": [{"name": "input", "dtype": "float32", "shape": [-1, -1]}]},
     "input 'input': shape [-1, -1] expected"),
    ("output-name", {"outputs": [{"name": "scores", "dtype": "float32", "shape": [-1, 2]}]},
     "output 'scores' is not in the model"),
    ("output-dtype", {"outputs": [{"name": "output", "dtype": "float16", "shape": [-1, 2]}]},
     "output 'output': dtype float16 expected, model has float32"),
]


@pytest.mark.parametrize(("changes", "fragment"), [m[1:] for m in MISMATCHES], ids=[m[0] for m in MISMATCHES])
def test_interface_mismatch_is_refused(dense: Path, changes: dict, fragment: str) -> None:
    with pytest.raises(Stalled) as caught:
        run_validation(dense, interface(**changes), [case()])
    assert caught.value.reason == "ModelInterfaceMismatch"
    assert fragment in caught.value.message


@pytest.mark.parametrize(
    "shapes",
    [([3, 4], [3, 2]), ([-1, 4], [-1, -1]), ([2, 4], [2, 2])],
    ids=["fixed-batch-in-symbolic", "dynamic-output", "fixed-everything"],
)
def test_compatible_shapes_pass(dense: Path, shapes: tuple[list[int], list[int]]) -> None:
    changes = {
        "inputs": [{"name": "input", "dtype": "float32", "shape": shapes[0]}],
        "outputs": [{"name": "output", "dtype": "float32", "shape": shapes[1]}],
    }
    assert run_validation(dense, interface(**changes), []).cases == []


def test_model_input_missing_from_interface_is_refused(tmp_path: Path) -> None:
    node = helper.make_node("Add", ["input", "bias"], ["output"])
    graph = helper.make_graph(
        [node],
        "two-inputs",
        [helper.make_tensor_value_info(n, TensorProto.FLOAT, ["batch", 4]) for n in ("input", "bias")],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, ["batch", 4])],
    )
    changes = {"outputs": [{"name": "output", "dtype": "float32", "shape": [-1, 4]}]}
    with pytest.raises(Stalled) as caught:
        run_validation(write(tmp_path, _serialize(graph)), interface(**changes), [])
    assert (caught.value.reason, caught.value.message) == (
        "ModelInterfaceMismatch",
        "model input 'bias' is not in the interface",
    )


# --- models that must never reach traffic ------------------------------------------------------

def _truncated() -> bytes:
    data = dense_model(LAYERS)
    return data[: len(data) // 2]


UNLOADABLE = [
    ("external-data", lambda: external_data_model(np.ones((4, 2))), "external data files that are not among its version's files"),
    ("custom-op", custom_op_model, "custom-op domains are refused"),
    ("garbage", lambda: np.random.default_rng(1).bytes(4096), "protobuf parsing failed"),
    ("truncated", _truncated, "protobuf parsing failed"),
    ("empty", lambda: b"", "No graph was found"),
]


@pytest.mark.parametrize(("make", "fragment"), [u[1:] for u in UNLOADABLE], ids=[u[0] for u in UNLOADABLE])
def test_unloadable_model_is_refused(tmp_path: Path, make, fragment: str) -> None:
    with pytest.raises(Stalled) as caught:
        run_validation(write(tmp_path, make()), interface(), [case()])
    assert caught.value.reason == "ModelLoadFailed"
    assert fragment in caught.value.message


def test_external_data_is_not_read_even_when_present(tmp_path: Path) -> None:
    """Next to the model and in the agent's working directory: the child looks in neither."""
    weights = np.ones((4, 2), dtype=np.float32)
    weights.tofile(tmp_path / "weights.bin")
    model = write(tmp_path, external_data_model(weights))
    with pytest.raises(Stalled) as caught:
        run_validation(model, interface(), [])
    assert caught.value.reason == "ModelLoadFailed"


def _endless_loop_model() -> bytes:
    """y = x + 1, repeated 10**15 times: runs far longer than any test waits."""
    body = helper.make_graph(
        [helper.make_node("Identity", ["cond_in"], ["cond_out"]), helper.make_node("Add", ["x_in", "one"], ["x_out"])],
        "body",
        [
            helper.make_tensor_value_info("i", TensorProto.INT64, []),
            helper.make_tensor_value_info("cond_in", TensorProto.BOOL, []),
            helper.make_tensor_value_info("x_in", TensorProto.FLOAT, [1]),
        ],
        [
            helper.make_tensor_value_info("cond_out", TensorProto.BOOL, []),
            helper.make_tensor_value_info("x_out", TensorProto.FLOAT, [1]),
        ],
        [numpy_helper.from_array(np.ones(1, np.float32), "one")],
    )
    graph = helper.make_graph(
        [helper.make_node("Loop", ["trips", "cond", "input"], ["output"], body=body)],
        "endless",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1])],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, [1])],
        [
            numpy_helper.from_array(np.array(10**15, np.int64), "trips"),
            numpy_helper.from_array(np.array(True), "cond"),
        ],
    )
    return _serialize(graph)


def test_model_that_never_finishes_times_out(tmp_path: Path) -> None:
    one = {"inputs": [{"name": "input", "dtype": "float32", "shape": [1]}],
           "outputs": [{"name": "output", "dtype": "float32", "shape": [1]}]}
    cases = [ValidationCase(name="loop", inputs={"input": [0.0]}, expected={"output": [1.0]})]
    started = time.monotonic()

    with pytest.raises(Stalled) as caught:
        run_validation(write(tmp_path, _endless_loop_model()), interface(**one), cases, timeout=2.0)

    assert caught.value.reason == "ValidationTimeout"
    assert "2 s" in caught.value.message
    assert time.monotonic() - started < 5


def _allocating_model() -> bytes:
    """Allocates a float32 tensor of the shape it is given; the shape is data, so not folded at load."""
    graph = helper.make_graph(
        [helper.make_node("ConstantOfShape", ["shape"], ["output"])],
        "allocating",
        [helper.make_tensor_value_info("shape", TensorProto.INT64, [1])],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, ["n"])],
    )
    return _serialize(graph)


def test_model_exhausting_memory_is_refused_naming_memory(tmp_path: Path) -> None:
    shape_in = {"inputs": [{"name": "shape", "dtype": "int64", "shape": [1]}],
                "outputs": [{"name": "output", "dtype": "float32", "shape": [-1]}]}
    cases = [ValidationCase(name="huge", inputs={"shape": [1 << 31]}, expected={"output": [0.0]})]

    with pytest.raises(Stalled) as caught:
        run_validation(write(tmp_path, _allocating_model()), interface(**shape_in), cases, memory_limit=512 << 20)

    # onnxruntime reports the failed allocation; were the child to die instead, it is a crash.
    assert caught.value.reason in ("ValidationFailed", "ValidationCrashed")
    assert "memory limit of 512 MiB" in caught.value.message


def test_child_that_dies_without_answer_is_a_crash(dense: Path) -> None:
    """A memory limit too small for onnxruntime to even import: the child dies with a traceback."""
    with pytest.raises(Stalled) as caught:
        run_validation(dense, interface(), [case()], memory_limit=48 << 20)
    assert caught.value.reason == "ValidationCrashed"
    assert "exited with code 1 without an answer" in caught.value.message
    assert "(memory limit 48 MiB)" in caught.value.message
    # The tail of the child's stderr: Python's own last line, whichever native module failed to map first.
    assert "ImportError" in caught.value.message


def test_agent_process_never_loads_onnxruntime(dense: Path) -> None:
    script = (
        "import json, sys\n"
        "from pathlib import Path\n"
        "from reconciler.manifests.models import ModelInterface\n"
        "from reconciler.runtime.validation import run_validation\n"
        "run_validation(Path(sys.argv[1]), ModelInterface.model_validate(json.loads(sys.argv[2])), [])\n"
        "print('onnxruntime' in sys.modules)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script, str(dense), json.dumps(INTERFACE)],
        cwd=Path(__file__).resolve().parents[2], capture_output=True, text=True, timeout=60,
    )
    assert done.stdout.strip() == "False", done.stderr
