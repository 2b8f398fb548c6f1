"""A site's labeled evaluation data, read as `reconciler profile` reads data, with the labels in a
`label` column or a labels .npy: every way it can be wrong is refused with EvaluationDataInvalid,
naming the file and why (the version is still served: tests/integration/test_federated_evaluation.py)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from pydantic import ValidationError

from reconciler.errors import Stalled
from reconciler.manifests.models import ModelInterface
from reconciler.runtime.evaluation import load_examples
from reconciler.settings import EvaluationData, SiteConfig

ONE_INPUT = ModelInterface.model_validate({"inputs": [{"name": "x", "dtype": "float32", "shape": [-1, 2]}],
                                           "outputs": [{"name": "p", "dtype": "float32", "shape": [-1, 2]}]})
TWO_INPUTS = ModelInterface.model_validate({"inputs": [{"name": "x", "dtype": "float32", "shape": [-1, 2]},
                                                       {"name": "z", "dtype": "float32", "shape": [-1, 1]}],
                                            "outputs": [{"name": "p", "dtype": "float32", "shape": [-1, 2]}]})


def test_the_three_formats_give_the_same_examples(tmp_path):
    x, y = np.array([[0.5, 1.0], [-1.0, 2.0], [3.0, -0.5]], dtype=np.float32), np.array([1, 0, 1])
    (tmp_path / "e.csv").write_text("x[0],x[1],label\n" + "".join(f"{a},{b},{c}\n" for (a, b), c in zip(x, y, strict=True)))
    (tmp_path / "e.jsonl").write_text("".join(json.dumps({"x": row, "label": int(c)}) + "\n"
                                              for row, c in zip(x.tolist(), y, strict=True)))
    np.save(tmp_path / "x.npy", x)
    np.save(tmp_path / "y.npy", y)
    for data in (EvaluationData(inputs=tmp_path / "e.csv"), EvaluationData(inputs=tmp_path / "e.jsonl"),
                 EvaluationData(inputs=tmp_path / "x.npy", labels=tmp_path / "y.npy")):
        examples = load_examples(data, ONE_INPUT)
        assert examples.count == 3 and examples.feeds["x"].dtype == np.float32
        np.testing.assert_array_equal(examples.feeds["x"], x)
        np.testing.assert_array_equal(examples.labels, y)


def test_a_one_column_input_of_a_model_that_takes_rows_of_one_is_shaped_for_it(tmp_path):
    (tmp_path / "e.csv").write_text("x[0],x[1],z,label\n1,2,3,0\n4,5,6,1\n")
    examples = load_examples(EvaluationData(inputs=tmp_path / "e.csv"), TWO_INPUTS)
    assert examples.feeds["z"].shape == (2, 1)


@pytest.mark.parametrize("files, inputs, labels, interface, said", [
    ({}, "e.csv", None, ONE_INPUT, "e.csv: cannot be read: No such file or directory"),
    ({"x.npy": b"not an array"}, "x.npy", "y.npy", ONE_INPUT, "x.npy: not a .npy array"),
    ({"x.npy": np.zeros((3, 2)), "y.npy": np.zeros(2)}, "x.npy", "y.npy", ONE_INPUT,
     "label shape mismatch: x has 3 rows, label has 2 rows; one label per example"),
    ({"x.npy": np.zeros((3, 3)), "y.npy": np.zeros(3)}, "x.npy", "y.npy", ONE_INPUT,
     "input x: rows of shape [3] do not fit [-1, 2]"),
    ({"x.npy": np.zeros((3, 2)), "y.npy": np.zeros(3)}, "x.npy", "y.npy", TWO_INPUTS,
     "an .npy holds one array; the model takes 2 inputs"),
    ({"e.csv": "x[0],x[1]\n1,2\n"}, "e.csv", None, ONE_INPUT, "no label in the data"),
    ({"e.csv": "x[0],x[1],label,extra\n1,2,0,9\n"}, "e.csv", None, ONE_INPUT, "the model has no tensor named extra"),
    ({"e.csv": "x[0],x[1],label\n1,2,zero\n"}, "e.csv", None, ONE_INPUT, "e.csv: could not convert string to float"),
    ({"e.jsonl": "{\"x\": [1, 2], \"label\": 0}\nnot json\n"}, "e.jsonl", None, ONE_INPUT, "e.jsonl: Expecting value"),
    ({"e.jsonl": "{\"x\": [1, 2], \"label\": 0}\n{\"x\": [1, 2]}\n"}, "e.jsonl", None, ONE_INPUT,
     "row 2 has other columns than the first"),
    ({"e.csv": b"\xff\xfe"}, "e.csv", None, ONE_INPUT, "not UTF-8 text"),
])
def test_bad_evaluation_data_is_refused_naming_the_file_and_why(tmp_path, files, inputs, labels, interface, said):
    for name, content in files.items():
        if isinstance(content, np.ndarray):
            np.save(tmp_path / name, content)
        else:
            (tmp_path / name).write_bytes(content.encode() if isinstance(content, str) else content)
    data = EvaluationData(inputs=tmp_path / inputs, labels=tmp_path / labels if labels else None)
    with pytest.raises(Stalled) as refused:
        load_examples(data, interface)
    assert refused.value.reason == "EvaluationDataInvalid"
    assert said in refused.value.message


@pytest.mark.parametrize("evaluation, said", [
    ({"m": {"inputs": "x.npy"}}, ".npy inputs need a `labels` .npy beside them"),
    ({"m": {"inputs": "e.csv", "labels": "y.npy"}}, "CSV and JSON Lines carry their labels in a `label` column"),
    ({"m": {"inputs": "x.npy", "labels": "y.csv"}}, "labels are a .npy file"),
    ({"m": {"inputs": "e.parquet"}}, "e.parquet: give .npy, .csv or .jsonl data"),
    ({"M_1": {"inputs": "e.csv"}}, "should match pattern"),
])
def test_site_yaml_refuses_evaluation_data_it_could_never_read(evaluation, said):
    with pytest.raises(ValidationError, match=said.replace(".", r"\.").replace("(", r"\(")):
        SiteConfig.model_validate({"site": "s", "repo": "r", "state": "st", "evaluation": evaluation})
