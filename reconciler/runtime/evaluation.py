"""Federated evaluation at a site: its labeled examples (site.yaml ``evaluation``) read from disk,
the model run over them in the validation child (validation.py, the same limits as the cases), the
values scored by reconciler.monitoring.evaluation. Whatever is wrong with the data is refused with
EvaluationDataInvalid, saying which file and why; the model and its serving are not touched."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from reconciler import reasons
from reconciler.cancel import CancelToken
from reconciler.errors import Stalled
from reconciler.manifests.evaluation import ModelEvaluation
from reconciler.manifests.models import ModelInterface, TensorSpec
from reconciler.monitoring.evaluation import score
from reconciler.monitoring.tables import read_tensors
from reconciler.runtime.providers import CPU
from reconciler.runtime.validation import EvaluationFeeds, run_validation
from reconciler.settings import LABEL, EvaluationData, ValidationLimits

MAX_DATA_BYTES = 256 << 20  # a file larger than this is refused rather than read into the agent

__all__ = ["Examples", "load_examples", "score_version"]


@dataclass(frozen=True)
class Examples:
    feeds: dict[str, np.ndarray]  # each interface input, one row per example
    labels: np.ndarray

    @property
    def count(self) -> int:
        return len(self.labels)


def load_examples(data: EvaluationData, interface: ModelInterface) -> Examples:
    """The examples and their labels, each input shaped as the interface says."""
    dtypes = {t.name: np.dtype(t.dtype) for t in interface.inputs} | {LABEL: np.dtype(np.float64)}
    single = interface.inputs[0].name if len(interface.inputs) == 1 else None
    if data.inputs.suffix == ".npy" and single is None:
        raise _invalid(data.inputs, f"an .npy holds one array; the model takes {len(interface.inputs)} inputs: "
                                    "give CSV or JSON Lines")
    tensors = _read(data.inputs, dtypes, single)
    if data.labels is not None:
        tensors |= _read(data.labels, dtypes, LABEL)
    missing = [name for name in [*(t.name for t in interface.inputs), LABEL] if name not in tensors]
    if missing:
        raise _invalid(data.inputs, f"no {', '.join(missing)} in the data (columns TENSOR or TENSOR[i], "
                                    f"labels in '{LABEL}')")
    rows = {name: len(array) for name, array in tensors.items()}
    if len(set(rows.values())) != 1:
        raise _invalid(data.labels or data.inputs, "label shape mismatch: "
                       + ", ".join(f"{name} has {count} rows" for name, count in rows.items()) + "; one label per example")
    return Examples({t.name: _fitted(data.inputs, t, tensors[t.name]) for t in interface.inputs}, tensors[LABEL])


def score_version(model_path: Path, interface: ModelInterface, spec: ModelEvaluation, examples: Examples,
                  limits: ValidationLimits, providers: Sequence[str] = (CPU,), stop: CancelToken | None = None
                  ) -> dict[str, float]:
    """The declared metrics of the model at ``model_path`` on the examples, run in the validation child."""
    report = run_validation(model_path, interface, (), timeout=limits.timeout.total_seconds(),
                            memory_limit=limits.memory_bytes, stop=stop, providers=providers,
                            evaluation=EvaluationFeeds(examples.feeds, spec.output))
    try:
        return score(spec.kind, spec.metrics, report.predictions, examples.labels)
    except ValueError as exc:
        raise Stalled(reasons.EvaluationDataInvalid, f"the labels do not fit output {spec.output}: {exc}") from None


def _read(path: Path, dtypes: dict[str, np.dtype], npy_tensor: str | None) -> dict[str, np.ndarray]:
    try:
        if path.stat().st_size > MAX_DATA_BYTES:
            raise _invalid(path, f"larger than {MAX_DATA_BYTES >> 20} MiB")
        return read_tensors(path.read_bytes(), path.suffix, dtypes, npy_tensor)
    except OSError as exc:
        raise _invalid(path, f"cannot be read: {exc.strerror or exc}") from None
    except ValueError as exc:
        raise _invalid(path, str(exc)) from None


def _fitted(path: Path, tensor: TensorSpec, array: np.ndarray) -> np.ndarray:
    wanted = tensor.shape[1:]
    if wanted == [1] and array.ndim == 1:
        return array.reshape(len(array), 1)  # a [-1, 1] input from one column
    have = list(array.shape[1:])
    if len(have) != len(wanted) or any(w not in (-1, h) for w, h in zip(wanted, have, strict=True)):
        raise _invalid(path, f"input {tensor.name}: rows of shape {have} do not fit {tensor.shape}")
    return array


def _invalid(path: Path, why: str) -> Stalled:
    return Stalled(reasons.EvaluationDataInvalid, f"evaluation data {path}: {why}")
