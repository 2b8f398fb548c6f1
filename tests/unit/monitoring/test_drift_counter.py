"""The runtime's drift counting (runtime/drift_counter.py): many request threads at once lose no
row, windows close at the stated limits, and what it keeps is bounded."""

from __future__ import annotations

import threading

import numpy as np
import pytest

from reconciler.errors import Stalled
from reconciler.monitoring.binning import ProfileBinner
from reconciler.monitoring.profile import build_profile
from reconciler.runtime.drift_counter import BATCH_ROWS, VERSIONS_PER_DEPLOYMENT, DriftMonitor, read_profile


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def profile_file(tmp_path):
    rng = np.random.default_rng(0)
    profile = build_profile("m", "1.0.0", {"inputs": {"x": rng.normal(size=(5000, 3)).astype(np.float32)},
                                           "outputs": {"y": rng.integers(0, 3, 5000)}})
    path = tmp_path / "profile.json"
    path.write_text(profile.model_dump_json())
    return path


def test_concurrent_requests_lose_no_row_and_count_as_one_batch_would(profile_file):
    monitor = DriftMonitor(Clock())
    monitor.watch("d", "1.0.0", "sha256:p", profile_file)
    rng = np.random.default_rng(1)
    requests = [({"x": rng.normal(size=(int(n), 3)).astype(np.float32)}, {"y": rng.integers(0, 4, int(n))})
                for n in rng.integers(1, 9, size=400)]
    total = sum(len(inputs["x"]) for inputs, _ in requests)
    assert 1000 <= total < 2000  # one window closes on the way, by rows

    def send(part: list) -> None:
        for inputs, outputs in part:
            monitor.count("d", "1.0.0", inputs, outputs)

    threads = [threading.Thread(target=send, args=(requests[i::8],)) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    counter = monitor.counters()[("d", "1.0.0")]
    closed = counter.track.last
    assert closed is not None and closed.windows == 1 and closed.rows >= 1000
    binner = ProfileBinner(read_profile(profile_file))
    closed_counts = binner.join({name: f.bins for name, f in closed.features.items()})
    with counter._lock:
        counter._bin_pending()
        open_counts = counter._counts.copy()
    assert np.array_equal(closed_counts + open_counts, binner.count_batch(requests))


def test_a_window_closes_by_time_once_it_holds_min_rows(profile_file):
    clock = Clock()
    monitor = DriftMonitor(clock)
    monitor.watch("d", "1.0.0", "sha256:p", profile_file)
    x = np.zeros((BATCH_ROWS * 2, 3), dtype=np.float32)
    monitor.count("d", "1.0.0", {"x": x[:499]}, {})
    clock.now += 3600
    assert monitor.summaries() == {}  # 499 rows: not enough to score
    monitor.count("d", "1.0.0", {"x": x[:1]}, {})
    [summary] = monitor.summaries().values()
    assert (summary.windows, summary.rows) == (1, 500)
    assert set(summary.features) == {"x[0]", "x[1]", "x[2]"}  # no output was counted: it has no score


def test_at_most_three_versions_of_a_deployment_are_watched_and_a_removed_one_is_forgotten(profile_file):
    monitor = DriftMonitor(Clock())
    for version in ("1", "2", "3", "4"):
        monitor.watch("d", version, "sha256:p", profile_file)
    monitor.watch("other", "1", "sha256:p", profile_file)
    assert sorted(monitor.counters()) == [("d", "2"), ("d", "3"), ("d", "4"), ("other", "1")]
    assert VERSIONS_PER_DEPLOYMENT == 3
    monitor.forget("d")
    assert list(monitor.counters()) == [("other", "1")]
    monitor.count("d", "4", {"x": np.zeros((1, 3), dtype=np.float32)}, {})  # not watched: nothing happens


def test_watching_the_same_version_and_profile_again_keeps_its_windows(profile_file):
    monitor = DriftMonitor(Clock())
    monitor.watch("d", "1", "sha256:p", profile_file)
    monitor.count("d", "1", {"x": np.zeros((1000, 3), dtype=np.float32)}, {})
    marks = monitor.window_marks()
    monitor.watch("d", "1", "sha256:p", profile_file)
    assert monitor.window_marks() == marks == frozenset({("d", "1", 1)})


def test_a_file_that_is_not_a_profile_is_refused(tmp_path):
    path = tmp_path / "profile.json"
    path.write_text('{"model": "m"}')
    with pytest.raises(Stalled) as raised:
        read_profile(path)
    assert raised.value.reason == "ProfileInvalid"


def test_a_canarys_predictions_are_compared_with_stables_in_the_canary_profiles_bins(profile_file):
    from reconciler.runtime.metrics import RuntimeMetrics, window_stats
    from reconciler.runtime.registry import ModelRegistry

    metrics = RuntimeMetrics(ModelRegistry())
    monitor = metrics.drift
    monitor.watch("d", "1", "sha256:p", profile_file)
    monitor.watch("d", "2", "sha256:p", profile_file)
    monitor.compare("d", "1", "2")
    rng = np.random.default_rng(5)

    def traffic(version: str, rows: int, labels: list[int]) -> None:
        for _ in range(rows // 50):
            monitor.count("d", version, {"x": rng.normal(size=(50, 3)).astype(np.float32)},
                          {"y": rng.choice(labels, size=50)})

    before = metrics.snapshot()
    traffic("1", 600, [0, 1, 2])
    traffic("2", 400, [0, 1, 2])
    assert window_stats(before, metrics.snapshot(), "d", "2").prediction_drift is None  # 400 canary rows < minRows
    traffic("2", 200, [0, 1, 2])
    alike = window_stats(before, metrics.snapshot(), "d", "2").prediction_drift
    assert alike is not None and alike < 0.1
    middle = metrics.snapshot()
    traffic("1", 600, [0, 1, 2])
    traffic("2", 600, [2])  # the canary now predicts one class only
    shifted = window_stats(middle, metrics.snapshot(), "d", "2").prediction_drift
    assert shifted is not None and shifted > 0.5  # L-infinity of the label shares: 1 - 1/3
    monitor.forget("d")
    assert monitor.predictions() == {}


@pytest.mark.parametrize("chunk", [1, 256, 999, 1000, 1001, 2500, 4096])
def test_rows_past_the_open_windows_room_are_cut_at_its_edge_whatever_the_rows_per_call(profile_file, chunk):
    """A batch run hands over chunks of maxRecordsPerBatch rows: each window still holds 1 000."""
    monitor = DriftMonitor(Clock())
    monitor.watch("d", "1", "sha256:p", profile_file)
    rng = np.random.default_rng(7)
    x, y = rng.normal(size=(4500, 3)).astype(np.float32), rng.integers(0, 3, 4500)
    closed = []
    for start in range(0, len(x), chunk):
        monitor.count("d", "1", {"x": x[start:start + chunk]}, {"y": y[start:start + chunk]}, live=False)
        summary = monitor.counters()[("d", "1")].track.last
        if summary is not None and (not closed or closed[-1].windows != summary.windows):
            closed.append(summary)
    assert [(s.windows, s.rows) for s in closed][-1] == (4, 1000)
    binner = ProfileBinner(read_profile(profile_file))
    fourth = binner.count_batch([({"x": x[3000:4000]}, {"y": y[3000:4000]})])
    assert np.array_equal(binner.join({name: f.bins for name, f in closed[-1].features.items()}), fourth)


def test_a_batch_runs_rows_stay_out_of_a_canarys_comparison_with_stable(profile_file):
    monitor = DriftMonitor(Clock())
    monitor.watch("d", "1", "sha256:p", profile_file)
    monitor.watch("d", "2", "sha256:p", profile_file)
    monitor.compare("d", "1", "2")
    rows = {"x": np.zeros((600, 3), dtype=np.float32)}, {"y": np.zeros(600, dtype=np.int64)}
    monitor.count("d", "1", *rows, live=False)
    monitor.count("d", "1", *rows)
    [tally] = monitor.predictions().values()
    assert tally.stable_rows == 600  # the live request's rows alone
    assert monitor.counters()[("d", "1")].outputs_so_far()[1] == 1200  # the version's own windows: both
