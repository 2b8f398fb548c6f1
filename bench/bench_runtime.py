"""Runtime: <= 1 ms p50 added over in-process onnxruntime for a small model; and what routing costs.

A 4-8-3 dense classifier (the shape of the tests' models) is served by the real runtime: uvicorn on
127.0.0.1, one keep-alive http.client connection. Each repetition times one session.run of the very
same session in-process, one OIP v2 infer over HTTP with a JSON body and one with the binary tensor
data extension (tritonclient's default), in turns. Then the route decision alone
(stable + canary at weight 30: at random, by routing key, by routing flag) against a bare dict
lookup of the deployment, in batches, per request.

    .venv/bin/python bench/bench_runtime.py [--quick] [--repetitions N]"""

from __future__ import annotations

import http.client
import json
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
from common import Stats, arguments, emit, machine, timed  # first: puts the repo root on sys.path

from reconciler.devtools.onnx_builder import dense_model
from reconciler.flags import FlagFile, FlagSet, site_context
from reconciler.manifests.models import ModelInterface, TensorSpec
from reconciler.runtime.registry import ModelRegistry
from reconciler.runtime.routing import Router
from reconciler.runtime.server import RuntimeServer, build_app

TARGET_MS = 1.0
WARMUP = 200
ROUTING_BATCH = 20_000
ROUTING_ROUNDS = 15
INTERFACE = ModelInterface(
    inputs=[TensorSpec(name="input", dtype="float32", shape=[-1, 4])],
    outputs=[TensorSpec(name="output", dtype="float32", shape=[-1, 3])],
)
ROUTING_FLAG = FlagFile.model_validate(
    {
        "flags": {
            "iris-version": {
                "state": "ENABLED",
                "variants": {"stable": "1.0.0", "canary": "2.0.0"},
                "defaultVariant": "stable",
                "targeting": {"if": [{"starts_with": [{"var": "targetingKey"}, "beta-"]}, "canary", None]},
            }
        }
    }
)


def model_files(directory: Path) -> dict[str, Path]:
    files = {}
    for seed, version in enumerate(("1.0.0", "2.0.0")):
        rng = np.random.default_rng(seed)
        layers = [(rng.normal(size=(4, 8)), rng.normal(size=8), "relu"), (rng.normal(size=(8, 3)), rng.normal(size=3), "softmax")]
        files[version] = directory / f"iris-{version}.onnx"
        files[version].write_bytes(dense_model(layers))
    return files


def p99(samples: list[float]) -> float:
    return statistics.quantiles(samples, n=100, method="inclusive")[98]


def binary_body(x: np.ndarray) -> tuple[bytes, dict[str, str]]:
    """An infer request as tritonclient sends it by default: the binary tensor data extension."""
    header = json.dumps({"inputs": [{"name": "input", "shape": list(x.shape), "datatype": "FP32",
                                     "parameters": {"binary_data_size": x.nbytes}}],
                         "parameters": {"binary_data_output": True}}).encode()
    return header + x.tobytes(), {"content-type": "application/octet-stream",
                                  "inference-header-content-length": str(len(header))}


def http_against_in_process(registry: ModelRegistry, repetitions: int) -> dict[str, list[float]]:
    """Seconds per call of session.run, OIP infer with JSON and with binary tensor data, in turns."""
    x = np.asarray([[0.1, 0.2, 0.3, 0.4]], dtype=np.float32)
    session = registry.get("iris").session
    json_body = json.dumps({"inputs": [{"name": "input", "shape": [1, 4], "datatype": "FP32", "data": x.tolist()}]})
    bodies = {"json": (json_body.encode(), {"content-type": "application/json"}), "binary": binary_body(x)}
    with RuntimeServer(build_app(registry, site="bench")) as server:
        connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)

        def over_http(kind: str) -> Callable[[], None]:
            body, headers = bodies[kind]

            def call() -> None:
                connection.request("POST", "/v2/models/iris/infer", body=body, headers=headers)
                response = connection.getresponse()
                payload = response.read()
                if response.status != 200:
                    raise RuntimeError(f"infer failed: {response.status} {payload[:200]!r}")

            return call

        actions = {"in_process": lambda: session.run(None, {"input": x}),
                   "json": over_http("json"), "binary": over_http("binary")}
        for _ in range(WARMUP):  # the first requests warm the thread pool and the allocator
            for action in actions.values():
                action()
        samples: dict[str, list[float]] = {kind: [] for kind in actions}
        try:
            for _ in range(repetitions):
                for kind, action in actions.items():
                    samples[kind].append(timed(action))
        finally:
            connection.close()
        return samples


def per_call_us(action: Callable[[], object], batch: int) -> float:
    started = time.perf_counter()
    for _ in range(batch):
        action()
    return (time.perf_counter() - started) / batch * 1e6


def canary_registry(files: dict[str, Path]) -> ModelRegistry:
    """1.0.0 stable, 2.0.0 its canary at weight 30."""
    registry = ModelRegistry()
    registry.activate("iris", "iris", "1.0.0", files["1.0.0"], INTERFACE)
    registry.start_canary("iris", "iris", "2.0.0", files["2.0.0"], INTERFACE, digest=None, weight=30)
    return registry


def routing_costs(files: dict[str, Path]) -> dict[str, float]:
    """Median microseconds per decision of each kind, and of the bare lookup, timed in turns."""
    plain = canary_registry(files)
    flagged = canary_registry(files)
    flagged.set_flags(FlagSet(flags=dict(ROUTING_FLAG.flags)), site_context("bench", {"region": "eu-central"}))
    flagged.set_routing_flag("iris", "iris-version")
    router, flag_router, state = Router(plain), Router(flagged), plain.state()
    kinds: dict[str, Callable[[], object]] = {
        "dict lookup": lambda: state["iris"],
        "route at random": lambda: router.route("iris"),
        "route by key": lambda: router.route("iris", key="caller-42"),
        "route by flag": lambda: flag_router.route("iris", key="beta-7"),
    }
    samples: dict[str, list[float]] = {kind: [] for kind in kinds}
    for _ in range(ROUTING_ROUNDS):
        for kind, action in kinds.items():
            samples[kind].append(per_call_us(action, ROUTING_BATCH))
    return {kind: statistics.median(values) for kind, values in samples.items()}


def main() -> None:
    args = arguments(__doc__.splitlines()[0], repetitions=3000, quick=400)
    with tempfile.TemporaryDirectory(prefix="bench-runtime-") as scratch:
        files = model_files(Path(scratch))
        registry = ModelRegistry()
        registry.activate("iris", "iris", "1.0.0", files["1.0.0"], INTERFACE)
        samples = http_against_in_process(registry, args.repetitions)
        routing = routing_costs(files)

    base, subject, binary = samples["in_process"], samples["json"], samples["binary"]
    base_stats, subject_stats, binary_stats = Stats.of(base), Stats.of(subject), Stats.of(binary)
    added_ms = (subject_stats.median - base_stats.median) * 1e3
    binary_added_ms = (binary_stats.median - base_stats.median) * 1e3
    ratio = subject_stats.median / base_stats.median
    print(f"OIP v2 infer over HTTP vs in-process session.run, 4-8-3 model, batch 1 ({machine()})")
    print(f"  baseline  session.run   {base_stats.ms()}  p99 {p99(base) * 1e3:.3f} ms")
    print(f"  subject   HTTP JSON     {subject_stats.ms()}  p99 {p99(subject) * 1e3:.3f} ms")
    print(f"  subject   HTTP binary   {binary_stats.ms()}  p99 {p99(binary) * 1e3:.3f} ms")
    print(f"  added p50 JSON {added_ms:.3f} ms, binary {binary_added_ms:.3f} ms (target <= {TARGET_MS} ms); "
          f"ratio of medians {ratio:.1f}")
    print(f"routing decision per request (median of {ROUTING_ROUNDS} batches of {ROUTING_BATCH}):")
    for kind, micros in routing.items():
        print(f"  {kind:<16} {micros:6.2f} us")
    overhead = routing["route at random"] - routing["dict lookup"]
    emit("runtime_latency", ratio, f"added p50 <= {TARGET_MS} ms (JSON and binary)",
         max(added_ms, binary_added_ms) <= TARGET_MS,
         f"+{added_ms:.3f} ms JSON, +{binary_added_ms:.3f} ms binary p50 over session.run; "
         f"routing {routing['route at random']:.2f} us/request",
         added_p50_ms=round(added_ms, 4), binary_added_p50_ms=round(binary_added_ms, 4),
         http_p99_ms=round(p99(subject) * 1e3, 4), binary_p99_ms=round(p99(binary) * 1e3, 4),
         in_process_p99_ms=round(p99(base) * 1e3, 4), routing_us={k: round(v, 3) for k, v in routing.items()},
         routing_overhead_us=round(overhead, 3), baseline=base_stats.to_json(), subject=subject_stats.to_json(),
         binary=binary_stats.to_json())


if __name__ == "__main__":
    main()
