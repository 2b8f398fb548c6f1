"""Federated evaluation: what scoring a new version and the one it replaces on a site's labeled data
adds before activation, as a ratio to the validation child activation runs anyway; and the bytes
an evaluation summary adds to the stored status record.

A 32-16-2 dense classifier; the site holds EXAMPLES labeled rows as CSV (the slowest format to
read). Baseline: one validation child running the version's one case (what every activation
costs). Subject: reading the CSV, then two children (new and replaced version) each scoring every
row, and the metrics (accuracy, logLoss, auc) in the agent. Interleaved, medians.

    .venv/bin/python bench/bench_evaluation.py [--quick] [--repetitions N]"""

from __future__ import annotations

import tempfile
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
from common import Stats, arguments, emit, interleaved, machine  # first: puts the repo root on sys.path

from reconciler.devtools.onnx_builder import dense_model
from reconciler.manifests.evaluation import ModelEvaluation
from reconciler.manifests.models import ModelInterface, ValidationCase
from reconciler.monitoring.evaluation import EvaluationSummary
from reconciler.runtime.evaluation import load_examples, score_version
from reconciler.runtime.validation import run_validation
from reconciler.settings import EvaluationData, ValidationLimits
from reconciler.status.gitref import record_json
from reconciler.status.record import DeploymentStatus, StatusRecord

FEATURES, EXAMPLES = 32, 10_000
TARGET_RATIO = 3.0  # two scored versions and the data read: about three validation children
INTERFACE = ModelInterface.model_validate({"inputs": [{"name": "input", "dtype": "float32", "shape": [-1, FEATURES]}],
                                           "outputs": [{"name": "output", "dtype": "float32", "shape": [-1, 2]}]})
SPEC = ModelEvaluation(kind="classifier", output="output", metrics=["accuracy", "logLoss", "auc"])


def model(directory: Path, seed: int) -> Path:
    rng = np.random.default_rng(seed)
    path = directory / f"m{seed}.onnx"
    path.write_bytes(dense_model([(rng.normal(size=(FEATURES, 16)), rng.normal(size=16), "relu"),
                                  (rng.normal(size=(16, 2)), rng.normal(size=2), "softmax")]))
    return path


def data(directory: Path) -> EvaluationData:
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(EXAMPLES, FEATURES)), rng.integers(0, 2, EXAMPLES)
    header = ",".join(f"input[{i}]" for i in range(FEATURES)) + ",label\n"
    rows = "".join(",".join(f"{v:.5f}" for v in row) + f",{label}\n" for row, label in zip(x, y, strict=True))
    (directory / "eval.csv").write_text(header + rows)
    return EvaluationData(inputs=directory / "eval.csv")


def main() -> None:
    args = arguments(__doc__.splitlines()[0], repetitions=10, quick=3)
    limits = ValidationLimits()
    with tempfile.TemporaryDirectory() as folder:
        directory = Path(folder)
        new, old, site_data = model(directory, 1), model(directory, 2), data(directory)
        case = ValidationCase(name="smoke", inputs={"input": [[0.0] * FEATURES]}, expected={"output": [[0.5, 0.5]]}, tolerance=0.5)  # any probabilities

        def validation() -> None:
            run_validation(new, INTERFACE, [case])

        def evaluation() -> dict[str, float]:
            examples = load_examples(site_data, INTERFACE)
            return score_version(new, INTERFACE, SPEC, examples, limits) | score_version(old, INTERFACE, SPEC, examples, limits)

        base, subject = interleaved(validation, evaluation, args.repetitions)
        metrics = evaluation()
    baseline, scored = Stats.of(base), Stats.of(subject)
    ratio = scored.median / baseline.median
    now = datetime(2026, 1, 1, tzinfo=UTC)
    status = DeploymentStatus(model="m", state="success", version="1.1.0", reason="Converged", since=now)
    summary = EvaluationSummary(version="1.1.0", numExamples=EXAMPLES, metrics=metrics, previousVersion="1.0.0",
                                previousMetrics=metrics, evaluatedAt=now)
    plain = StatusRecord(site="s", state="success", reason="Converged", agentVersion="b", writtenAt=now,
                         deployments={"d": status})
    with_scores = plain.model_copy(update={"deployments": {"d": status.model_copy(update={"evaluation": summary})}})
    added = len(record_json(with_scores)) - len(record_json(plain))
    print(f"{machine()}; {EXAMPLES} examples x {FEATURES} features (CSV)")
    print(f"validation child (one case)        {baseline.ms()}")
    print(f"read + score new and replaced      {scored.ms()}")
    print(f"ratio {ratio:.2f} (target <= {TARGET_RATIO}); the evaluation adds {added} bytes to the stored record")
    emit("evaluation", ratio, f"<= {TARGET_RATIO}x validation", ratio <= TARGET_RATIO,
         f"{ratio:.2f}x validation for {EXAMPLES} examples, +{added} B/record", baseline=baseline.to_json(),
         subject=scored.to_json(), record_bytes_added=added)


if __name__ == "__main__":
    main()
