"""Federated evaluation's metrics and rounding, against reference computations written apart from
the code: small cases worked by hand, and on random data numpy/scipy formulas of other shape (AUC
by counting every positive-negative pair and by scipy's Mann-Whitney U, log loss from scipy's xlogy).
scipy is a test dependency only: the agent's code is numpy."""

from __future__ import annotations

import math
import re

import numpy as np
import pytest
from scipy.special import xlogy
from scipy.stats import mannwhitneyu

from reconciler.monitoring.evaluation import DIGITS, reported_examples, score

CLASSIFIER = ("accuracy", "logLoss", "auc")


@pytest.mark.parametrize("predictions, labels, expected", [
    # one column: the positive class's probability; 0.5 counts as class 1
    ([0.9, 0.2, 0.6, 0.4], [1, 0, 0, 1], {"accuracy": 0.5, "auc": 0.75,
                                          "logLoss": -(math.log(0.9) + math.log(0.8) + math.log(0.4) + math.log(0.4)) / 4}),
    ([0.5, 0.5], [1, 0], {"accuracy": 0.5, "auc": 0.5, "logLoss": math.log(2)}),  # a tie is half a right order
    ([[0.1], [0.8]], [0, 1], {"accuracy": 1.0, "auc": 1.0, "logLoss": -(math.log(0.9) + math.log(0.8)) / 2}),
    # two columns
    ([[0.7, 0.3], [0.2, 0.8], [0.6, 0.4]], [0, 1, 1], {"accuracy": 2 / 3, "auc": 1.0,
                                                       "logLoss": -(math.log(0.7) + math.log(0.8) + math.log(0.4)) / 3}),
    # a probability of 0 for the label is clipped to 1e-15, not an infinite loss
    ([0.0, 1.0], [1, 1], {"accuracy": 0.5, "logLoss": -math.log(1e-15) / 2}),  # one class only: no AUC
    # three classes: AUC is the mean of the one-vs-rest AUCs
    ([[0.8, 0.1, 0.1], [0.1, 0.7, 0.2], [0.2, 0.2, 0.6], [0.5, 0.15, 0.35]], [0, 1, 2, 1],
     {"accuracy": 0.75, "auc": (1.0 + 0.75 + 1.0) / 3,
      "logLoss": -(math.log(0.8) + math.log(0.7) + math.log(0.6) + math.log(0.15)) / 4}),
    # a tie between classes goes to the higher one, as p = 0.5 of one column is class 1
    ([[0.5, 0.5], [0.5, 0.5]], [1, 0], {"accuracy": 0.5, "auc": 0.5, "logLoss": math.log(2)}),
])
def test_classifier_metrics_of_small_cases_worked_by_hand(predictions, labels, expected):
    got = score("classifier", CLASSIFIER, np.asarray(predictions), np.asarray(labels))
    assert got.keys() == expected.keys()
    for name, value in expected.items():
        assert got[name] == pytest.approx(round(value, DIGITS), abs=10 ** -DIGITS), name


@pytest.mark.parametrize("predictions, labels, mae, rmse", [
    ([1.0, 2.0, 3.0], [1.0, 2.0, 3.0], 0.0, 0.0),
    ([1.0, 2.0, 3.0], [2.0, 2.0, 5.0], 1.0, math.sqrt(5 / 3)),
    ([[0.5], [-0.5]], [[0.0], [0.0]], 0.5, 0.5),
])
def test_regressor_metrics_of_small_cases_worked_by_hand(predictions, labels, mae, rmse):
    got = score("regressor", ("mae", "rmse"), np.asarray(predictions), np.asarray(labels))
    assert got == {"mae": pytest.approx(mae, abs=1e-6), "rmse": pytest.approx(rmse, abs=1e-6)}


def _pairwise_auc(scores: np.ndarray, positive: np.ndarray) -> float:
    """Every positive against every negative: 1 when ordered rightly, 1/2 on a tie."""
    diff = scores[positive][:, None] - scores[~positive][None, :]
    return float(((diff > 0) + 0.5 * (diff == 0)).mean())


@pytest.mark.parametrize("seed", range(5))
def test_binary_metrics_equal_independent_formulas_on_random_data(seed):
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 2, 300)
    probability = np.clip(rng.normal(0.35 + 0.3 * labels, 0.2), 0, 1).round(2)  # rounded: many ties
    got = score("classifier", CLASSIFIER, probability, labels.astype(float))
    chosen = np.where(labels == 1, probability, 1 - probability)
    assert got["accuracy"] == pytest.approx(np.mean((probability >= 0.5) == (labels == 1)), abs=1e-6)
    assert got["logLoss"] == pytest.approx(-np.mean(xlogy(1, np.maximum(chosen, 1e-15))), abs=1e-6)
    assert got["auc"] == pytest.approx(_pairwise_auc(probability, labels == 1), abs=1e-6)


@pytest.mark.parametrize("seed", range(3))
def test_the_auc_equals_scipys_mann_whitney_u_on_tied_random_scores(seed):
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 2, 200)
    scores = rng.integers(0, 8, 200) / 8  # eight values: ties everywhere
    u = mannwhitneyu(scores[labels == 1], scores[labels == 0]).statistic
    expected = u / ((labels == 1).sum() * (labels == 0).sum())
    assert score("classifier", ["auc"], scores, labels)["auc"] == pytest.approx(expected, abs=1e-6)


@pytest.mark.parametrize("kind, metrics, predictions, labels, said", [
    ("classifier", ["accuracy"], [0.1, 0.2], [1], "1 labels for 2 examples"),
    ("classifier", ["accuracy"], [0.1, 0.2], [1, 2], "label 2 is no class of an output with 2 classes"),
    ("classifier", ["accuracy"], [[0.2, 0.3, 0.5]], [-1], "label -1 is no class"),
    ("classifier", ["accuracy"], [0.1], [0.5], "class indices (whole numbers)"),
    ("classifier", ["accuracy"], [0.1], [float("nan")], "class indices"),
    ("classifier", ["accuracy"], [[[0.1]]], [0], "a classifier's output of shape [1, 1, 1]"),
    ("regressor", ["mae"], [[1.0, 2.0]], [1.0], "a regressor's output of shape [1, 2]"),
    ("regressor", ["mae"], [1.0, 2.0], [[1.0, 2.0], [3.0, 4.0]], "one label per example"),
    ("regressor", ["mae"], [], [], "no examples"),
])
def test_labels_that_do_not_fit_the_output_are_refused_saying_why(kind, metrics, predictions, labels, said):
    with pytest.raises(ValueError, match=re.escape(said)):
        score(kind, metrics, np.asarray(predictions), np.asarray(labels))


@pytest.mark.parametrize("count, reported", [(0, 0), (1, 0), (9, 0), (10, 10), (19, 10), (20, 20), (1234, 1230)])
def test_example_counts_are_rounded_down_to_a_multiple_of_ten(count, reported):
    assert reported_examples(count) == reported
