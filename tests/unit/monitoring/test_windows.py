"""Windows, the DriftDetected state machine, additive summaries and the compact record form."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from reconciler.monitoring.binning import ProfileBinner
from reconciler.monitoring.profile import WindowPolicy, build_profile
from reconciler.monitoring.windows import (
    DriftSummary,
    DriftTrack,
    FeatureState,
    advance,
    close_window,
    pool,
    window_due,
)

POLICY = WindowPolicy()  # 1000 rows or 1 h with at least 500; 3 breaching windows detect, 3 clean clear


@pytest.mark.parametrize("windows, drifted_after_each", [
    ("BBB", [False, False, True]),
    ("BBCBB", [False, False, False, False, False]),  # a clean window resets the run of breaches
    ("BBBCC", [False, False, True, True, True]),  # two clean windows are not enough to clear
    ("BBBCCC", [False, False, True, True, True, False]),
    ("BBBCCBC", [False, False, True, True, True, True, True]),  # a breach restarts the clean count
    ("BBBB", [False, False, True, True]),
    ("CCC", [False, False, False]),
])
def test_drift_detected_after_three_breaches_and_cleared_after_three_clean_windows(windows, drifted_after_each):
    state, seen = FeatureState(), []
    for window in windows:
        state = advance(state, window == "B", POLICY)
        seen.append(state.drifted)
    assert seen == drifted_after_each


@pytest.mark.parametrize("rows, age_seconds, due", [
    (999, 10, False), (1000, 10, True), (1500, 0, True),  # the row limit
    (499, 4000, False),  # an hour has passed, but too few rows score noise: the window goes on
    (500, 3599, False), (500, 3600, True),  # the time limit, once minRows are in
])
def test_window_closes_at_the_row_limit_or_after_the_hour_once_it_holds_min_rows(rows, age_seconds, due):
    assert window_due(started=100.0, rows=rows, now=100.0 + age_seconds, policy=POLICY) is due


def profile_and_binner(seed: int = 0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(4000, 3)).astype(np.float32)
    label = rng.integers(0, 4, size=4000)
    profile = build_profile("m", "1.0.0", {"inputs": {"x": x}, "outputs": {"label": label}})
    return profile, ProfileBinner(profile), rng


@settings(max_examples=50, deadline=None)
@given(st.integers(1, 300), st.integers(1, 300), st.integers(0, 2**32 - 1))
def test_two_windows_add_up_to_their_union(first_rows, second_rows, seed):
    profile, binner, _ = profile_and_binner()
    rng = np.random.default_rng(seed)
    rows = first_rows + second_rows
    x = rng.normal(1.0, 2.0, size=(rows, 3)).astype(np.float32)
    x[rng.random(size=x.shape) < 0.05] = np.nan  # missing values land below the range, in both
    label = rng.integers(-1, 6, size=rows)  # unseen categories land in "other"
    first = binner.count({"x": x[:first_rows]}, {"label": label[:first_rows]})
    second = binner.count({"x": x[first_rows:]}, {"label": label[first_rows:]})
    union = binner.count({"x": x}, {"label": label})
    assert np.array_equal(first + second, union)
    assert union.sum() == rows * 4  # every row lands in exactly one bin of each feature


def test_a_training_value_never_falls_out_of_range_and_outliers_do():
    profile, binner, _ = profile_and_binner()
    feature = profile.inputs[0]
    assert feature.counts[0] == feature.counts[-1] == 0  # the training rows fill only the inner bins
    counts = binner.split(binner.count({"x": np.array([[-1e9, 0, 0], [1e9, 0, 0]], dtype=np.float32)}, {}))
    assert counts[feature.name][0] == 1 and counts[feature.name][-1] == 1


def test_windows_from_the_reference_stay_clean_and_a_shift_on_one_feature_is_found_on_it_alone():
    profile, binner, rng = profile_and_binner()
    track = DriftTrack("1.0.0", "sha256:" + "0" * 64)
    for _ in range(3):
        x = rng.normal(size=(1000, 3)).astype(np.float32)
        track = close_window(track, profile, binner.split(binner.count({"x": x}, {})), 1000)
        assert track.last.state == "NoDrift"
    for window in range(3):
        x = rng.normal(size=(1000, 3)).astype(np.float32)
        x[:, 1] += 1.5
        track = close_window(track, profile, binner.split(binner.count({"x": x}, {})), 1000)
        assert track.last.state == ("DriftDetected" if window == 2 else "NoDrift")
    assert track.last.drifted == ["x[1]"]
    assert set(track.last.features) == {"x[0]", "x[1]", "x[2]"}  # the output was not asked for: no score


def test_pooled_drift_is_the_score_of_the_summed_bins():
    profile, binner, rng = profile_and_binner()
    summaries = []
    for shift in (0.0, 0.0, 3.0):
        x = rng.normal(shift, 1.0, size=(1000, 3)).astype(np.float32)
        track = close_window(DriftTrack("1.0.0", "sha256:p"), profile, binner.split(binner.count({"x": x}, {})), 1000)
        summaries.append(track.last)
    pooled = pool(profile, summaries)
    union = binner.split(sum(binner.join({n: f.bins for n, f in s.features.items()}) for s in summaries))
    direct = close_window(DriftTrack("1.0.0", "sha256:p"), profile, union, 3000).last
    assert {n: round(s.score, 4) for n, s in pooled.items()} == {n: f.score for n, f in direct.features.items()}
    # one drifted site of three: its own score is far above the pooled one
    assert summaries[2].worst() > 2 * max(s.score for s in pooled.values())


def test_the_record_form_is_one_line_per_feature_and_reads_back():
    profile, binner, rng = profile_and_binner()
    x = rng.normal(size=(1000, 3)).astype(np.float32)
    summary = close_window(DriftTrack("1.0.0", "sha256:p"), profile, binner.split(binner.count({"x": x}, {})), 1000).last
    dumped = summary.model_dump(mode="json")
    assert all(isinstance(v, str) and v.startswith("score=") for v in dumped["features"].values())
    assert DriftSummary.model_validate(dumped) == summary


@pytest.mark.parametrize("text", ["score=0.1 psi=0.2", "score=x psi=0.2 bins=1,2", "score=0.1 psi=0.2 bins=1,,2"])
def test_a_malformed_feature_line_is_refused(text):
    with pytest.raises(ValueError, match="is not 'score=S psi=P bins"):
        DriftSummary.model_validate({"version": "1", "profile": "p", "state": "NoDrift", "windows": 1, "rows": 1,
                                     "features": {"f": text}})
