"""Dynamic batching (runtime/batching.py) with a fake session: concurrent requests merged into one
run and split back, the queue delay, oversized and mismatched requests, and one request's error
kept from the others."""

from __future__ import annotations

import gc
import threading
import time
import weakref
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from types import SimpleNamespace

import numpy as np
import pytest

from reconciler.manifests.models import ModelInterface, TensorSpec
from reconciler.runtime import batching
from reconciler.runtime.batching import Batcher, Batchers, batchable
from reconciler.runtime.registry import BatchPolicy

OUTPUTS = ["double", "total"]


class FakeSession:
    """Doubles ``x`` and sums its rows; refuses a batch holding a NaN (a poisoned request), and
    with ``aggregate`` answers one row for the whole batch, which cannot be split back."""

    def __init__(self, aggregate: bool = False):
        self.aggregate = aggregate
        self.batches: list[int] = []  # rows of each run
        self.threads: list[str] = []
        self._lock = threading.Lock()

    def run(self, names: list[str], feeds: dict[str, np.ndarray]) -> Sequence[np.ndarray]:
        x = feeds["x"]
        with self._lock:
            self.batches.append(len(x))
            self.threads.append(threading.current_thread().name)
        if np.isnan(x).any():
            raise RuntimeError("NaN in input x")
        results = {"double": x * 2, "total": x.sum(axis=1, keepdims=True)}
        if self.aggregate:
            results = {name: value.sum(axis=0, keepdims=True) for name, value in results.items()}
        return [results[name] for name in names]


def rows(count: int, start: float = 0.0, width: int = 3) -> np.ndarray:
    return np.arange(start, start + count * width, dtype=np.float32).reshape(count, width)


def concurrently(batcher: Batcher, requests: list[np.ndarray], names: list[str] = OUTPUTS) -> list[object]:
    """Each request from its own thread, released together; each result or the error it raised."""
    start = threading.Barrier(len(requests))

    def one(x: np.ndarray) -> object:
        start.wait()
        try:
            return batcher.run(names, {"x": x})
        except Exception as exc:  # the request's own error, kept to compare
            return exc

    with ThreadPoolExecutor(len(requests)) as pool:
        return list(pool.map(one, requests))


def expect_answers(results: list[object], requests: list[np.ndarray]) -> None:
    for result, x in zip(results, requests, strict=True):
        double, total = result  # type: ignore[misc]
        assert double.tolist() == (x * 2).tolist()
        assert total.tolist() == x.sum(axis=1, keepdims=True).tolist()


def test_concurrent_requests_fill_one_run_and_get_their_own_rows_back():
    session = FakeSession()
    sizes: list[int] = []
    batcher = Batcher(session.run, BatchPolicy(max_batch_size=8, max_queue_delay=5.0), on_batch=sizes.append)
    requests = [rows(1, start=10 * n) for n in range(8)]
    started = time.monotonic()
    results = concurrently(batcher, requests)
    expect_answers(results, requests)
    assert session.batches == [8] and sizes == [8]
    assert time.monotonic() - started < 5.0, "a full batch runs at once, without waiting out the delay"


def test_requests_of_several_rows_split_back_by_their_rows():
    session = FakeSession()
    batcher = Batcher(session.run, BatchPolicy(max_batch_size=6, max_queue_delay=5.0))
    requests = [rows(1), rows(2, start=100), rows(3, start=200)]
    expect_answers(concurrently(batcher, requests), requests)
    assert session.batches == [6]


def test_a_lone_request_waits_at_most_the_queue_delay():
    session = FakeSession()
    batcher = Batcher(session.run, BatchPolicy(max_batch_size=8, max_queue_delay=0.05))
    started = time.monotonic()
    expect_answers([batcher.run(OUTPUTS, {"x": rows(2)})], [rows(2)])
    assert time.monotonic() - started >= 0.05
    assert session.batches == [2]


def test_a_request_larger_than_max_batch_size_runs_alone_in_its_own_thread():
    session = FakeSession()
    sizes: list[int] = []
    batcher = Batcher(session.run, BatchPolicy(max_batch_size=4, max_queue_delay=5.0), on_batch=sizes.append)
    expect_answers([batcher.run(OUTPUTS, {"x": rows(5)})], [rows(5)])
    assert session.batches == [5] and sizes == [1]
    assert session.threads == [threading.current_thread().name]


def test_no_run_exceeds_max_batch_size():
    session = FakeSession()
    batcher = Batcher(session.run, BatchPolicy(max_batch_size=4, max_queue_delay=0.05))
    requests = [rows(3, start=10 * n) for n in range(5)]
    expect_answers(concurrently(batcher, requests), requests)
    assert sorted(session.batches) == [3, 3, 3, 3, 3]


def test_requests_whose_other_dimensions_differ_are_not_merged():
    session = FakeSession()
    batcher = Batcher(session.run, BatchPolicy(max_batch_size=8, max_queue_delay=0.05))
    requests = [rows(1, width=3), rows(1, width=5), rows(1, width=3)]
    expect_answers(concurrently(batcher, requests), requests)
    assert sum(session.batches) == 3 and len(session.batches) >= 2


def test_one_requests_error_reaches_only_that_request():
    session = FakeSession()
    batcher = Batcher(session.run, BatchPolicy(max_batch_size=4, max_queue_delay=5.0))
    poisoned = rows(1)
    poisoned[0, 1] = np.nan
    requests = [rows(1, start=10), poisoned, rows(1, start=20), rows(1, start=30)]
    results = concurrently(batcher, requests)
    assert isinstance(results[1], RuntimeError) and "NaN in input x" in str(results[1])
    expect_answers([results[0], *results[2:]], [requests[0], *requests[2:]])
    assert session.batches[0] == 4, "the batch ran merged first"
    assert sorted(session.batches[1:]) == [1, 1, 1, 1], "then each request alone"


def test_outputs_that_do_not_split_by_rows_are_computed_per_request():
    session = FakeSession(aggregate=True)
    batcher = Batcher(session.run, BatchPolicy(max_batch_size=4, max_queue_delay=5.0))
    requests = [rows(1, start=10 * n) for n in range(4)]
    results = concurrently(batcher, requests)
    for (double, total), x in zip(results, requests, strict=True):  # type: ignore[misc]
        assert double.tolist() == (x * 2).tolist() and total.tolist() == [[x.sum()]]


def test_each_request_gets_only_the_outputs_it_asked_for():
    session = FakeSession()
    batcher = Batcher(session.run, BatchPolicy(max_batch_size=2, max_queue_delay=5.0))
    start = threading.Barrier(2)

    def ask(names: list[str], x: np.ndarray) -> Sequence[np.ndarray]:
        start.wait()
        return batcher.run(names, {"x": x})

    with ThreadPoolExecutor(2) as pool:
        totals = pool.submit(ask, ["total"], rows(1))
        doubles = pool.submit(ask, ["double"], rows(1, start=5))
        [total], [double] = totals.result(), doubles.result()
    assert total.tolist() == [[3.0]] and double.tolist() == [[10.0, 12.0, 14.0]]
    assert session.batches == [2]


def test_the_worker_thread_ends_when_idle(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr(batching, "IDLE_SECONDS", 0.05)
    batcher = Batcher(FakeSession().run, BatchPolicy(max_batch_size=4, max_queue_delay=0.0), name="idle-batcher")
    batcher.run(OUTPUTS, {"x": rows(1)})
    deadline = time.monotonic() + 5
    while any(thread.name == "idle-batcher" for thread in threading.enumerate()):
        assert time.monotonic() < deadline, "the batcher's thread never ended"
        time.sleep(0.01)
    expect_answers([batcher.run(OUTPUTS, {"x": rows(1)})], [rows(1)])  # and a new one starts on demand


BATCHED = ModelInterface(
    inputs=[TensorSpec(name="x", dtype="float32", shape=[-1, 3])],
    outputs=[TensorSpec(name=name, dtype="float32", shape=[-1, 3]) for name in OUTPUTS],
)
FIXED = ModelInterface(
    inputs=[TensorSpec(name="x", dtype="float32", shape=[2, 3])],
    outputs=[TensorSpec(name=name, dtype="float32", shape=[2, 3]) for name in OUTPUTS],
)


@pytest.mark.parametrize("interface, expected", [(BATCHED, True), (FIXED, False)])
def test_only_models_with_a_dynamic_first_dimension_are_batchable(interface: ModelInterface, expected: bool):
    assert batchable(interface) is expected


class FakeRegistry:
    """Serves ``served`` (deployment m) with ``policy``; ``publish`` swaps in other versions, as a
    new published mapping, like ModelRegistry."""

    def __init__(self, served: SimpleNamespace, policy: BatchPolicy | None):
        self.policy = policy
        self.publish(served)

    def publish(self, *versions: SimpleNamespace) -> None:
        self._state = {"m": SimpleNamespace(versions=lambda: list(versions))}

    def batching(self, deployment: str) -> BatchPolicy | None:
        return self.policy

    def state(self) -> dict:
        return self._state


@pytest.mark.parametrize(
    "policy, interface, merged",
    [
        (BatchPolicy(max_batch_size=4, max_queue_delay=5.0), BATCHED, True),
        (None, BATCHED, False),
        (BatchPolicy(max_batch_size=4, max_queue_delay=5.0), FIXED, False),
    ],
    ids=["policy", "no-policy", "no-batch-dimension"],
)
def test_batchers_batch_only_deployments_with_a_policy_and_a_batch_dimension(
    policy: BatchPolicy | None, interface: ModelInterface, merged: bool
):
    session = FakeSession()
    served = SimpleNamespace(deployment="m", version="1", session=session, interface=interface)
    counted: list[int] = []
    batchers = Batchers(FakeRegistry(served, policy), lambda _, size: counted.append(size))  # type: ignore[arg-type]
    start = threading.Barrier(4)

    def one(n: int) -> Sequence[np.ndarray]:
        start.wait()
        return batchers.run(served, OUTPUTS, {"x": rows(1, start=n)})  # type: ignore[arg-type]

    with ThreadPoolExecutor(4) as pool:
        expect_answers(list(pool.map(one, range(4))), [rows(1, start=n) for n in range(4)])
    assert (session.batches == [4]) is merged
    assert counted == ([4] if merged else [1, 1, 1, 1])


def test_a_swapped_out_versions_session_can_be_freed(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr(batching, "IDLE_SECONDS", 0.05)
    policy = BatchPolicy(max_batch_size=4, max_queue_delay=0.0)
    old = SimpleNamespace(deployment="m", version="1", session=FakeSession(), interface=BATCHED)
    new = SimpleNamespace(deployment="m", version="2", session=FakeSession(), interface=BATCHED)
    registry = FakeRegistry(old, policy)
    batchers = Batchers(registry)  # type: ignore[arg-type]
    batchers.run(old, OUTPUTS, {"x": rows(1)})  # type: ignore[arg-type]
    freed = weakref.ref(old.session)

    registry.publish(new)
    del old
    expect_answers([batchers.run(new, OUTPUTS, {"x": rows(1)})], [rows(1)])  # type: ignore[arg-type]
    deadline = time.monotonic() + 5
    while freed() is not None:  # once the old batcher's thread has ended
        assert time.monotonic() < deadline, "the swapped-out session is still held"
        time.sleep(0.01)
        gc.collect()
