"""Drift counting: runtime p50 with drift counting <= 1.1x serving without it; <= 4 KB of status record
per deployment for 32 features.

A 32-16-3 dense classifier is served three times by the real runtime (uvicorn on 127.0.0.1, one
keep-alive http.client connection each): twice plain, once with a reference profile of its 32 inputs
and 3 outputs watched, so every request is counted (35 features x 12 bins). Each repetition times
one OIP v2 infer of batch 1 on each, in an order that rotates every repetition (on this shared
machine the order alone moves a median by tens of percent); the ratio is of the medians, and the
plain/plain ratio of the same run is the noise floor. Then the counting alone in-process (batch 1 and
100 rows), and the bytes a deployment's drift summary adds to the stored status record (record_json:
sorted, indented, as Git holds it).

    .venv/bin/python bench/bench_drift.py [--quick] [--repetitions N]"""

from __future__ import annotations

import http.client
import json
import statistics
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
from common import Stats, arguments, emit, machine, timed  # first: puts the repo root on sys.path

from reconciler.devtools.onnx_builder import dense_model
from reconciler.manifests.models import ModelInterface, TensorSpec
from reconciler.monitoring.profile import build_profile
from reconciler.runtime.drift_counter import DriftMonitor
from reconciler.runtime.metrics import RuntimeMetrics
from reconciler.runtime.registry import ModelRegistry
from reconciler.runtime.server import RuntimeServer, build_app
from reconciler.status.gitref import record_json
from reconciler.status.record import DeploymentStatus, StatusRecord

FEATURES = 32
TARGET_RATIO = 1.1
TARGET_BYTES = 4096
WARMUP = 200
ANSWERS_PER_SAMPLE = 20
INTERFACE = ModelInterface(inputs=[TensorSpec(name="input", dtype="float32", shape=[-1, FEATURES])],
                           outputs=[TensorSpec(name="output", dtype="float32", shape=[-1, 3])])


def setup(directory: Path) -> tuple[ModelRegistry, Path, Path]:
    rng = np.random.default_rng(0)
    layers = [(rng.normal(size=(FEATURES, 16)), rng.normal(size=16), "relu"),
              (rng.normal(size=(16, 3)), rng.normal(size=3), "softmax")]
    model = directory / "wide.onnx"
    model.write_bytes(dense_model(layers))
    registry = ModelRegistry()
    registry.activate("wide", "wide", "1.0.0", model, INTERFACE)
    x = rng.normal(size=(20_000, FEATURES)).astype(np.float32)
    [y] = registry.get("wide").session.run(["output"], {"input": x})
    profile = directory / "profile.json"
    profile.write_text(build_profile("wide", "1.0.0", {"inputs": {"input": x}, "outputs": {"output": y}}).model_dump_json())
    return registry, model, profile


def served_latencies(registry: ModelRegistry, profile: Path, repetitions: int) -> list[list[float]]:
    """Seconds per request of: plain, plain again (the noise floor), drift counted."""
    body = json.dumps({"inputs": [{"name": "input", "shape": [1, FEATURES], "datatype": "FP32",
                                   "data": np.random.default_rng(1).normal(size=(1, FEATURES)).tolist()}]})
    metrics = [RuntimeMetrics(registry) for _ in range(3)]
    metrics[2].drift.watch("wide", "1.0.0", "sha256:bench", profile)
    with RuntimeServer(build_app(registry, site="plain", metrics=metrics[0])) as plain, \
            RuntimeServer(build_app(registry, site="plain-again", metrics=metrics[1])) as again, \
            RuntimeServer(build_app(registry, site="counted", metrics=metrics[2])) as counted:
        connections = [http.client.HTTPConnection("127.0.0.1", s.port, timeout=10) for s in (plain, again, counted)]

        def infer(connection: http.client.HTTPConnection) -> None:
            connection.request("POST", "/v2/models/wide/infer", body=body, headers={"content-type": "application/json"})
            response = connection.getresponse()
            if response.status != 200:
                raise RuntimeError(f"infer failed: {response.status} {response.read()[:200]!r}")
            response.read()

        for _ in range(WARMUP):
            for connection in connections:
                infer(connection)
        samples: list[list[float]] = [[], [], []]
        try:
            for repetition in range(repetitions):
                for turn in range(3):
                    which = (repetition + turn) % 3
                    samples[which].append(timed(lambda: infer(connections[which])))  # noqa: B023 (called at once)
        finally:
            for connection in connections:
                connection.close()
    if repetitions + WARMUP >= 1000 and not metrics[2].drift.counters()[("wide", "1.0.0")].track.windows:
        raise RuntimeError("the counted server closed no window: it did not count")
    return samples


def answer_latencies(registry: ModelRegistry, profile: Path, repetitions: int) -> list[list[float]]:
    """The runtime's own work per request, no network: decode, route, run, count, encode (the
    server's ``_answer``), plain and counted in turns, many per repetition (one is microseconds)."""
    body = json.dumps({"inputs": [{"name": "input", "shape": [1, FEATURES], "datatype": "FP32",
                                   "data": np.random.default_rng(1).normal(size=(1, FEATURES)).tolist()}]}).encode()
    answers = []
    for watched in (False, True):
        metrics = RuntimeMetrics(registry)
        if watched:
            metrics.drift.watch("wide", "1.0.0", "sha256:bench", profile)
        [route] = [r for r in build_app(registry, site="s", metrics=metrics).routes if r.path == "/v2/models/{name}/infer"]
        answers.append(route.endpoint.__self__._answer)  # the bound method of the app's API object

    def batch(answer) -> None:
        for _ in range(ANSWERS_PER_SAMPLE):
            answer("wide", None, {}, body, time.perf_counter())

    plain, counted = [], []
    for repetition in range(repetitions):
        for which in ((0, 1) if repetition % 2 else (1, 0)):
            (plain if which == 0 else counted).append(timed(lambda: batch(answers[which])) / ANSWERS_PER_SAMPLE)  # noqa: B023
    return [plain, counted]


def counting_us(profile: Path, rows: int, calls: int = 2000) -> float:
    monitor = DriftMonitor()
    monitor.watch("wide", "1.0.0", "sha256:bench", profile)
    rng = np.random.default_rng(2)
    inputs = {"input": rng.normal(size=(rows, FEATURES)).astype(np.float32)}
    outputs = {"output": rng.random(size=(rows, 3)).astype(np.float32)}
    samples = []
    for _ in range(5):
        started = time.perf_counter()
        for _ in range(calls):
            monitor.count("wide", "1.0.0", inputs, outputs)
        samples.append((time.perf_counter() - started) / calls * 1e6)
    return statistics.median(samples)


def record_bytes(profile: Path) -> tuple[int, int]:
    """Bytes of the drift summary in the stored record, and of the whole deployment entry with it."""
    monitor = DriftMonitor()
    monitor.watch("wide", "1.0.0", "sha256:" + "ab" * 32, profile)
    rng = np.random.default_rng(3)
    monitor.count("wide", "1.0.0", {"input": rng.normal(size=(1000, FEATURES)).astype(np.float32)},
                  {"output": rng.random(size=(1000, 3)).astype(np.float32)})
    drift = monitor.summaries()[("wide", "1.0.0")]
    at = datetime(2026, 12, 7, tzinfo=UTC)
    status = DeploymentStatus(model="wide", state="success", version="1.0.0", activeVersion="1.0.0",
                              rollout="a1b2c3d4e5f6", reason="Converged", since=at)

    def stored(entry: DeploymentStatus) -> int:
        return len(record_json(StatusRecord(site="s", state="success", reason="Converged", deployments={"wide": entry},
                                            agentVersion="bench", writtenAt=at)))

    with_drift = stored(status.model_copy(update={"drift": drift}))
    return with_drift - stored(status), with_drift - stored(status) + len(json.dumps(status.model_dump(mode="json")))


def main() -> None:
    args = arguments(__doc__.splitlines()[0], repetitions=2000, quick=300)
    with tempfile.TemporaryDirectory(prefix="bench-drift-") as scratch:
        registry, _, profile = setup(Path(scratch))
        base, again, subject = served_latencies(registry, profile, args.repetitions)
        plain_answer, counted_answer = answer_latencies(registry, profile, args.repetitions)
        count_1, count_100 = counting_us(profile, 1), counting_us(profile, 100, calls=500)
        drift_bytes, entry_bytes = record_bytes(profile)
    base_stats, again_stats, subject_stats = Stats.of(base), Stats.of(again), Stats.of(subject)
    ratio = subject_stats.median / base_stats.median
    floor = again_stats.median / base_stats.median
    print(f"OIP v2 infer over HTTP, 32-16-3 model, batch 1, with and without drift counting ({machine()})")
    print(f"  baseline  plain         {base_stats.ms()}")
    print(f"  control   plain again   {again_stats.ms()}")
    print(f"  subject   drift counted {subject_stats.ms()}")
    print(f"  ratio of medians {ratio:.3f} (target <= {TARGET_RATIO}); plain/plain {floor:.3f} (the noise floor)")
    answer_ratio = Stats.of(counted_answer).median / Stats.of(plain_answer).median
    print(f"the runtime's work per request without the network (decode, run, count, encode), p50: plain "
          f"{Stats.of(plain_answer).median * 1e6:.1f} us, counted {Stats.of(counted_answer).median * 1e6:.1f} us, "
          f"ratio {answer_ratio:.3f}")
    print(f"counting alone, 35 features: {count_1:.1f} us per 1-row request, {count_100:.1f} us per 100-row request")
    print(f"status record: drift summary {drift_bytes} bytes, whole deployment entry ~{entry_bytes} bytes "
          f"(target <= {TARGET_BYTES})")
    meets = ratio <= TARGET_RATIO and drift_bytes <= TARGET_BYTES
    emit("drift_counting", ratio, f"p50 ratio <= {TARGET_RATIO}, drift summary <= {TARGET_BYTES} B for 32 features",
         meets, f"{ratio:.3f}x p50 with counting; {drift_bytes} B drift summary",
         noise_floor_ratio=round(floor, 3), in_process_ratio=round(answer_ratio, 3), counting_us_1_row=round(count_1, 2), counting_us_100_rows=round(count_100, 2), drift_summary_bytes=drift_bytes,
         deployment_entry_bytes=entry_bytes, baseline=base_stats.to_json(), subject=subject_stats.to_json())


if __name__ == "__main__":
    main()
