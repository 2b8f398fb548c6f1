"""The documents Triton's model configuration, model repository index and statistics endpoints
answer with, built from what the registry has loaded and what the metrics counted, in the shapes
tritonclient reads (``get_model_config``, ``get_model_repository_index``,
``get_inference_statistics``)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from reconciler.manifests.models import TensorSpec
from reconciler.runtime.batching import batchable
from reconciler.runtime.metrics import Snapshot
from reconciler.runtime.registry import BatchPolicy, Loaded, Served

PLATFORM = "onnxruntime_onnx"  # Triton's name for an ONNX model run by onnxruntime
_CONFIG_TYPES = {
    "bool": "TYPE_BOOL",
    "uint8": "TYPE_UINT8",
    "int8": "TYPE_INT8",
    "int16": "TYPE_INT16",
    "int32": "TYPE_INT32",
    "int64": "TYPE_INT64",
    "float16": "TYPE_FP16",
    "float32": "TYPE_FP32",
    "float64": "TYPE_FP64",
    "string": "TYPE_STRING",
}
_NS = 1_000_000_000


def model_config(served: Served, batching: BatchPolicy | None) -> dict[str, Any]:
    """Triton's model configuration of one loaded version. Batched dynamically, it has Triton's
    ``max_batch_size`` and ``dynamic_batching`` and its tensors' ``dims`` leave out the batch
    dimension; otherwise ``max_batch_size`` is 0 and a batch dimension is in ``dims`` as -1."""
    batched = batching if batching is not None and batchable(served.interface) else None
    skip = 1 if batched else 0
    config: dict[str, Any] = {
        "name": served.deployment,
        "platform": PLATFORM,
        "backend": "onnxruntime",
        "max_batch_size": batched.max_batch_size if batched else 0,
        "input": [_tensor_config(spec, skip) for spec in served.interface.inputs],
        "output": [_tensor_config(spec, skip) for spec in served.interface.outputs],
        "parameters": {"version": {"string_value": served.version}, "digest": {"string_value": served.digest}},
    }
    if batched:
        config["dynamic_batching"] = {"max_queue_delay_microseconds": round(batched.max_queue_delay * 1e6)}
    return config


def repository_index(state: Mapping[str, Loaded]) -> list[dict[str, str]]:
    """Every loaded version, all READY: a site loads what its fleet repo says and nothing else."""
    return [
        {"name": deployment, "version": served.version, "state": "READY", "reason": ""}
        for deployment, loaded in sorted(state.items())
        for served in loaded.versions()
    ]


def statistics(snapshot: Snapshot, versions: list[Served]) -> dict[str, Any]:
    """Triton's inference statistics of ``versions``, from the request counts and latency sums of
    the metrics. What the runtime does not measure apart (queue, compute_* phases) is zero."""
    return {"model_stats": [_version_statistics(snapshot, served) for served in versions]}


def _version_statistics(snapshot: Snapshot, served: Served) -> dict[str, Any]:
    stats = snapshot.get((served.deployment, served.version))
    succeeded = stats.requests - stats.errors - stats.invalid if stats else 0
    failed = stats.errors + stats.invalid if stats else 0
    success_ns = round(stats.success_seconds * _NS) if stats else 0
    unmeasured = {"count": 0, "ns": 0}
    return {
        "name": served.deployment,
        "version": served.version,
        "last_inference": 0,
        "inference_count": succeeded,
        "execution_count": stats.executions if stats else 0,
        "inference_stats": {
            "success": {"count": succeeded, "ns": success_ns},
            "fail": {"count": failed, "ns": 0},
            "queue": unmeasured,
            "compute_input": unmeasured,
            "compute_infer": unmeasured,
            "compute_output": unmeasured,
        },
        "batch_stats": [],
    }


def _tensor_config(spec: TensorSpec, skip: int) -> dict[str, Any]:
    return {"name": spec.name, "data_type": _CONFIG_TYPES[spec.dtype], "dims": list(spec.shape[skip:])}
