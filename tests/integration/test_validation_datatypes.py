"""Validation in the child process for every datatype a model can take, string tensors included:
the interface check knows ONNX's tensor(string) and a case's text must come out exactly."""

from __future__ import annotations

from pathlib import Path

import pytest

from reconciler.devtools.onnx_builder import echo_model
from reconciler.errors import Stalled
from reconciler.manifests.models import ModelInterface, TensorSpec, ValidationCase
from reconciler.runtime.validation import run_validation

DTYPES = ("bool", "uint8", "int8", "int16", "int32", "int64", "float16", "float32", "float64", "string")
INTERFACE = ModelInterface(
    inputs=[TensorSpec(name=f"x_{dtype}", dtype=dtype, shape=[-1, 2]) for dtype in DTYPES],
    outputs=[TensorSpec(name=f"y_{dtype}", dtype=dtype, shape=[-1, 2]) for dtype in DTYPES],
)
VALUES = {dtype: [[1, 0]] for dtype in DTYPES} | {"bool": [[True, False]], "string": [["grüße", ""]]}


@pytest.fixture(scope="module")
def echo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("models") / "echo.onnx"
    path.write_bytes(echo_model(DTYPES))
    return path


def echo_case(**expected_changes: list) -> ValidationCase:
    expected = {f"y_{dtype}": values for dtype, values in VALUES.items()}
    expected |= {f"y_{dtype}": values for dtype, values in expected_changes.items()}
    return ValidationCase(name="echo", inputs={f"x_{dtype}": v for dtype, v in VALUES.items()}, expected=expected)


def test_every_datatype_validates(echo: Path):
    report = run_validation(echo, INTERFACE, [echo_case()])
    assert [(result.name, result.passed) for result in report.cases] == [("echo", True)]


def test_a_string_output_that_differs_fails_the_case(echo: Path):
    with pytest.raises(Stalled) as caught:
        run_validation(echo, INTERFACE, [echo_case(string=[["gruesse", ""]])])
    assert caught.value.reason == "ValidationFailed"
    assert "output 'y_string' is [['grüße', '']], expected [['gruesse', '']]" in caught.value.message
