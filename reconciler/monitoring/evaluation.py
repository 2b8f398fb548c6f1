"""PURE: federated evaluation at a site. A model version's predictions on the site's labeled data
become the metrics its Model declares (``score``); the site publishes them with the example count
rounded (``reported_examples``), never the data.

Metrics (n examples, y the labels, p the scored output):
    accuracy   share of examples whose most probable class is the label; a tie goes to the higher
               class (so with one column, p >= 0.5 is class 1)
    logLoss    -1/n sum log p_y, p clipped to [1e-15, 1] (the model's probabilities as it outputs them)
    auc        area under the ROC curve by the rank statistic (Mann-Whitney U / (n_pos n_neg), ties
               ranked by their mean); with C > 2 classes the mean of the one-vs-rest AUCs of the
               classes present; undefined (left out) when the labels hold one class only
    mae, rmse  mean absolute error, root mean squared error

Rounding: a site reports its example count rounded DOWN to a multiple of ``EXAMPLE_QUANTUM`` (10),
and reports no scores at all below that: a small site's exact count (and metrics over a handful of
examples) would tell too much about its data."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

import numpy as np
from pydantic import BaseModel, ConfigDict

from reconciler import reasons

EXAMPLE_QUANTUM = 10
LOG_LOSS_EPSILON = 1e-15
DIGITS = 6  # metrics as published: enough for any gate bound, no float noise in the record

__all__ = ["DIGITS", "EXAMPLE_QUANTUM", "EvaluationSummary", "reported_examples", "score"]


class EvaluationSummary(BaseModel):
    """What a site publishes about a deployment's version on its local labeled data: the version
    and, scored on the same data in the same pass, the version it replaces (the gate's
    ``minGainOverPrevious``). A failed evaluation keeps its reason and message and has no metrics."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    version: str
    numExamples: int = 0  # rounded down to a multiple of EXAMPLE_QUANTUM
    metrics: dict[str, float] = {}
    previousVersion: str | None = None
    previousMetrics: dict[str, float] = {}
    evaluatedAt: datetime
    reason: str = reasons.EvaluationScored
    message: str = ""

    @property
    def scored(self) -> bool:
        return self.numExamples > 0 and bool(self.metrics)


def reported_examples(count: int) -> int:
    """``count`` as a site publishes it: rounded down to a multiple of EXAMPLE_QUANTUM (0 below it)."""
    return count // EXAMPLE_QUANTUM * EXAMPLE_QUANTUM


def score(kind: str, metrics: Sequence[str], predictions: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    """The declared ``metrics`` of one version's ``predictions`` against ``labels`` (one per example).
    ValueError when they do not fit each other: another number of rows, a label that is no class."""
    if len(predictions) != len(labels):
        raise ValueError(f"{len(labels)} labels for {len(predictions)} examples: one label per example")
    if not len(labels):
        raise ValueError("no examples to score")
    if labels.ndim != 1 and not (labels.ndim == 2 and labels.shape[1] == 1):
        raise ValueError(f"labels of shape {list(labels.shape)}: one label per example ([rows] or [rows, 1])")
    labels = labels.reshape(len(labels)).astype(np.float64)
    if kind == "classifier":
        probabilities = _class_probabilities(predictions)
        classes = _class_labels(labels, probabilities.shape[1])
        found = {name: _CLASSIFIER[name](probabilities, classes) for name in metrics}
    else:
        values = _one_value_each(predictions)
        found = {name: _REGRESSOR[name](values, labels) for name in metrics}
    return {name: round(value, DIGITS) for name, value in found.items() if value is not None}


def _class_probabilities(predictions: np.ndarray) -> np.ndarray:
    """[n, C]; one column of the positive class's probability becomes two, [1 - p, p]."""
    table = np.asarray(predictions, dtype=np.float64)
    if table.ndim == 1 or (table.ndim == 2 and table.shape[1] == 1):
        positive = table.reshape(len(table))
        return np.column_stack([1.0 - positive, positive])
    if table.ndim != 2:
        raise ValueError(f"a classifier's output of shape {list(table.shape)}: [rows, classes] or [rows] expected")
    return table


def _class_labels(labels: np.ndarray, classes: int) -> np.ndarray:
    if not np.all(np.isfinite(labels)) or np.any(labels != np.round(labels)):
        raise ValueError("a classifier's labels are class indices (whole numbers)")
    wrong = labels[(labels < 0) | (labels >= classes)]
    if len(wrong):
        raise ValueError(f"label {wrong[0]:g} is no class of an output with {classes} classes (0..{classes - 1})")
    return labels.astype(np.int64)


def _one_value_each(predictions: np.ndarray) -> np.ndarray:
    values = np.asarray(predictions, dtype=np.float64)
    if values.ndim == 2 and values.shape[1] == 1:
        return values.reshape(len(values))
    if values.ndim != 1:
        raise ValueError(f"a regressor's output of shape {list(values.shape)}: one value per example expected")
    return values


def _accuracy(probabilities: np.ndarray, classes: np.ndarray) -> float:
    last = probabilities.shape[1] - 1
    predicted = last - np.argmax(probabilities[:, ::-1], axis=1)  # argmax takes the first of ties: here the highest class
    return float(np.mean(predicted == classes))


def _log_loss(probabilities: np.ndarray, classes: np.ndarray) -> float:
    chosen = probabilities[np.arange(len(classes)), classes]
    return float(-np.mean(np.log(np.clip(chosen, LOG_LOSS_EPSILON, 1.0))))


def _auc(probabilities: np.ndarray, classes: np.ndarray) -> float | None:
    if probabilities.shape[1] == 2:
        return _binary_auc(probabilities[:, 1], classes == 1)
    each = [_binary_auc(probabilities[:, c], classes == c) for c in range(probabilities.shape[1])]
    present = [value for value in each if value is not None]
    return float(np.mean(present)) if len(present) > 1 else None


def _binary_auc(scores: np.ndarray, positive: np.ndarray) -> float | None:
    """Mann-Whitney: the share of (positive, negative) pairs the scores order rightly, ties half."""
    n_positive, n_negative = int(positive.sum()), int((~positive).sum())
    if not n_positive or not n_negative:
        return None
    ranks = _mean_ranks(scores)
    u = ranks[positive].sum() - n_positive * (n_positive + 1) / 2
    return float(u / (n_positive * n_negative))


def _mean_ranks(values: np.ndarray) -> np.ndarray:
    """1-based ranks, ties sharing their mean rank (as scipy.stats.rankdata; the agent has numpy only)."""
    _, group, sizes = np.unique(values, return_inverse=True, return_counts=True)
    last = np.cumsum(sizes)  # the rank of each group's last member
    return (last - (sizes - 1) / 2)[group.reshape(-1)]


def _mae(values: np.ndarray, labels: np.ndarray) -> float:
    return float(np.mean(np.abs(values - labels)))


def _rmse(values: np.ndarray, labels: np.ndarray) -> float:
    return float(np.sqrt(np.mean((values - labels) ** 2)))


_CLASSIFIER = {"accuracy": _accuracy, "logLoss": _log_loss, "auc": _auc}
_REGRESSOR = {"mae": _mae, "rmse": _rmse}
