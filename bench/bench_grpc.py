"""Runtime over gRPC: <= 1 ms p50 added over in-process onnxruntime for a small model.

The 4-8-3 dense classifier of bench_runtime.py is served by the real gRPC server on 127.0.0.1
(runtime/grpc_server.py). Each repetition times one ModelInfer over one open channel (the request
serialised once, as bench_runtime sends one prepared body; raw_input_contents in, raw_output_contents
out) and one session.run of the very same session in-process, in turns. Then the same with
tritonclient.grpc, which builds and reads the messages itself, for what a typical client sees.

    .venv/bin/python bench/bench_grpc.py [--quick] [--repetitions N]"""

from __future__ import annotations

import tempfile
from pathlib import Path

import grpc
import numpy as np
import tritonclient.grpc as triton
from bench_runtime import INTERFACE, WARMUP, model_files, p99
from common import Stats, arguments, emit, interleaved, machine  # first: puts the repo root on sys.path

from reconciler.runtime import grpc_codec
from reconciler.runtime.grpc_server import GrpcServer
from reconciler.runtime.registry import ModelRegistry
from reconciler.runtime.server import build_app

TARGET_MS = 1.0
X = np.asarray([[0.1, 0.2, 0.3, 0.4]], dtype=np.float32)


def infer_request() -> bytes:
    request = grpc_codec.ModelInferRequest(model_name="iris")
    request.inputs.add(name="input", datatype="FP32", shape=X.shape)
    request.raw_input_contents.append(X.astype("<f4").tobytes())  # raw contents are little-endian
    return request.SerializeToString()


def against_in_process(registry: ModelRegistry, port: int, repetitions: int) -> dict[str, tuple[list, list]]:
    """(in-process, over gRPC) seconds for the bare channel and for tritonclient.grpc."""
    session = registry.get("iris").session
    body = infer_request()

    def in_process() -> None:
        session.run(None, {"input": X})

    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel, triton.InferenceServerClient(f"127.0.0.1:{port}") as client:
        infer = channel.unary_unary("/inference.GRPCInferenceService/ModelInfer")  # bytes in, bytes out
        tensor = triton.InferInput("input", list(X.shape), "FP32")
        tensor.set_data_from_numpy(X)
        callers = {"channel": lambda: infer(body, timeout=10), "tritonclient": lambda: client.infer("iris", [tensor])}
        for _ in range(WARMUP):  # the first calls warm the thread pool and the allocator
            in_process()
            for call in callers.values():
                call()
        return {name: interleaved(in_process, call, repetitions) for name, call in callers.items()}


def main() -> None:
    args = arguments(__doc__.splitlines()[0], repetitions=3000, quick=400)
    with tempfile.TemporaryDirectory(prefix="bench-grpc-") as scratch:
        files = model_files(Path(scratch))
        registry = ModelRegistry()
        registry.activate("iris", "iris", "1.0.0", files["1.0.0"], INTERFACE)
        # The REST app's request path, as the agent shares it; no canary, so its shadow runner stays idle.
        with GrpcServer(registry, build_app(registry, site="bench").state.inference) as server:
            runs = against_in_process(registry, server.port, args.repetitions)

    print(f"OIP v2 ModelInfer over gRPC vs in-process session.run, 4-8-3 model, batch 1 ({machine()})")
    added: dict[str, float] = {}
    details: dict[str, object] = {}
    for name, (base, subject) in runs.items():
        base_stats, subject_stats = Stats.of(base), Stats.of(subject)
        added[name] = (subject_stats.median - base_stats.median) * 1e3
        print(f"  baseline  session.run         {base_stats.ms()}  p99 {p99(base) * 1e3:.3f} ms")
        print(f"  subject   gRPC {name:<12}  {subject_stats.ms()}  p99 {p99(subject) * 1e3:.3f} ms")
        print(f"  added p50 {added[name]:.3f} ms; ratio of medians {subject_stats.median / base_stats.median:.1f}")
        details[name] = {"added_p50_ms": round(added[name], 4), "grpc_p99_ms": round(p99(subject) * 1e3, 4),
                         "baseline": base_stats.to_json(), "subject": subject_stats.to_json()}
    base, subject = runs["channel"]
    ratio = Stats.of(subject).median / Stats.of(base).median
    print(f"added p50 over a bare channel {added['channel']:.3f} ms (target <= {TARGET_MS} ms)")
    emit("runtime_grpc_latency", ratio, f"added p50 <= {TARGET_MS} ms", added["channel"] <= TARGET_MS,
         f"+{added['channel']:.3f} ms p50 over session.run (tritonclient: +{added['tritonclient']:.3f} ms)",
         **details)


if __name__ == "__main__":
    main()
