"""Dynamic batching: requests/s at concurrency 16 over REST (binary tensor data), with and without
batching, as a ratio to session.run on pre-batched input; target >= 0.7 with batching.

A dense model with a batch dimension and weights large enough that one run costs about the same
for 1 row as for 16 (1024-4096-4096-16, ~84 MB of float32 weights: reading them dominates) is
served by the real runtime on 127.0.0.1. A client process (so its threads do not share the
server's interpreter lock) runs 16 threads, each a keep-alive connection sending 1-row requests
back to back for a fixed time. Each round measures, in turns: (a) session.run of the very same
session on 16-row batches, in rows/s; (b) the server with the deployment batched (maxBatchSize 16,
maxQueueDelay 10ms); (c) the same server without batching. Ratio = median(b) / median(a).

    .venv/bin/python bench/bench_batching.py [--quick] [--repetitions N]"""

from __future__ import annotations

import http.client
import json
import multiprocessing
import statistics
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
from common import arguments, emit, machine  # first: puts the repo root on sys.path

from reconciler.devtools.onnx_builder import dense_model
from reconciler.manifests.models import ModelInterface, TensorSpec
from reconciler.runtime.registry import BatchPolicy, ModelRegistry
from reconciler.runtime.server import RuntimeServer, build_app

TARGET = 0.7
CONCURRENCY = 16
SIZES = (1024, 4096, 4096, 16)
POLICY = BatchPolicy(max_batch_size=CONCURRENCY, max_queue_delay=0.01)
INTERFACE = ModelInterface(
    inputs=[TensorSpec(name="input", dtype="float32", shape=[-1, SIZES[0]])],
    outputs=[TensorSpec(name="output", dtype="float32", shape=[-1, SIZES[-1]])],
)


def model_file(directory: Path) -> Path:
    rng = np.random.default_rng(0)
    layers = [
        (rng.normal(size=(n_in, n_out)) / np.sqrt(n_in), rng.normal(size=n_out), "relu")
        for n_in, n_out in zip(SIZES, SIZES[1:], strict=False)
    ]
    path = directory / "wide.onnx"
    path.write_bytes(dense_model(layers))
    return path


def request_body() -> tuple[bytes, dict[str, str]]:
    x = np.random.default_rng(1).normal(size=(1, SIZES[0])).astype(np.float32)
    header = json.dumps({"inputs": [{"name": "input", "shape": [1, SIZES[0]], "datatype": "FP32",
                                     "parameters": {"binary_data_size": x.nbytes}}],
                         "parameters": {"binary_data_output": True}}).encode()
    return header + x.tobytes(), {"content-type": "application/octet-stream",
                                  "inference-header-content-length": str(len(header))}


def client_process(port: int, seconds: float, answers: multiprocessing.Queue) -> None:
    """CONCURRENCY threads sending requests for ``seconds``; puts (answered, failed, elapsed)."""
    body, headers = request_body()
    counts = [[0, 0] for _ in range(CONCURRENCY)]
    start = threading.Barrier(CONCURRENCY + 1)

    def hammer(count: list[int]) -> None:
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        start.wait()
        deadline = time.perf_counter() + seconds
        while time.perf_counter() < deadline:
            connection.request("POST", "/v2/models/wide/infer", body=body, headers=headers)
            response = connection.getresponse()
            response.read()
            count[0 if response.status == 200 else 1] += 1
        connection.close()

    threads = [threading.Thread(target=hammer, args=(count,)) for count in counts]
    for thread in threads:
        thread.start()
    start.wait()
    began = time.perf_counter()
    for thread in threads:
        thread.join()
    answers.put((sum(c[0] for c in counts), sum(c[1] for c in counts), time.perf_counter() - began))


def served_per_second(port: int, seconds: float) -> tuple[float, int]:
    answers: multiprocessing.Queue = multiprocessing.get_context("spawn").Queue()
    process = multiprocessing.get_context("spawn").Process(target=client_process, args=(port, seconds, answers))
    process.start()
    answered, failed, elapsed = answers.get(timeout=seconds + 120)
    process.join()
    return answered / elapsed, failed


def pre_batched_per_second(registry: ModelRegistry, seconds: float) -> float:
    session = registry.get("wide").session
    x = np.random.default_rng(2).normal(size=(CONCURRENCY, SIZES[0])).astype(np.float32)
    rows, began = 0, time.perf_counter()
    while time.perf_counter() - began < seconds:
        session.run(None, {"input": x})
        rows += CONCURRENCY
    return rows / (time.perf_counter() - began)


def main() -> None:
    args = arguments(__doc__.splitlines()[0], repetitions=7, quick=3)
    seconds = 3.0
    samples: dict[str, list[float]] = {"pre-batched session.run": [], "REST batched": [], "REST unbatched": []}
    failures = 0
    with tempfile.TemporaryDirectory(prefix="bench-batching-") as scratch:
        registry = ModelRegistry()
        registry.activate("wide", "wide", "1", model_file(Path(scratch)), INTERFACE)
        with RuntimeServer(build_app(registry, site="bench")) as server:
            served_per_second(server.port, 1.0)  # warm-up: thread pool, allocator, client start
            for _ in range(args.repetitions):
                samples["pre-batched session.run"].append(pre_batched_per_second(registry, seconds))
                for kind, policies in (("REST batched", {"wide": POLICY}), ("REST unbatched", {})):
                    registry.set_batching(policies)
                    rate, failed = served_per_second(server.port, seconds)
                    samples[kind].append(rate)
                    failures += failed

    medians = {kind: statistics.median(values) for kind, values in samples.items()}
    base = medians["pre-batched session.run"]
    ratio, unbatched_ratio = medians["REST batched"] / base, medians["REST unbatched"] / base
    print(f"requests/s at concurrency {CONCURRENCY}, 1-row requests, model {'-'.join(map(str, SIZES))} "
          f"({machine()}; median of {args.repetitions} rounds of {seconds:.0f} s)")
    for kind, value in medians.items():
        spread = ", ".join(f"{v:.0f}" for v in samples[kind])
        print(f"  {kind:<24} {value:8.0f} /s   ({spread})")
    print(f"  batched {ratio:.2f} x pre-batched session.run (target >= {TARGET}); unbatched {unbatched_ratio:.2f} x;"
          f" failed requests: {failures}")
    emit("dynamic_batching", ratio, f">= {TARGET} x pre-batched session.run", ratio >= TARGET and failures == 0,
         f"batched {ratio:.2f} x, unbatched {unbatched_ratio:.2f} x session.run on 16-row batches",
         requests_per_second={kind: round(value, 1) for kind, value in medians.items()},
         unbatched_ratio=round(unbatched_ratio, 3), failed_requests=failures, model=list(SIZES),
         concurrency=CONCURRENCY, max_queue_delay_s=POLICY.max_queue_delay)


if __name__ == "__main__":
    main()
