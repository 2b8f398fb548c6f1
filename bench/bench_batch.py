"""Batch deployment throughput: rows/s of one batch run over a 100 000-row file, against a bare
onnxruntime loop over the same rows in batches of the same size.

Baseline: ``session.run`` over the rows, already in memory as one float32 array, ``BATCH`` rows a
call, with the very session the run scores with. Subject: reconciler.batch.runner.run_batch over
the same rows as one ``.npy`` input file (read, hashed, split, scored, every row written as a JSON
Lines result, fsynced and renamed, the ledger appended), a fresh ledger and output directory each
time. The model is a 32 -> 256 -> 256 -> 8 dense network (relu, relu, softmax). A second figure,
for information, does the same from a JSON Lines input (one JSON object per row), whose parsing the
bare loop never pays; a third, the .npy run counting its rows into a drift monitor (a reference
profile of the 32 inputs and 8 outputs, as a site with a profile does) against the same run without.

    .venv/bin/python bench/bench_batch.py [--quick] [--repetitions N]"""

from __future__ import annotations

import io
import json
import tempfile
from itertools import count
from pathlib import Path

import numpy as np
from common import Stats, arguments, emit, interleaved, machine  # first: puts the repo root on sys.path

from reconciler.batch.jobs import BatchJob
from reconciler.batch.runner import run_batch
from reconciler.devtools.onnx_builder import dense_model
from reconciler.manifests.batch import BatchSpec
from reconciler.manifests.models import ModelInterface, TensorSpec
from reconciler.monitoring.profile import build_profile
from reconciler.runtime.drift_counter import DriftMonitor
from reconciler.runtime.registry import ModelRegistry

ROWS, FEATURES, BATCH = 100_000, 32, 256
TARGET = 0.8
INTERFACE = ModelInterface(inputs=[TensorSpec(name="input", dtype="float32", shape=[-1, FEATURES])],
                           outputs=[TensorSpec(name="output", dtype="float32", shape=[-1, 8])])


def layers(rng: np.random.Generator) -> list:
    sizes = [FEATURES, 256, 256, 8]
    activations = ["relu", "relu", "softmax"]
    return [(rng.normal(size=(a, b)) / np.sqrt(a), rng.normal(size=b), act)
            for a, b, act in zip(sizes[:-1], sizes[1:], activations, strict=True)]


def batch_spec(fmt: str) -> BatchSpec:
    return BatchSpec.model_validate({"schedule": "0 2 * * *", "output": "scores", "maxRecordsPerBatch": BATCH,
                                     "input": {"name": "rows", "glob": f"*.{fmt}", "format": fmt}})


def main() -> None:
    args = arguments(__doc__.splitlines()[0], repetitions=7, quick=3)
    rng = np.random.default_rng(0)
    rows = rng.normal(size=(ROWS, FEATURES)).astype(np.float32)
    with tempfile.TemporaryDirectory(prefix="bench-batch-") as scratch:
        root = Path(scratch)
        (root / "model.onnx").write_bytes(dense_model(layers(rng)))
        registry = ModelRegistry()
        registry.activate("scores", "scores", "1.0.0", root / "model.onnx", INTERFACE)
        served = registry.get("scores")
        for fmt in ("npy", "jsonl"):
            (root / fmt).mkdir()
        buffer = io.BytesIO()
        np.save(buffer, rows)
        (root / "npy" / "rows.npy").write_bytes(buffer.getvalue())
        (root / "jsonl" / "rows.jsonl").write_text("".join(json.dumps({"input": r}) + "\n" for r in rows.tolist()))
        runs = count()

        def bare_loop() -> None:
            for start in range(0, ROWS, BATCH):
                served.session.run(["output"], {"input": rows[start:start + BATCH]})

        drift = DriftMonitor()
        profile = build_profile("scores", "1.0.0", {"inputs": {"input": rows[:20_000]},
                                                    "outputs": {"output": served.session.run(None, {"input": rows[:20_000]})[0]}})
        (root / "profile.json").write_text(profile.model_dump_json())
        drift.watch("scores", "1.0.0", "sha256:profile", root / "profile.json")

        def batch_run(fmt: str, counted: DriftMonitor | None = None):
            def run() -> None:
                fresh = root / "runs" / str(next(runs))
                job = BatchJob("scores", batch_spec(fmt), root / fmt, fresh / "out", fresh / "state")
                summary = run_batch(job, served, "manual", drift=counted)
                assert summary.records == ROWS, summary
            return run

        print(f"batch run vs bare onnxruntime loop, {ROWS} rows x {FEATURES} features, {BATCH} rows a call; "
              f"{machine()}")
        results = {}
        for fmt in ("npy", "jsonl"):
            base, subject = interleaved(bare_loop, batch_run(fmt), args.repetitions)
            base_stats, subject_stats = Stats.of(base), Stats.of(subject)
            ratio = base_stats.median / subject_stats.median
            results[fmt] = (ratio, ROWS / subject_stats.median, ROWS / base_stats.median)
            print(f"  {fmt:5}  bare loop {base_stats.ms()}")
            print(f"  {fmt:5}  batch run {subject_stats.ms()}")
            print(f"  {fmt:5}  {ROWS / subject_stats.median:,.0f} rows/s vs {ROWS / base_stats.median:,.0f} rows/s: "
                  f"ratio {ratio:.2f}")
        plain, counting = interleaved(batch_run("npy"), batch_run("npy", drift), args.repetitions)
        drift_cost = Stats.of(counting).median / Stats.of(plain).median
        windows = drift.summaries()[("scores", "1.0.0")].windows
        print(f"  npy    without drift {Stats.of(plain).ms()}")
        print(f"  npy    with drift    {Stats.of(counting).ms()}: {drift_cost:.2f}x the time ({windows} windows closed)")
    ratio, rows_per_s, bare_per_s = results["npy"]
    emit("bench_batch", ratio, f">= {TARGET}", ratio >= TARGET,
         f"{rows_per_s:,.0f} rows/s from .npy, {ratio:.2f}x a bare loop",
         rows_per_second=round(rows_per_s), bare_rows_per_second=round(bare_per_s),
         jsonl_ratio=round(results["jsonl"][0], 3), jsonl_rows_per_second=round(results["jsonl"][1]),
         drift_counting_time_ratio=round(drift_cost, 3))


if __name__ == "__main__":
    main()
