"""Our drift statistics against scipy on the same bins (differential), over random histograms."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.spatial.distance import jensenshannon

from reconciler.monitoring import stats

histograms = st.integers(min_value=2, max_value=25).flatmap(
    lambda bins: st.tuples(st.lists(st.integers(0, 10_000), min_size=bins, max_size=bins).filter(any),
                           st.lists(st.integers(0, 10_000), min_size=bins, max_size=bins).filter(any)))


@settings(max_examples=300, deadline=None)
@given(histograms)
def test_js_distance_is_scipys_base_2(pair):
    reference, current = pair
    assert stats.js_distance(reference, current) == pytest.approx(jensenshannon(reference, current, base=2),
                                                                    abs=1e-9)


@settings(max_examples=300, deadline=None)
@given(histograms)
def test_l_infinity_and_psi_match_their_definitions_on_scipy_free_arithmetic(pair):
    reference, current = pair
    p = np.asarray(reference) / sum(reference)
    q = np.asarray(current) / sum(current)
    assert stats.l_infinity(reference, current) == pytest.approx(float(np.max(np.abs(p - q))))
    floored_p, floored_q = np.maximum(p, stats.PSI_EPSILON), np.maximum(q, stats.PSI_EPSILON)
    # scipy's rel_entr gives the two KL halves; PSI is their sum (the symmetric KL) on floored shares.
    from scipy.special import rel_entr

    expected = float(np.sum(rel_entr(floored_q, floored_p) + rel_entr(floored_p, floored_q)))
    assert stats.psi(reference, current) == pytest.approx(expected, rel=1e-9, abs=1e-12)
    assert stats.psi(reference, current) >= 0


@pytest.mark.parametrize("reference, current, js, linf", [
    ([10, 10], [10, 10], 0.0, 0.0),  # the same distribution
    ([1, 0], [0, 1], 1.0, 1.0),  # disjoint: the maximum of both
    ([5, 5, 0], [10, 10, 0], 0.0, 0.0),  # counts, not shares: scale does not matter
])
def test_known_values(reference, current, js, linf):
    assert stats.js_distance(reference, current) == pytest.approx(js)
    assert stats.l_infinity(reference, current) == pytest.approx(linf)


def test_psi_stays_finite_when_a_bin_is_empty_on_one_side():
    value = stats.psi([0, 50, 50], [50, 50, 0])
    assert math.isfinite(value) and value > stats.PSI_ALERT


@pytest.mark.parametrize("value, band", [(0.05, "none"), (0.1, "moderate"), (0.25, "moderate"), (0.3, "significant")])
def test_psi_bands(value, band):
    assert stats.psi_band(value) == band


def test_no_rows_has_no_distribution():
    with pytest.raises(ValueError, match="no counts"):
        stats.js_distance([1, 2], [0, 0])


@settings(max_examples=100, deadline=None)
@given(st.lists(histograms, min_size=1, max_size=6))
def test_a_matrix_of_features_scores_row_by_row_as_each_alone_padding_included(pairs):
    width = max(len(reference) for reference, _ in pairs)
    padded = [([*r, *[0] * (width - len(r))], [*c, *[0] * (width - len(c))]) for r, c in pairs]
    reference, current = np.array([r for r, _ in padded]), np.array([c for _, c in padded])
    for statistic in (stats.js_distance, stats.l_infinity, stats.psi):
        together = statistic(reference, current)
        assert together.shape == (len(pairs),)
        np.testing.assert_allclose(together, [statistic(r, c) for r, c in pairs], rtol=1e-12, atol=1e-12)
