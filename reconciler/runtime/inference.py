"""One inference request, whatever protocol carried it (REST in server.py, gRPC beside it): route it
to a version (pinned, flag, canary split), decode its tensors against that version's interface, run
the model (batched with others: batching.py), mirror it to a shadowing canary, and count it in the metrics. The protocol only parses
its envelope before and encodes the Answer after."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace

import numpy as np

from reconciler.manifests.models import ModelInterface
from reconciler.runtime.batching import Batchers
from reconciler.runtime.metrics import RuntimeMetrics
from reconciler.runtime.oip import InferenceRequest, RequestError
from reconciler.runtime.registry import Served
from reconciler.runtime.routing import Router, ShadowRunner

SUCCESS, INVALID, ERROR = "success", "invalid", "error"


@dataclass(frozen=True)
class Answer:
    """What became of one request: ``success`` with the request and its outputs, ``invalid`` (the
    client's fault) or ``error`` (the model's) with a message; charged to ``served``."""

    served: Served
    outcome: str
    request: InferenceRequest | None = None
    outputs: dict[str, np.ndarray] = field(default_factory=dict)
    message: str = ""
    started: float = field(default_factory=time.perf_counter)

    def failure(self, exc: Exception) -> Answer:
        """This answer as the model's failure: its run failed, or what it returned cannot be sent."""
        message = f"model {self.served.deployment} version {self.served.version} failed: {exc}"
        return replace(self, outcome=ERROR, outputs={}, message=message)


Decode = Callable[[ModelInterface], InferenceRequest]  # raises RequestError


class Inference:
    """The protocol-neutral request path. ``infer`` blocks on the model: call it from a worker
    thread. It raises NotServed for a deployment or pinned version that is not loaded."""

    def __init__(self, router: Router, metrics: RuntimeMetrics, shadow: ShadowRunner, batchers: Batchers):
        self._router = router
        self._metrics = metrics
        self._shadow = shadow
        self._batchers = batchers

    def infer(
        self,
        deployment: str,
        decode: Decode,
        *,
        pinned: str | None = None,
        key: str | None = None,
        started: float | None = None,
    ) -> Answer:
        """``started`` (time.perf_counter) is when the request arrived, if before this call: the
        latency recorded for a success runs from then."""
        started = time.perf_counter() if started is None else started
        decision = self._router.route(deployment, pinned=pinned, key=key)
        served = decision.served
        try:
            request = decode(served.interface)
        except RequestError as exc:
            return Answer(served, INVALID, message=str(exc), started=started)
        answer = Answer(served, SUCCESS, request, started=started)
        try:
            arrays = self._batchers.run(served, request.output_names, request.feeds)
        except Exception as exc:  # onnxruntime's run errors share no narrower base class
            return answer.failure(exc)
        outputs = dict(zip(request.output_names, arrays, strict=True))
        self._metrics.drift.count(served.deployment, served.version, request.feeds, outputs)  # REST and gRPC alike
        if decision.shadow is not None:
            self._shadow.submit(decision.shadow, request.feeds, request.output_names, arrays)
        return replace(answer, outputs=outputs)

    def refuse(self, deployment: str, message: str, *, pinned: str | None = None, key: str | None = None) -> Answer:
        """A request too broken to decode at all, still charged to the version it routes to."""
        return Answer(self._router.route(deployment, pinned=pinned, key=key).served, INVALID, message=message)

    def record(self, answer: Answer, protocol: str = "rest") -> None:
        """Counts the answer once it is encoded; a success's latency runs from its start until now."""
        seconds = time.perf_counter() - answer.started if answer.outcome == SUCCESS else None
        self._metrics.record(answer.served, answer.outcome, seconds, protocol=protocol)
