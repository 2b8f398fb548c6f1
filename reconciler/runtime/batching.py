"""Dynamic batching (Triton's idea): concurrent requests to one model version are queued for up
to ``max_queue_delay`` or until ``max_batch_size`` rows wait, run as one ``session.run`` on their
inputs concatenated along the first (batch) dimension, and the outputs split back per request.

Only for a deployment that asks for it (``registry.set_batching``) and versions whose every input
and output has a dynamic first dimension. Routing decides the version per request before it is
queued, so a batch never mixes versions. A request with more rows than ``max_batch_size`` runs
alone; requests whose other dimensions differ go into different batches; when a batch fails, or its
outputs do not split by rows, each request of it runs alone, so an error reaches only the request
it belongs to. A batcher's thread ends when its queue stays empty, so a version swapped out needs
no draining: the requests already queued on it finish, and then it is gone."""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np

from reconciler.manifests.models import ModelInterface
from reconciler.runtime.registry import BatchPolicy, ModelRegistry, Served

Run = Callable[[list[str], dict[str, np.ndarray]], Sequence[np.ndarray]]
IDLE_SECONDS = 1.0  # a batcher's thread ends after this long without requests


def batchable(interface: ModelInterface) -> bool:
    """Every input and output has a dynamic first dimension: the batch."""
    return all(spec.shape[:1] == [-1] for spec in (*interface.inputs, *interface.outputs))


@dataclass
class _Pending:
    output_names: list[str]
    feeds: dict[str, np.ndarray]
    rows: int
    queued_at: float = field(default_factory=time.monotonic)
    done: threading.Event = field(default_factory=threading.Event)
    outputs: Sequence[np.ndarray] = ()
    error: Exception | None = None

    def fits_with(self, other: _Pending) -> bool:
        """Both can be concatenated: the same inputs, each of the same dtype and non-batch dimensions."""
        return self.feeds.keys() == other.feeds.keys() and all(
            array.dtype == other.feeds[name].dtype and array.shape[1:] == other.feeds[name].shape[1:]
            for name, array in self.feeds.items()
        )


class Batcher:
    """The queue and worker thread of one model version. ``run`` blocks until its outputs are ready."""

    def __init__(
        self, run: Run, policy: BatchPolicy, name: str = "batcher", on_batch: Callable[[int], None] | None = None
    ):
        self._run = run
        self._policy = policy
        self._name = name
        self._on_batch = on_batch or _ignore  # told the number of requests of each model run
        self._queue: deque[_Pending] = deque()
        self._changed = threading.Condition()
        self._working = False

    def run(self, output_names: list[str], feeds: dict[str, np.ndarray]) -> Sequence[np.ndarray]:
        rows = _rows(feeds)
        if rows is None or rows == 0 or rows > self._policy.max_batch_size:
            self._on_batch(1)
            return self._run(output_names, feeds)
        pending = _Pending(output_names, feeds, rows)
        with self._changed:
            self._queue.append(pending)
            if not self._working:
                self._working = True
                threading.Thread(target=self._work, name=self._name, daemon=True).start()
            self._changed.notify()
        pending.done.wait()
        if pending.error is not None:
            raise pending.error
        return pending.outputs

    def _work(self) -> None:
        while (batch := self._next_batch()) is not None:
            self._on_batch(len(batch))
            _answer(self._run, batch)

    def _next_batch(self) -> list[_Pending] | None:
        """The requests of the next run, once the oldest has waited ``max_queue_delay`` or they
        fill ``max_batch_size``; None when the queue stayed empty for IDLE_SECONDS (the thread ends)."""
        with self._changed:
            if not self._changed.wait_for(lambda: self._queue, timeout=IDLE_SECONDS):
                self._working = False
                return None
            deadline = self._queue[0].queued_at + self._policy.max_queue_delay  # Triton's: from the oldest request
            while (remaining := deadline - time.monotonic()) > 0 and not self._full():
                self._changed.wait(remaining)
            return self._take()

    def _full(self) -> bool:
        """Waiting longer cannot grow the next run: it has all the rows it may take, or the
        request after it does not fit in it."""
        head = self._head()
        return len(head) < len(self._queue) or sum(p.rows for p in head) >= self._policy.max_batch_size

    def _head(self) -> list[_Pending]:
        """The longest head of the queue that fits in one run."""
        head, rows = [], 0
        for pending in self._queue:
            if rows + pending.rows > self._policy.max_batch_size or (head and not head[0].fits_with(pending)):
                break
            head.append(pending)
            rows += pending.rows
        return head

    def _take(self) -> list[_Pending]:
        head = self._head()
        for _ in head:
            self._queue.popleft()
        return head


def _ignore(size: int) -> None:
    """No one listens to the batch sizes."""


def _rows(feeds: dict[str, np.ndarray]) -> int | None:
    """The batch dimension all inputs share, or None when they do not share one."""
    sizes = {array.shape[0] if array.ndim else None for array in feeds.values()}
    return sizes.pop() if len(sizes) == 1 else None


def _answer(run: Run, batch: list[_Pending]) -> None:
    """Runs ``batch`` as one; when that fails or its outputs do not split by rows, each alone."""
    try:
        if len(batch) > 1:
            _run_merged(run, batch)
        else:
            _run_alone(run, batch[0])
    except Exception:  # onnxruntime's errors share no narrower base: each request learns its own
        for pending in batch:
            if not pending.done.is_set():
                _run_alone(run, pending)


def _run_merged(run: Run, batch: list[_Pending]) -> None:
    names = list(dict.fromkeys(name for pending in batch for name in pending.output_names))
    feeds = {name: np.concatenate([pending.feeds[name] for pending in batch]) for name in batch[0].feeds}
    outputs = dict(zip(names, run(names, feeds), strict=True))
    total = sum(pending.rows for pending in batch)
    if any(array.ndim == 0 or array.shape[0] != total for array in outputs.values()):
        raise ValueError("the outputs do not have one row per input row")
    offsets = np.cumsum([pending.rows for pending in batch])[:-1]
    pieces = {name: np.split(array, offsets) for name, array in outputs.items()}
    for index, pending in enumerate(batch):
        pending.outputs = [pieces[name][index] for name in pending.output_names]
        pending.done.set()


def _run_alone(run: Run, pending: _Pending) -> None:
    try:
        pending.outputs = run(pending.output_names, pending.feeds)
    except Exception as exc:  # handed to the request's own thread, which raises it
        pending.error = exc
    pending.done.set()


class Batchers:
    """The batcher of each loaded version of the deployments the registry says to batch; a version
    without a batch dimension, or a deployment without a policy, runs each request by itself."""

    def __init__(self, registry: ModelRegistry, on_batch: Callable[[Served, int], None] | None = None):
        self._registry = registry
        self._on_batch = on_batch
        self._batchers: dict[tuple[str, str, int, BatchPolicy], Batcher] = {}
        self._seen: object = None  # the registry's published state when the batchers were last pruned
        self._lock = threading.Lock()

    def run(self, served: Served, output_names: list[str], feeds: dict[str, np.ndarray]) -> Sequence[np.ndarray]:
        if self._batchers and self._registry.state() is not self._seen:
            self._forget_unloaded()
        policy = self._registry.batching(served.deployment)
        if policy is None or not batchable(served.interface):
            if self._on_batch is not None:
                self._on_batch(served, 1)
            return served.session.run(output_names, feeds)
        return self._batcher(served, policy).run(output_names, feeds)

    def _batcher(self, served: Served, policy: BatchPolicy) -> Batcher:
        key = (served.deployment, served.version, id(served.session), policy)
        batcher = self._batchers.get(key)
        if batcher is not None:
            return batcher
        with self._lock:
            if key not in self._batchers:
                listener = self._on_batch
                on_batch = None if listener is None else (lambda size: listener(served, size))
                self._batchers[key] = Batcher(
                    served.session.run, policy, f"batcher-{served.deployment}-{served.version}", on_batch
                )
            return self._batchers[key]

    def _forget_unloaded(self) -> None:
        """Once the registry publishes a change, drops the batchers of sessions no longer loaded
        (so they can be freed); the requests such a batcher holds still finish on it."""
        with self._lock:
            state = self._registry.state()
            loaded = {
                (served.deployment, served.version, id(served.session))
                for loaded in state.values()
                for served in loaded.versions()
            }
            for key in [key for key in self._batchers if key[:3] not in loaded]:
                del self._batchers[key]
            self._seen = state
