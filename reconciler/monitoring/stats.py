"""How far a window of live traffic is from the reference, per feature, from bin counts alone (so
sums of windows and of sites score like the union of their rows):

- Jensen-Shannon distance, base 2 (range 0-1; NannyML's and scipy's ``jensenshannon(base=2)``):
  sqrt(JSD), JSD = ½ KL(p‖m) + ½ KL(q‖m), m = ½ (p + q). Numeric features breach at ``JS_THRESHOLD``.
- L-infinity distance, max_i |p_i - q_i| (Vertex AI's and SageMaker's categorical statistic).
  Categorical features breach at ``LINF_THRESHOLD``.
- Population stability index, Σ (q_i - p_i) ln(q_i / p_i), every share floored at ``PSI_EPSILON``
  (Evidently's 0.0001) so an empty bin on either side stays finite. Reported for every feature with
  the traditional bands: below 0.1 no change, 0.1-0.25 moderate, above 0.25 significant.

p is the reference's share per bin, q the window's. Each statistic takes one bin vector per side
(and gives a float) or one row of bins per feature (and gives an array, one value per row): a
window's features are scored in a few numpy calls, whatever their number. Rows padded with empty
bins on both sides score as without them. Defaults from the research brief
(shared/research/batch_drift.md): JS 0.1 (Evidently, NannyML), L∞ 0.1 (SageMaker's
categorical_comparison_threshold), PSI 0.1 / 0.25."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

JS_THRESHOLD = 0.1
LINF_THRESHOLD = 0.1
PSI_WARN = 0.1
PSI_ALERT = 0.25
PSI_EPSILON = 1e-4
Distance = float | np.ndarray  # float for one bin vector, one per row for a matrix of them


def shares(counts: Sequence[int] | np.ndarray) -> np.ndarray:
    """Counts as shares of their total, along the last axis; a bin vector without any count has
    no distribution."""
    values = np.asarray(counts, dtype=np.float64)
    total = values.sum(axis=-1, keepdims=True)
    if np.any(total <= 0):
        raise ValueError("no counts: a distribution needs at least one row")
    return values / total


def js_distance(reference: Sequence[int] | np.ndarray, current: Sequence[int] | np.ndarray) -> Distance:
    p, q = shares(reference), shares(current)
    m = (p + q) / 2
    divergence = (_kl_terms(p, m) + _kl_terms(q, m)) / 2
    return _scalar(np.minimum(1.0, np.sqrt(np.maximum(0.0, divergence))))


def l_infinity(reference: Sequence[int] | np.ndarray, current: Sequence[int] | np.ndarray) -> Distance:
    return _scalar(np.max(np.abs(shares(reference) - shares(current)), axis=-1))


def psi(reference: Sequence[int] | np.ndarray, current: Sequence[int] | np.ndarray,
        epsilon: float = PSI_EPSILON) -> Distance:
    p = np.maximum(shares(reference), epsilon)
    q = np.maximum(shares(current), epsilon)
    return _scalar(np.sum((q - p) * np.log(q / p), axis=-1))


def psi_band(value: float) -> str:
    return "significant" if value > PSI_ALERT else "moderate" if value >= PSI_WARN else "none"


def _kl_terms(p: np.ndarray, m: np.ndarray) -> np.ndarray:
    """Σ p log2(p/m) over the bins where p > 0 (0 log 0 = 0; m > 0 wherever p > 0)."""
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(p > 0, p * np.log2(p / m), 0.0).sum(axis=-1)


def _scalar(values: np.ndarray) -> Distance:
    return float(values) if np.ndim(values) == 0 else values
