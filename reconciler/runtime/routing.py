"""Which loaded version answers each request of a deployment, and the mirror of stable's requests
to the canary.

A request goes, first rule that applies:
1. to the version its URL pins;
2. to the version a routing flag names, when the deployment has one (``set_routing_flag``) and
   the flag's value is a loaded version; the flag is evaluated per request with the site's
   context, the routing key (if any) as ``targetingKey`` — so a flag can target callers, which a
   key-based rule before it would make impossible;
3. with a routing key (header ``x-routing-key`` or OIP ``parameters.routing_key``): to the canary
   when the key's bucket (flagd's murmur bucketing of deployment + key, 0-99) is below the canary
   weight, else to stable — the same caller stays on one version while the weight holds, and
   raising the weight only moves callers from stable to canary;
4. at random, ``weight`` percent to the canary.
"""

from __future__ import annotations

import logging
import queue
import random
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

import numpy as np

from reconciler.flags import bucket, evaluate
from reconciler.runtime.registry import Loaded, ModelRegistry, NotServed, Served

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Decision:
    served: Served
    shadow: Served | None = None  # the canary that also gets this request, answer discarded


def choose(
    deployment: str,
    loaded: Loaded,
    *,
    pinned: str | None,
    key: str | None,
    flagged: str | None,
    draw: Callable[[], float],
) -> Served:
    """The rules above, given the flag's choice already evaluated (``flagged``); ``draw`` is a
    uniform random number in [0, 1)."""
    if pinned is not None:
        served = loaded.find(pinned)
        if served is None:
            known = ", ".join(s.version for s in loaded.versions())
            raise NotServed(f"model {deployment!r} has no version {pinned!r} loaded; loaded: {known}")
        return served
    if flagged is not None and (served := loaded.find(flagged)) is not None:
        return served
    canary = loaded.canary
    if canary is None or loaded.weight == 0:
        return loaded.active
    if key is not None:
        return canary if bucket(deployment + key, 100) < loaded.weight else loaded.active
    return canary if draw() * 100 < loaded.weight else loaded.active


class Router:
    """Routes over what the registry publishes at the instant of the request; takes no lock."""

    def __init__(self, registry: ModelRegistry, *, rng: random.Random | None = None):
        self._registry = registry
        self._draw = (rng or random.Random()).random

    def route(self, deployment: str, *, pinned: str | None = None, key: str | None = None) -> Decision:
        loaded = self._registry.loaded(deployment)
        flag_key = self._registry.routing_flag(deployment) if pinned is None else None
        flagged = self._flagged_version(flag_key, key) if flag_key is not None else None
        served = choose(deployment, loaded, pinned=pinned, key=key, flagged=flagged, draw=self._draw)
        mirrored = loaded.mirror and loaded.canary is not None and served is loaded.active
        return Decision(served, loaded.canary if mirrored else None)

    def _flagged_version(self, flag_key: str, key: str | None) -> str | None:
        flags, site_context = self._registry.flags()
        context = dict(site_context) if key is None else {**site_context, "targetingKey": key}
        resolution = evaluate(flags, flag_key, context, datetime.now(UTC), expected_type=str)
        return resolution.value if isinstance(resolution.value, str) else None


# --- shadow traffic -------------------------------------------------------------------------------

ATOL, RTOL = 1e-4, 1e-3


def agrees(stable: Sequence[np.ndarray], canary: Sequence[np.ndarray]) -> bool:
    """Whether the canary's answer to one request agrees with stable's, output by output.

    An output whose rows are probability distributions (floats in [0, 1] along the last axis,
    summing to 1 within 1e-3: a softmax) is a classification, and agrees when every row picks the
    same class (argmax): a retrained classifier never matches its predecessor's probabilities,
    and the decision is what callers act on. Every other output agrees when it is equal within
    tolerance (np.allclose, atol 1e-4, rtol 1e-3; NaN equals NaN)."""
    if len(stable) != len(canary):
        return False
    for ours, theirs in zip(stable, canary, strict=True):
        if ours.shape != theirs.shape:
            return False
        if _is_distribution(ours) and _is_distribution(theirs):
            if not np.array_equal(ours.argmax(axis=-1), theirs.argmax(axis=-1)):
                return False
        elif not np.allclose(ours, theirs, atol=ATOL, rtol=RTOL, equal_nan=True):
            return False
    return True


def _is_distribution(array: np.ndarray) -> bool:
    if array.dtype.kind != "f" or array.ndim < 2 or array.shape[-1] < 2 or array.size == 0:
        return False
    return bool(((array >= 0) & (array <= 1)).all() and np.allclose(array.sum(axis=-1), 1, atol=1e-3))


@dataclass(frozen=True)
class _Mirrored:
    canary: Served
    feeds: dict[str, np.ndarray]
    output_names: list[str]
    stable_outputs: list[np.ndarray]


class ShadowRunner:
    """Runs mirrored requests on the canary in one background thread and records whether the
    canary agreed with stable. The queue is bounded and ``submit`` never waits: when the canary
    falls behind, mirrored requests are dropped (and counted), so stable's answers never slow down."""

    def __init__(
        self,
        on_result: Callable[[Served, bool], None],
        on_dropped: Callable[[Served], None],
        capacity: int = 64,
    ):
        self._on_result = on_result
        self._on_dropped = on_dropped
        self._queue: queue.Queue[_Mirrored | None] = queue.Queue(maxsize=capacity)
        self._thread: threading.Thread | None = None

    def submit(
        self,
        canary: Served,
        feeds: dict[str, np.ndarray],
        output_names: list[str],
        stable_outputs: list[np.ndarray],
    ) -> bool:
        """Queues one mirrored request; False when it was dropped."""
        try:
            self._queue.put_nowait(_Mirrored(canary, feeds, output_names, stable_outputs))
        except queue.Full:
            self._on_dropped(canary)
            return False
        return True

    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._work, name="runtime-shadow", daemon=True)
            self._thread.start()

    def close(self) -> None:
        """Finishes the requests queued so far, then stops the thread."""
        if self._thread is not None:
            self._queue.put(None)
            self._thread.join()
            self._thread = None

    def _work(self) -> None:
        while (item := self._queue.get()) is not None:
            try:
                answer = item.canary.session.run(item.output_names, item.feeds)
                agreed = agrees(item.stable_outputs, answer)
            except Exception as exc:  # a canary that fails on real traffic disagrees; onnxruntime has no narrower base
                log.debug("shadow run of %s %s failed: %s", item.canary.deployment, item.canary.version, exc)
                agreed = False
            self._on_result(item.canary, agreed)
