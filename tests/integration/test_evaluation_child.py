"""The validation child scoring a site's examples (real onnxruntime, real subprocess): the values
come back in order, equal to the network computed in numpy; examples the model cannot take are
refused with EvaluationDataInvalid, and the child's memory limit holds for the scoring too."""

from __future__ import annotations

import numpy as np
import pytest

from reconciler.devtools.onnx_builder import dense_model, dense_reference
from reconciler.errors import Stalled
from reconciler.manifests.models import ModelInterface
from reconciler.runtime.validation import EvaluationFeeds, run_validation

LAYERS = [(np.array([[1.0, -1.0], [0.5, 2.0]]), np.array([0.1, -0.2]), "softmax")]
INTERFACE = ModelInterface.model_validate({"inputs": [{"name": "input", "dtype": "float32", "shape": [-1, 2]}],
                                           "outputs": [{"name": "output", "dtype": "float32", "shape": [-1, 2]}]})


@pytest.fixture
def model(tmp_path):
    path = tmp_path / "m.onnx"
    path.write_bytes(dense_model(LAYERS))
    return path


def test_the_child_returns_the_output_of_every_example_in_order(model):
    x = np.random.default_rng(0).normal(size=(2500, 2)).astype(np.float32)  # three runs of 1024 rows
    report = run_validation(model, INTERFACE, (), evaluation=EvaluationFeeds({"input": x}, "output"))
    np.testing.assert_allclose(report.predictions, dense_reference(LAYERS, x), atol=1e-6)


def test_examples_the_model_cannot_take_are_refused_saying_why(model):
    with pytest.raises(Stalled) as refused:
        run_validation(model, INTERFACE, (), evaluation=EvaluationFeeds({"input": np.zeros((5, 3), np.float32)}, "output"))
    assert refused.value.reason == "EvaluationDataInvalid"
    assert "the model cannot score the evaluation data" in refused.value.message and "input" in refused.value.message


def test_the_memory_limit_holds_while_scoring_and_is_named(model):
    many = np.zeros((20_000_000, 2), np.float32)  # 160 MB of examples, in a child of 200 MiB with onnxruntime
    with pytest.raises(Stalled) as refused:
        run_validation(model, INTERFACE, (), memory_limit=200 << 20, evaluation=EvaluationFeeds({"input": many}, "output"))
    assert refused.value.reason == "EvaluationDataInvalid"
    assert "needs more than the validation memory limit of 200 MiB" in refused.value.message
