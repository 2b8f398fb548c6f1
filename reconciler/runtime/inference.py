"""One inference request, whichever protocol brought it (REST in server.py, gRPC in grpc_server.py):
routed to a version, decoded against that version's interface, run, encoded, and mirrored to the
canary when the route says so. The protocol reads its request and writes its answer; the rest is
here, once."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Generic, TypeVar

import numpy as np

from reconciler.runtime.oip import InferenceRequest, RequestError
from reconciler.runtime.registry import Served
from reconciler.runtime.routing import Router, ShadowRunner

Encoded = TypeVar("Encoded")


@dataclass(frozen=True)
class Answer(Generic[Encoded]):
    served: Served
    outcome: str  # success (content is the encoded response), invalid or error (content is the message)
    content: Encoded | str


def answer(
    router: Router,
    shadow: ShadowRunner,
    deployment: str,
    *,
    pinned: str | None,
    key: str | None,
    decode: Callable[[Served], InferenceRequest],
    encode: Callable[[Served, InferenceRequest, dict[str, np.ndarray]], Encoded],
) -> Answer[Encoded]:
    """Raises NotServed when nothing answers for ``deployment`` (or its ``pinned`` version). The
    request holds the Served it was routed to from start to end, so a version swap meanwhile
    does not touch it."""
    decision = router.route(deployment, pinned=pinned, key=key)
    served = decision.served
    try:
        request = decode(served)
    except RequestError as exc:
        return Answer(served, "invalid", str(exc))
    try:
        arrays = served.session.run(request.output_names, request.feeds)
        content = encode(served, request, dict(zip(request.output_names, arrays, strict=True)))
    except Exception as exc:  # onnxruntime's run errors share no narrower base class
        return Answer(served, "error", f"model {served.deployment} version {served.version} failed: {exc}")
    if decision.shadow is not None:
        shadow.submit(decision.shadow, request.feeds, request.output_names, arrays)
    return Answer(served, "success", content)
