"""Batch runs with real onnxruntime sessions over real files: outputs against a numpy reference,
bad records to the errors file, bad files retried then moved aside, a manifest that does not fit
the model refused before any file is touched, Forbid, and a version change between runs."""

from __future__ import annotations

import io
import json

import numpy as np
import pytest

from reconciler.batch.ledger import Ledger, RunInProgress, run_lock
from reconciler.batch.runner import ASIDE, run_batch
from tests.batch_site import BatchSite, active, expected, read_jsonl, spec, write_jsonl

ROWS = np.random.default_rng(7).normal(size=(10, 4)).astype(np.float32)


@pytest.fixture
def site(tmp_path) -> BatchSite:
    site = BatchSite(tmp_path)
    site.install("1.0.0", spec())
    return site


def outputs_of(path) -> np.ndarray:
    return np.array([line["outputs"]["output"] for line in read_jsonl(path)])


def test_jsonl_files_are_scored_in_batches_one_result_per_file(site):
    write_jsonl(site.inputs / "a.jsonl", ROWS)
    write_jsonl(site.inputs / "b.jsonl", ROWS[:3])
    summary = run_batch(site.job(spec()), active(site), "manual")
    assert (summary.state, summary.files, summary.records, summary.recordErrors) == ("Succeeded", 2, 13, 0)
    assert summary.version == "1.0.0"
    lines = read_jsonl(site.outputs / "a.jsonl.out.jsonl")
    assert [line["record"] for line in lines] == list(range(10))
    assert {line["version"] for line in lines} == {"1.0.0"}
    np.testing.assert_allclose(outputs_of(site.outputs / "a.jsonl.out.jsonl"), expected("1.0.0", ROWS), atol=1e-5)
    assert not (site.outputs / "a.jsonl.errors.jsonl").exists()
    assert not list(site.outputs.rglob(".*.tmp"))


def test_csv_columns_and_npy_rows_become_the_model_input(site):
    header = "id,a,b,c,d\n"
    (site.inputs / "x.csv").write_text(header + "".join(f"{i}," + ",".join(map(str, r)) + "\n"
                                                        for i, r in enumerate(ROWS.tolist())))
    csv_spec = spec(input={"name": "readings", "glob": "*.csv", "format": "csv",
                           "columns": {"input": ["a", "b", "c", "d"]}})
    assert run_batch(site.job(csv_spec), active(site), "manual").records == 10
    np.testing.assert_allclose(outputs_of(site.outputs / "x.csv.out.jsonl"), expected("1.0.0", ROWS), atol=1e-5)

    buffer = io.BytesIO()
    np.save(buffer, ROWS.astype(np.float64))
    (site.inputs / "x.npy").write_bytes(buffer.getvalue())
    npy_spec = spec(input={"name": "readings", "glob": "*.npy", "format": "npy"})
    assert run_batch(site.job(npy_spec), active(site), "manual").records == 10
    np.testing.assert_allclose(outputs_of(site.outputs / "x.npy.out.jsonl"), expected("1.0.0", ROWS), atol=1e-5)


def test_bad_records_go_to_the_errors_file_and_the_file_goes_on(site):
    good = [json.dumps({"input": row.tolist()}) for row in ROWS[:3]]
    (site.inputs / "mixed.jsonl").write_text("\n".join([
        good[0], "{not json", json.dumps({"input": [1, 2, 3]}), json.dumps({"inputs": ROWS[0].tolist()}),
        good[1], json.dumps([1, 2, 3, 4]), json.dumps({"input": ["a", "b", "c", "d"]}), good[2]]) + "\n")
    summary = run_batch(site.job(spec()), active(site), "manual")
    assert (summary.state, summary.records, summary.recordErrors, summary.filesFailed) == \
        ("PartiallySucceeded", 3, 5, 0)
    assert [line["record"] for line in read_jsonl(site.outputs / "mixed.jsonl.out.jsonl")] == [0, 4, 7]
    np.testing.assert_allclose(outputs_of(site.outputs / "mixed.jsonl.out.jsonl"), expected("1.0.0", ROWS[:3]),
                               atol=1e-5)
    errors = {e["record"]: e["error"] for e in read_jsonl(site.outputs / "mixed.jsonl.errors.jsonl")}
    assert sorted(errors) == [1, 2, 3, 5, 6]
    assert "not JSON" in errors[1]
    assert "shape [3] does not fit [4]" in errors[2]
    assert "missing input(s) input" in errors[3] and "unknown input(s) inputs" in errors[3]
    assert "JSON object" in errors[5]
    assert "not float32" in errors[6]


BAD_FILES = [
    ("wrong-columns.csv", b"id,a,b\n1,2,3\n", "csv", "lacks column(s) c, d"),
    ("wrong-shape.npy", None, "npy", "do not fit input input"),
    ("garbage.npy", b"this is no array", "npy", "not a .npy array"),
]


@pytest.mark.parametrize(("name", "content", "fmt", "said"), BAD_FILES)
def test_a_file_failing_as_a_whole_is_retried_then_moved_aside(site, name, content, fmt, said):
    if content is None:
        buffer = io.BytesIO()
        np.save(buffer, np.zeros((5, 3), dtype=np.float32))
        content = buffer.getvalue()
    (site.inputs / name).write_bytes(content)
    columns = {"columns": {"input": ["a", "b", "c", "d"]}} if fmt == "csv" else {}
    bad_spec = spec(input={"name": "readings", "glob": f"*.{fmt}", "format": fmt, **columns}, maxRetries=2)
    for attempt in range(3):
        summary = run_batch(site.job(bad_spec), active(site), "schedule")
        assert (summary.filesFailed, summary.filesMovedAside) == (1, int(attempt == 2))
        assert summary.state == "PartiallySucceeded"
    assert not (site.inputs / name).exists()
    assert (site.inputs / ASIDE / name).read_bytes() == content
    assert said in (site.inputs / ASIDE / f"{name}.reason.txt").read_text()
    results = [e.result for e in Ledger(site.state / "batch" / "iris").entries()]
    assert results == ["failed", "failed", "failed", "movedAside"]
    after = run_batch(site.job(bad_spec), active(site), "schedule")  # gone from the inputs: not tried again
    assert (after.files, after.filesFailed) == (0, 0)
    assert not list(site.outputs.glob(f"{name}*"))


def test_a_manifest_that_does_not_fit_the_model_fails_the_run_and_touches_no_file(site):
    (site.inputs / "x.csv").write_text("a,b\n1,2\n")
    misfit = spec(input={"name": "readings", "glob": "*.csv", "format": "csv", "columns": {"input": ["a", "b"]}})
    summary = run_batch(site.job(misfit), active(site), "manual")
    assert (summary.state, summary.reason) == ("Failed", "BatchInputMisfit")
    assert "2 CSV column(s)" in summary.message
    assert (site.inputs / "x.csv").exists() and not Ledger(site.state / "batch" / "iris").entries()


def test_forbid_a_run_does_not_start_while_one_runs(site):
    write_jsonl(site.inputs / "a.jsonl", ROWS)
    with run_lock(site.state / "batch" / "iris"):
        with pytest.raises(RunInProgress):
            run_batch(site.job(spec()), active(site), "schedule")
    assert not (site.outputs / "a.jsonl.out.jsonl").exists()


def test_a_version_change_reruns_files_only_because_the_model_digest_changed(site):
    write_jsonl(site.inputs / "a.jsonl", ROWS)
    write_jsonl(site.inputs / "b.jsonl", ROWS[::-1])
    first = run_batch(site.job(spec()), active(site), "schedule")
    again = run_batch(site.job(spec()), active(site), "schedule")
    assert (first.files, again.files, again.filesAlreadyDone) == (2, 0, 2)

    new_digest = site.install("2.0.0", spec())
    write_jsonl(site.inputs / "c.jsonl", ROWS[:2])
    changed = run_batch(site.job(spec()), active(site), "schedule")
    assert (changed.version, changed.modelDigest, changed.files, changed.filesAlreadyDone) == \
        ("2.0.0", new_digest, 3, 0)
    for name in ("a", "b", "c"):
        lines = read_jsonl(site.outputs / f"{name}.jsonl.out.jsonl")
        assert {line["version"] for line in lines} == {"2.0.0"}
    np.testing.assert_allclose(outputs_of(site.outputs / "a.jsonl.out.jsonl"), expected("2.0.0", ROWS), atol=1e-5)
    done = [(e.file, e.model) for e in Ledger(site.state / "batch" / "iris").entries() if e.result == "done"]
    assert len(done) == len(set(done)) == 5  # a, b with each model; c with the new one
    assert run_batch(site.job(spec()), active(site), "schedule").filesAlreadyDone == 3


def test_result_lines_are_json_that_gives_back_the_exact_outputs():
    from reconciler.batch.runner import _lines

    rng = np.random.default_rng(11)
    scores = (rng.normal(size=(5, 3)) * 10.0 ** rng.integers(-12, 12, size=(5, 3))).astype(np.float32)
    extra = rng.normal(size=(5, 2)).astype(np.float32)
    doubles = rng.normal(size=(5, 2, 2))
    labels = rng.integers(-5, 5, size=(5,))
    odd = np.array([[np.nan], [np.inf], [1.0], [-0.0], [2.5]], dtype=np.float32)
    cases = [(["scores", "extra%d"], [scores, extra]), (["doubles", "labels", "odd"], [doubles, labels, odd]),
             # one output: the whole chunk's text at once (rows of numbers or flat lists), else row by row
             (["scores%d"], [scores]), (["labels"], [labels]), (["p"], [extra[:, 0]]), (["none"], [np.zeros((5, 0))]),
             (["odd"], [odd]), (["doubles"], [doubles])]
    for names, outputs in cases:
        lines = [json.loads(line) for line in _lines('1.0"%s', names, [3, 4, 5, 6, 7], outputs).splitlines()]
        assert [line["record"] for line in lines] == [3, 4, 5, 6, 7]
        assert {line["version"] for line in lines} == {'1.0"%s'}
        for name, output in zip(names, outputs, strict=True):
            back = np.array([line["outputs"][name] for line in lines], dtype=output.dtype)
            np.testing.assert_array_equal(back, output)  # bit for bit, NaN included


class PickySession:
    """Refuses any call holding a negative first feature, as a model's own checks might."""

    def __init__(self, session):
        self.session = session

    def run(self, names, feeds):
        if (feeds["input"][:, 0] < 0).any():
            raise RuntimeError("negative first feature")
        return self.session.run(names, feeds)


def test_records_onnxruntime_refuses_are_found_one_by_one_and_the_rest_is_scored(site):
    from dataclasses import replace

    write_jsonl(site.inputs / "a.jsonl", ROWS)
    real = active(site)
    summary = run_batch(site.job(spec()), replace(real, session=PickySession(real.session)), "manual")
    refused = [i for i, row in enumerate(ROWS) if row[0] < 0]
    assert refused and summary.recordErrors == len(refused) and summary.records == len(ROWS) - len(refused)
    errors = read_jsonl(site.outputs / "a.jsonl.errors.jsonl")
    assert [e["record"] for e in errors] == refused
    assert all("onnxruntime refused the record: negative first feature" in e["error"] for e in errors)
    kept = [i for i in range(len(ROWS)) if i not in refused]
    assert [line["record"] for line in read_jsonl(site.outputs / "a.jsonl.out.jsonl")] == kept
    np.testing.assert_allclose(outputs_of(site.outputs / "a.jsonl.out.jsonl"), expected("1.0.0", ROWS[kept]), atol=1e-5)


JSONL_CHUNKS = {
    "all well formed": ['{"input": [1, 2, 3, 4]}', '{"input": [5, 6, 7, 8.5]}', "", '{"input": [true, "2", 3, 4]}'],
    "one line not JSON": ['{"input": [1, 2, 3, 4]}', '{"input": [1, 2', '{"input": [5, 6, 7, 8]}'],
    "one unknown input": ['{"input": [1, 2, 3, 4]}', '{"input": [1, 2, 3, 4], "extra": 1}'],
    "one of the wrong shape": ['{"input": [1, 2, 3, 4]}', '{"input": [[1, 2, 3, 4]]}'],
    "all of the wrong shape": ['{"input": [[1, 2, 3, 4]]}', '{"input": [[1, 2, 3, 4]]}'],
    "a value that is no number": ['{"input": [1, 2, 3, 4]}', '{"input": [1, 2, 3, "x"]}'],
    "not an object": ['[1, 2, 3, 4]', '{"input": [1, 2, 3, 4]}'],
    "nothing good": ['{"input": [1', '7'],
}


@pytest.mark.parametrize("lines", JSONL_CHUNKS.values(), ids=JSONL_CHUNKS.keys())
def test_a_jsonl_chunk_stacked_at_once_is_the_chunk_read_record_by_record(lines):
    """The whole-chunk conversion is taken only when it gives what reading each record would."""
    import orjson

    from reconciler.batch.records import _record_by_record, read_chunks
    from tests.runtime_models import INTERFACE

    [chunk] = read_chunks("\n".join(lines).encode(), spec().input, INTERFACE, size=len(lines))
    parsed, errors = [], []
    for number, line in enumerate(lines):
        if line.strip():
            try:
                parsed.append((number, orjson.loads(line)))
            except orjson.JSONDecodeError:
                errors.append(number)
    alone = _record_by_record(parsed, INTERFACE, [])
    assert chunk.records == alone.records
    assert sorted(e.record for e in chunk.errors) == sorted(errors + [e.record for e in alone.errors])
    assert chunk.feeds.keys() == alone.feeds.keys()
    for name, feed in chunk.feeds.items():
        np.testing.assert_array_equal(feed, alone.feeds[name])
        assert feed.dtype == alone.feeds[name].dtype
