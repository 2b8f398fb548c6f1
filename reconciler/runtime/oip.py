"""Open Inference Protocol v2 (KServe / Triton) JSON codec: turns an inference request body into
numpy feeds checked against the model's interface, and model outputs into the response body.
Every way a request can be wrong raises RequestError with a message that names the tensor."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from reconciler.manifests.models import ModelInterface, TensorSpec

# OIP datatype -> numpy dtype. The manifest's TensorSpec.dtype is the numpy name of the same type.
DATATYPES: dict[str, np.dtype] = {
    "BOOL": np.dtype(np.bool_),
    "UINT8": np.dtype(np.uint8),
    "INT8": np.dtype(np.int8),
    "INT16": np.dtype(np.int16),
    "INT32": np.dtype(np.int32),
    "INT64": np.dtype(np.int64),
    "FP16": np.dtype(np.float16),
    "FP32": np.dtype(np.float32),
    "FP64": np.dtype(np.float64),
}
_DATATYPE_OF: dict[np.dtype, str] = {dtype: name for name, dtype in DATATYPES.items()}

# The numpy kinds (bool, signed, unsigned, float) a JSON array may hold for each target kind:
# integers widen to floats, but a float never silently truncates into an integer tensor.
_ACCEPTED_KINDS = {"b": "b", "i": "iu", "u": "iu", "f": "iuf"}


class RequestError(ValueError):
    """The request is malformed or does not fit the model: the client's fault (HTTP 400)."""


@dataclass(frozen=True)
class InferenceRequest:
    id: str | None
    feeds: dict[str, np.ndarray]
    output_names: list[str]


def datatype(spec: TensorSpec) -> str:
    return _DATATYPE_OF[np.dtype(spec.dtype)]


def tensor_metadata(spec: TensorSpec) -> dict[str, Any]:
    return {"name": spec.name, "datatype": datatype(spec), "shape": list(spec.shape)}


def decode_request(body: bytes, interface: ModelInterface) -> InferenceRequest:
    return decode_document(parse_document(body), interface)


def parse_document(body: bytes) -> dict[str, Any]:
    """The request body as a JSON object whose envelope (id, parameters) is well-formed; the
    tensors are checked by decode_document, against the interface of the version chosen."""
    try:
        document = json.loads(body)
    except (ValueError, UnicodeDecodeError) as exc:
        raise RequestError(f"request body is not valid JSON: {exc}") from None
    if not isinstance(document, dict):
        raise RequestError("request body must be a JSON object")
    request_id = document.get("id")
    if request_id is not None and not isinstance(request_id, str):
        raise RequestError("'id' must be a string")
    parameters = document.get("parameters", {})
    if not isinstance(parameters, dict):
        raise RequestError("'parameters' must be an object")
    if not isinstance(parameters.get("routing_key", ""), str):
        raise RequestError("'parameters.routing_key' must be a string")
    return document


def routing_key(document: dict[str, Any]) -> str | None:
    """The key that keeps a caller on one version (``parameters.routing_key``), if given."""
    return document.get("parameters", {}).get("routing_key")


def decode_document(document: dict[str, Any], interface: ModelInterface) -> InferenceRequest:
    return InferenceRequest(
        id=document.get("id"),
        feeds=_decode_inputs(document.get("inputs"), interface),
        output_names=_requested_outputs(document.get("outputs"), interface),
    )


def encode_response(
    model_name: str, model_version: str, request_id: str | None, outputs: dict[str, np.ndarray]
) -> bytes:
    document: dict[str, Any] = {"model_name": model_name, "model_version": model_version}
    if request_id is not None:
        document["id"] = request_id
    document["outputs"] = [_encode_tensor(name, array) for name, array in outputs.items()]
    return json.dumps(document, separators=(",", ":")).encode()


def _decode_inputs(inputs: object, interface: ModelInterface) -> dict[str, np.ndarray]:
    if not isinstance(inputs, list) or not inputs:
        raise RequestError("'inputs' must be a non-empty list of tensors")
    specs = {spec.name: spec for spec in interface.inputs}
    feeds: dict[str, np.ndarray] = {}
    for tensor in inputs:
        if not isinstance(tensor, dict) or not isinstance(tensor.get("name"), str):
            raise RequestError("each input must be an object with a string 'name'")
        name = tensor["name"]
        if name not in specs:
            raise RequestError(f"model has no input {name!r}; its inputs are: {', '.join(specs)}")
        if name in feeds:
            raise RequestError(f"input {name!r} is given more than once")
        feeds[name] = _decode_tensor(tensor, specs[name])
    missing = [name for name in specs if name not in feeds]
    if missing:
        raise RequestError(f"missing input(s): {', '.join(missing)}")
    return feeds


def _decode_tensor(tensor: dict[str, Any], spec: TensorSpec) -> np.ndarray:
    name, expected_type = spec.name, datatype(spec)
    if tensor.get("datatype") != expected_type:
        raise RequestError(f"input {name!r} has datatype {expected_type}, got {tensor.get('datatype')!r}")
    shape = tensor.get("shape")
    if not _is_shape(shape):
        raise RequestError(f"input {name!r}: 'shape' must be a list of non-negative integers")
    if len(shape) != len(spec.shape) or any(
        want not in (-1, got) for want, got in zip(spec.shape, shape, strict=True)
    ):
        raise RequestError(f"input {name!r} has shape {spec.shape} (-1: any size), got {shape}")
    if "data" not in tensor:
        raise RequestError(f"input {name!r} has no 'data'")
    try:
        values = np.asarray(tensor["data"])
    except ValueError:
        raise RequestError(f"input {name!r}: 'data' is not a rectangular array") from None
    target = DATATYPES[expected_type]
    if values.size and values.dtype.kind not in _ACCEPTED_KINDS[target.kind]:
        raise RequestError(f"input {name!r}: 'data' holds values that are not {expected_type}")
    needed = math.prod(shape)
    if values.size != needed:
        raise RequestError(f"input {name!r}: shape {shape} needs {needed} values, got {values.size}")
    if target.kind in "iu" and values.size and not _fits(values, target):
        raise RequestError(f"input {name!r}: 'data' has values outside the range of {expected_type}")
    return values.astype(target, copy=False).reshape(shape)


def _is_shape(shape: object) -> bool:
    return isinstance(shape, list) and all(
        isinstance(dim, int) and not isinstance(dim, bool) and dim >= 0 for dim in shape
    )


def _fits(values: np.ndarray, target: np.dtype) -> bool:
    limits = np.iinfo(target)
    return bool(values.min() >= limits.min and values.max() <= limits.max)


def _requested_outputs(outputs: object, interface: ModelInterface) -> list[str]:
    known = [spec.name for spec in interface.outputs]
    if outputs is None:
        return known
    if not isinstance(outputs, list) or not all(
        isinstance(item, dict) and isinstance(item.get("name"), str) for item in outputs
    ):
        raise RequestError("'outputs' must be a list of objects with a string 'name'")
    names = [item["name"] for item in outputs]
    unknown = [name for name in names if name not in known]
    if unknown:
        raise RequestError(f"model has no output {unknown[0]!r}; its outputs are: {', '.join(known)}")
    return list(dict.fromkeys(names))


def _encode_tensor(name: str, array: np.ndarray) -> dict[str, Any]:
    if array.dtype not in _DATATYPE_OF:
        raise TypeError(f"output {name!r} has dtype {array.dtype}, which this runtime cannot send")
    return {
        "name": name,
        "datatype": _DATATYPE_OF[array.dtype],
        "shape": list(array.shape),
        "data": array.ravel().tolist(),
    }
