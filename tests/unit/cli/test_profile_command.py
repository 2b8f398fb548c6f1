"""`reconciler profile`: training data from CSV, JSON Lines and .npy becomes a profile of the
Model's tensors; data that does not fit the Model is refused with a message naming what is wrong."""

from __future__ import annotations

import json

import numpy as np
import pytest

from reconciler.cli.main import main
from reconciler.monitoring.profile import Profile

MODEL = """apiVersion: reconciler/v1
kind: Model
metadata: {name: scorer}
spec:
  interface:
    inputs: [{name: x, dtype: float32, shape: [-1, 2]}, {name: store, dtype: int64, shape: [-1]}]
    outputs: [{name: score, dtype: float32, shape: [-1]}]
  versions:
  - version: 1.0.0
    artifacts: [{uri: m.onnx, digest: "sha256:%s", size: 1, signature: {uri: m.sig}}]
""" % ("0" * 64)


@pytest.fixture
def repo(tmp_path):
    (tmp_path / "models").mkdir()
    (tmp_path / "models" / "scorer.yaml").write_text(MODEL)
    return tmp_path


def profile(repo, *data: str) -> int:
    return main(["profile", *data, "--model", "scorer", "--version", "1.0.0", "--repo", str(repo),
                 "-o", str(repo / "profile.json")])


def test_csv_and_jsonl_rows_become_features_of_the_models_inputs_and_outputs(repo, capsys):
    rng = np.random.default_rng(0)
    rows = [(rng.normal(), rng.normal(), int(rng.integers(0, 3)), rng.random()) for _ in range(300)]
    (repo / "train.csv").write_text("x[0],x[1],store\n" + "".join(f"{a},{b},{s}\n" for a, b, s, _ in rows))
    (repo / "scores.jsonl").write_text("".join(json.dumps({"score": y}) + "\n" for *_, y in rows))
    assert profile(repo, str(repo / "train.csv"), str(repo / "scores.jsonl")) == 0
    written = Profile.model_validate_json((repo / "profile.json").read_text())
    assert [(f.name, f.kind) for f in written.inputs] == [("x[0]", "numeric"), ("x[1]", "numeric"),
                                                          ("store", "categorical")]
    assert [(f.name, f.kind) for f in written.outputs] == [("score", "numeric")]
    assert written.rows == 300 and sum(written.inputs[2].counts) == 300
    out = capsys.readouterr().out
    assert "digest: sha256:" in out and f"size: {(repo / 'profile.json').stat().st_size}" in out


def test_npy_names_its_tensor(repo):
    np.save(repo / "x.npy", np.zeros((10, 2), dtype=np.float32))
    np.save(repo / "store.npy", np.arange(10) % 2)
    assert profile(repo, f"x={repo / 'x.npy'}", f"store={repo / 'store.npy'}") == 0


@pytest.mark.parametrize("files, message", [
    ({"a.csv": "x[0],x[2]\n1,2\n"}, "x[0] ... x[k-1]"),
    ({"a.csv": "weight\n1\n"}, "no tensor named weight"),
    ({"a.csv": "x[a]\n1\n"}, "not TENSOR or TENSOR[i]"),
    ({"a.jsonl": "[1, 2]\n"}, "must be a JSON object"),
    ({"a.csv": "store\nseven\n"}, "could not convert"),
    ({"a.npy": None}, "name the tensor it holds"),
    ({"a.txt": "1"}, "give .npy, .csv or .jsonl"),
])
def test_data_that_does_not_fit_the_model_is_refused(repo, capsys, files, message):
    [(name, text)] = files.items()
    if text is None:
        np.save(repo / name, np.zeros((3, 2)))
    else:
        (repo / name).write_text(text)
    assert profile(repo, str(repo / name)) == 2
    assert message in capsys.readouterr().err
    assert not (repo / "profile.json").exists()
